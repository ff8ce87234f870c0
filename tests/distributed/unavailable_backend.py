"""A test MLLM that becomes unavailable (raises ``BackendUnavailable``) at a chosen image.

``unavailable-at`` answers like ``scripted`` until it receives an image-level request for
``unavailable_on``; then it raises ``BackendUnavailable`` (as a backend whose server went away
would), in whichever actor sees that image. Every image-level request is logged to ``log``
(one ``pid key`` line each), so a test can tell how often the failing image was tried.
"""
from crashing_backend import ImageLoggingMllm

from gbc.annotators.backends.base import BackendUnavailable
from gbc.annotators.backends.registry import register_mllm

MESSAGE = "test server 127.0.0.1:9 refused the connection (unavailable-at)"


@register_mllm
class UnavailableAtMllm(ImageLoggingMllm):
    name = "unavailable-at"

    class Options(ImageLoggingMllm.Options):
        unavailable_on: str = ""

    def on_image_request(self, request) -> None:
        if request.image_key == self.options.unavailable_on:
            raise BackendUnavailable(MESSAGE)
