"""A reusable daemon helper thread, for work that runs beside the caller's own.

The annotation scheduler runs backend calls on one (so that a call can time out) and prepares
the next batch on another while the backend works; the caption scorer prepares its next batch
the same way. ``concurrent.futures`` pools would do the work, but their threads are joined at
interpreter exit, so a backend call that hangs would keep the process alive; these threads are
daemons, and a helper whose call timed out is closed: it finishes that call and exits.

>>> helper = HelperThread("example")
>>> helper.submit(lambda: 6 * 7).result()
42
>>> helper.close()
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

__all__ = ["HelperThread", "Pending"]


class Pending:
    """The result of a function handed to a :class:`HelperThread`, once it has run."""

    __slots__ = ("_box", "_done")

    def __init__(self) -> None:
        self._box: dict = {}
        self._done = threading.Event()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the function has returned or raised; False when ``timeout`` passed first."""
        return self._done.wait(timeout)

    def result(self) -> Any:
        """The function's return value (waiting for it); its exception is raised here."""
        self._done.wait()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


class HelperThread:
    """One long-lived daemon thread that runs the functions handed to it, one at a time.

    Starting a thread per call costs more CPU than a zero-latency backend call itself, so a
    helper is reused until it is closed or abandoned.
    """

    def __init__(self, name: str):
        self._inbox: "queue.SimpleQueue" = queue.SimpleQueue()
        self.abandoned = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            fn, pending = item
            try:
                pending._box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed over to whoever waits for it
                pending._box["error"] = exc
            finally:
                pending._done.set()
            # Drop this thread's references to the call (its inputs and results) before waiting
            # for the next one: an idle helper must not keep finished work alive.
            item = fn = pending = None
            if self.abandoned:
                return

    def submit(self, fn: Callable[[], Any]) -> Pending:
        """Queue ``fn``; the returned :class:`Pending` gives its result."""
        pending = Pending()
        self._inbox.put((fn, pending))
        return pending

    def close(self) -> None:
        """Let the thread exit once the function now running (if any) returns; its late result
        is still handed to its :class:`Pending`. It is a daemon: nothing waits for it."""
        self.abandoned = True
        self._inbox.put(None)
