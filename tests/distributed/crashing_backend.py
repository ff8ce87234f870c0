"""A test MLLM that kills its own process once, at a chosen image (to test worker restarts).

``crash-once`` answers like ``scripted`` and logs the key of every image-level request to
``log`` (one line each, appended atomically). The first time it sees ``crash_on`` it creates
``marker`` and ends the process at once with ``os._exit`` (no cleanup, as a kill would);
later runs find the marker and carry on. Without ``marker`` it crashes every time (a
"poisonous" image).
"""
import os

from gbc.annotators.backends.registry import register_mllm
from gbc.annotators.backends.scripted import ScriptedMllm


class ImageLoggingMllm(ScriptedMllm):
    """Scripted answers; every image-level request is logged to ``log`` as a ``pid key`` line
    and handed to ``on_image_request`` first (the hook of the test backends)."""

    class Options(ScriptedMllm.Options):
        log: str = ""

    def on_image_request(self, request) -> None:
        pass

    def generate(self, requests):
        for request in requests:
            if request.kind != "image":
                continue
            if self.options.log:
                fd = os.open(self.options.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"{os.getpid()} {request.image_key}\n".encode())
                finally:
                    os.close(fd)
            self.on_image_request(request)
        return super().generate(requests)


@register_mllm
class CrashOnceMllm(ImageLoggingMllm):
    name = "crash-once"

    class Options(ImageLoggingMllm.Options):
        crash_on: str = ""
        marker: str = ""

    def on_image_request(self, request) -> None:
        opts = self.options
        if not opts.crash_on or request.image_key != opts.crash_on:
            return
        if opts.marker:
            try:
                fd = os.open(opts.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
        os._exit(17)
