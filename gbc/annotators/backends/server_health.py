"""Telling a server that is down from a request that fails on its own.

An HTTP backend sees transport failures (connection refused or reset, a broken response, a
timeout) for two different reasons: the server cannot serve anyone (stopped, hung, crashed into
a loop that accepts and resets connections), or one request hits a problem of its own (a
payload that crashes a worker, a keep-alive connection closed at the wrong moment). The first
must stop the run with nothing marked failed; the second must fail only that request's image.

``ServerHealth`` is shared by all requests of one backend. The server counts as down when
transport failures have gone on for ``down_after_s`` (or one request has used up its retries)
with no answer to any request in between, and a cheap probe of the server fails as well. A
probe that gets an answer shows the failures are the request's own. Once down, every request
of the backend stops at once: the ones waiting to retry are woken, new ones are refused.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from gbc.annotators.backends.base import BackendUnavailable


class ServerHealth:
    """Shared judgement of whether the server answers, from the outcomes of all requests.

    ``probe()`` must return ``None`` when the server answered it (any HTTP status) and a short
    description of the failure otherwise; it should be cheap and bounded by short timeouts.
    """

    def __init__(self, server: str, probe: Callable[[], Optional[str]], down_after_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.server = server
        self._probe = probe
        self.down_after_s = down_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._down = threading.Event()
        self._reason = ""
        self._streak_since: Optional[float] = None  # start of the first failed try since the last answer
        self._streak_failures = 0
        self._cleared_at: Optional[float] = None  # when a probe last got an answer during this streak
        self.transport_failures = 0  # all runs of the backend, for the run summary
        self.probes = 0

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def check(self) -> None:
        """Raise ``BackendUnavailable`` if the server has been judged down."""
        if self._down.is_set():
            raise BackendUnavailable(self._reason)

    def answered(self) -> None:
        """A request got an answer from the server: the transport works."""
        with self._lock:
            self._streak_since = None
            self._streak_failures = 0
            self._cleared_at = None

    def failed(self, started: float, error: str, retries_left: bool) -> None:
        """Record a transport failure of a try begun at ``started`` (``clock()`` time).

        Raises ``BackendUnavailable`` when the server is judged down; returns when the request
        may retry (``retries_left``) or should fail on its own.
        """
        self.check()
        with self._lock:
            self.transport_failures += 1
            self._streak_failures += 1
            if self._streak_since is None or started < self._streak_since:
                self._streak_since = started
            now = self._clock()
            long_enough = now - self._streak_since >= self.down_after_s
            recently_cleared = self._cleared_at is not None and now - self._cleared_at < self.down_after_s
        if recently_cleared or (retries_left and not long_enough):
            return
        with self._probe_lock:  # one probe at a time; the others wait for its verdict
            self.check()
            with self._lock:
                if self._streak_since is None:  # an answer arrived meanwhile
                    return
                if self._cleared_at is not None and self._clock() - self._cleared_at < self.down_after_s:
                    return
                failures, since = self._streak_failures, self._streak_since
            self.probes += 1
            problem = self._probe()
            if problem is None:
                with self._lock:
                    self._cleared_at = self._clock()
                return
            self._reason = (
                f"{self.server} is not answering: {failures} tr{'y' if failures == 1 else 'ies'} failed over "
                f"{self._clock() - since:.1f} s with no answer in between (last: {error}), and a check of the "
                f"server failed too ({problem}); is it running and reachable?"
            )
            self._down.set()
        raise BackendUnavailable(self._reason)

    def wait(self, seconds: float) -> None:
        """Sleep before a retry; wakes at once (raising ``BackendUnavailable``) if the server is judged down."""
        if self._down.wait(seconds):
            self.check()
