"""A test MLLM that becomes unavailable (raises ``BackendUnavailable``) at a chosen image.

``unavailable-at`` answers like ``scripted`` until it receives an image-level request for
``unavailable_on``; then it raises ``BackendUnavailable`` (as a backend whose server went away
would), in whichever actor sees that image. Every image-level request is logged to ``log``
(one ``pid key`` line each), so a test can tell how often the failing image was tried.
"""
import os

from gbc.annotators.backends.base import BackendUnavailable
from gbc.annotators.backends.registry import register_mllm
from gbc.annotators.backends.scripted import ScriptedMllm

MESSAGE = "test server 127.0.0.1:9 refused the connection (unavailable-at)"


@register_mllm
class UnavailableAtMllm(ScriptedMllm):
    name = "unavailable-at"

    class Options(ScriptedMllm.Options):
        unavailable_on: str = ""
        log: str = ""

    def generate(self, requests):
        opts = self.options
        for request in requests:
            if request.kind != "image":
                continue
            if opts.log:
                fd = os.open(opts.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"{os.getpid()} {request.image_key}\n".encode())
                finally:
                    os.close(fd)
            if request.image_key == opts.unavailable_on:
                raise BackendUnavailable(MESSAGE)
        return super().generate(requests)
