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


@register_mllm
class CrashOnceMllm(ScriptedMllm):
    name = "crash-once"

    class Options(ScriptedMllm.Options):
        crash_on: str = ""
        marker: str = ""
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
            if opts.crash_on and request.image_key == opts.crash_on:
                if opts.marker:
                    try:
                        fd = os.open(opts.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        continue
                    os.close(fd)
                os._exit(17)
        return super().generate(requests)
