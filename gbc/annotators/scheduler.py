"""Batching of model requests across images, one worker thread per backend.

Each backend gets a ``BackendWorker``: a thread with a priority queue of pending tasks. When
the backend is free the worker takes up to ``batch_size`` tasks from *any* image (oldest image
first, so images finish and leave the window), builds their requests (crops are cut here, in
the worker, only when the batch is formed), calls the backend with retries, exponential
backoff and a per-call timeout, and posts the outcome to the engine's event queue. MLLM and
detector calls therefore overlap with each other and with the engine's own CPU work.

A ``BackendUnavailable`` (the backend cannot serve any request) is neither retried nor split:
the worker posts it and stops taking tasks, and the engine ends the run with it.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence

from gbc._threads import HelperThread, Pending
from gbc.errors import GbcError
from gbc.annotators.backends.base import BackendUnavailable


class CallTimeout(GbcError, TimeoutError):
    """A backend call took longer than its ``timeout_s``."""


@dataclass
class RetryPolicy:
    timeout_s: float = 600.0
    retries: int = 2
    backoff_s: float = 1.0
    backoff_factor: float = 2.0

    def delays(self) -> List[float]:
        """Sleep before each retry (exponential)."""
        return [self.backoff_s * self.backoff_factor**i for i in range(self.retries)]


@dataclass(eq=False)
class Task:
    """One request to build and send. ``build()`` returns the backend request (done in the worker)."""

    job: Any
    kind: str
    vertex_id: str
    build: Callable[[], Any]
    priority: int = 0
    payload: Any = None


@dataclass
class BatchOutcome:
    """Posted by a worker: ``results[i]`` answers ``tasks[i]``; ``error`` is set when the call failed for good."""

    worker: str
    tasks: List[Task]
    results: Optional[List[Any]] = None
    error: Optional[BaseException] = None
    errors: dict = field(default_factory=dict)  # request index -> exception (after splitting a failed batch)
    attempts: int = 1
    build_errors: List[tuple] = field(default_factory=list)  # (task, exception)


@dataclass
class CallStats:
    calls: int = 0
    requests: int = 0
    retries: int = 0
    failed_calls: int = 0
    busy_s: float = 0.0
    batch_size: int = 1

    @property
    def mean_fill(self) -> float:
        """Mean share of the batch size used per call."""
        return self.requests / (self.calls * self.batch_size) if self.calls else 0.0

    def to_dict(self) -> dict:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "retries": self.retries,
            "failed_calls": self.failed_calls,
            "busy_s": round(self.busy_s, 3),
            "batch_size": self.batch_size,
            "mean_batch_fill": round(self.mean_fill, 4),
        }


class _Helpers:
    """The helper threads of one worker thread: one for backend calls, one for preparing batches."""

    def __init__(self, label: str):
        self._label = label
        self._call: Optional[HelperThread] = None
        self._prepare: Optional[HelperThread] = None

    def call(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """``fn()`` on a reused thread, waiting at most ``timeout_s``. A call that times out is
        abandoned (Python cannot stop a thread): its helper exits after it, its late result is
        dropped, and the next call gets a new helper."""
        if self._call is None:
            self._call = HelperThread(f"gbc-{self._label}-call")
        pending = self._call.submit(fn)
        if not pending.wait(timeout_s):
            self._call.close()
            self._call = None
            raise CallTimeout(f"backend call did not finish within {timeout_s:g} s")
        return pending.result()

    def prepare(self, fn: Callable[[], Any]) -> Pending:
        if self._prepare is None:
            self._prepare = HelperThread(f"gbc-{self._label}-prepare")
        return self._prepare.submit(fn)

    def close(self) -> None:
        for helper in (self._call, self._prepare):
            if helper is not None:
                helper.close()
        self._call = self._prepare = None


class BackendWorker:
    """Forms batches from pending tasks and calls ``call(requests) -> results`` for each.

    ``concurrency`` threads share the queue, so that many calls can be in flight at once
    (for servers that batch continuously); with the default 1, calls never overlap.
    """

    def __init__(
        self,
        name: str,
        call: Callable[[Sequence[Any]], List[Any]],
        batch_size: int,
        policy: RetryPolicy,
        events: "queue.Queue",
        sleep: Callable[[float], None] = time.sleep,
        concurrency: int = 1,
    ):
        self.label = name
        self._threads = [threading.Thread(target=self.run, name=f"gbc-{name}-{i}", daemon=True)
                         for i in range(max(1, int(concurrency)))]
        self._stats_lock = threading.Lock()
        self._call = call
        self.batch_size = max(1, int(batch_size))
        self.policy = policy
        self._events = events
        self._sleep = sleep
        self._heap: list = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._local = threading.local()  # each worker thread's helper threads
        self.stats = CallStats(batch_size=self.batch_size)

    # ------------------------------------------------------------------ engine side
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
        with self._cond:
            heapq.heappush(self._heap, (task.priority, next(self._counter), task))
            self._cond.notify()

    def submit_many(self, tasks: Sequence[Task]) -> None:
        """Queue several tasks at once: one lock round and one wake-up, so the worker does
        not wake for the first task and send a partial batch while the rest are queued."""
        if not tasks:
            return
        with self._cond:
            for task in tasks:
                heapq.heappush(self._heap, (task.priority, next(self._counter), task))
            self._cond.notify(len(tasks))

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    #: How long ``stop`` waits for the worker threads to finish their current batch. A call
    #: hung in a backend is bounded by its own timeout; the run does not wait for it here.
    STOP_JOIN_S = 10.0

    def stop(self) -> None:
        """Stop taking tasks and wait (bounded) for the worker threads to return, so that
        nothing of the run (batches, images) stays referenced after it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(self.STOP_JOIN_S)

    # ------------------------------------------------------------------ worker side
    def _take(self) -> Optional[List[Task]]:
        with self._cond:
            while True:
                while not self._heap and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                batch = []
                while self._heap and len(batch) < self.batch_size:
                    task = heapq.heappop(self._heap)[2]
                    if getattr(task.job, "finished", False):
                        continue  # its image already failed: nothing to do
                    batch.append(task)
                if batch:
                    return batch

    def _take_full(self) -> Optional[List[Task]]:
        """A full batch if one is already waiting (never blocks, never takes a partial batch)."""
        with self._cond:
            if self._stopping or len(self._heap) < self.batch_size:
                return None
            batch = []
            while self._heap and len(batch) < self.batch_size:
                task = heapq.heappop(self._heap)[2]
                if not getattr(task.job, "finished", False):
                    batch.append(task)
            return batch or None

    def _prepare(self, batch: List[Task]) -> tuple:
        outcome = BatchOutcome(worker=self.label, tasks=[])
        requests = []
        for task in batch:
            try:
                requests.append(task.build())
                outcome.tasks.append(task)
            except Exception as exc:  # a crop that cannot be made fails only its image
                outcome.build_errors.append((task, exc))
        return outcome, requests

    def run(self) -> None:
        helpers = _Helpers(threading.current_thread().name.replace("gbc-", "", 1))
        self._local.helpers = helpers
        try:
            self._serve(helpers)
        finally:
            helpers.close()

    def _serve(self, helpers: "_Helpers") -> None:
        ahead: Optional[Pending] = None
        while True:
            if ahead is not None:
                outcome, requests = ahead.result()
                ahead = None
            else:
                batch = self._take()
                if batch is None:
                    return
                outcome, requests = self._prepare(batch)
            # While the backend works on this batch, cut the crops of the next one when a
            # full batch is already waiting: the backend then never waits for the CPU.
            full = self._take_full()
            if full is not None:
                ahead = helpers.prepare(lambda batch=full: self._prepare(batch))
            if requests:
                self._run_batch(requests, outcome)
            self._events.put(outcome)
            if isinstance(outcome.error, BackendUnavailable):
                # every further call would fail the same way: take no more tasks (the engine
                # stops the run when it sees this outcome)
                with self._cond:
                    self._stopping = True
                    self._cond.notify_all()
                return

    def _run_batch(self, requests: List[Any], outcome: BatchOutcome) -> None:
        results, error, attempts = self._call_retrying(requests)
        outcome.attempts = attempts
        if error is None:
            outcome.results = results
            return
        if len(requests) > 1 and not isinstance(error, (CallTimeout, BackendUnavailable)):
            # One bad request must not sink a whole batch of images: split the batch and try
            # each half once, down to single requests; only those that still fail carry the error.
            try:
                outcome.results, outcome.errors = self._bisect(requests, error)
                return
            except BackendUnavailable as exc:  # the backend went away while splitting
                error = exc
        outcome.error = error

    def _call_once(self, requests: List[Any]) -> List[Any]:
        start = time.perf_counter()
        try:
            # calls are made only by worker threads (``run``), each with its own helpers
            results = self._local.helpers.call(lambda: self._call(requests), self.policy.timeout_s)
            if not isinstance(results, list) or len(results) != len(requests):
                got = len(results) if isinstance(results, list) else type(results).__name__
                raise RuntimeError(f"backend returned {got} results for {len(requests)} requests")
        finally:
            with self._stats_lock:
                self.stats.busy_s += time.perf_counter() - start
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.requests += len(requests)
        return results

    def _call_retrying(self, requests: List[Any]):
        delays = self.policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call_once(requests), None, attempt
            except Exception as exc:
                with self._stats_lock:
                    # retrying cannot bring back a backend that cannot serve any request
                    if attempt > len(delays) or isinstance(exc, BackendUnavailable):
                        self.stats.failed_calls += 1
                        return None, exc, attempt
                    self.stats.retries += 1
                self._sleep(delays[attempt - 1])

    def _bisect(self, requests: List[Any], error: BaseException):
        results: List[Any] = [None] * len(requests)
        errors: dict = {}

        def solve(lo: int, hi: int, known_error: Optional[BaseException]) -> None:
            if known_error is None:
                try:
                    results[lo:hi] = self._call_once(requests[lo:hi])
                    return
                except BackendUnavailable:
                    with self._stats_lock:
                        self.stats.failed_calls += 1
                    raise
                except Exception as exc:
                    with self._stats_lock:
                        self.stats.failed_calls += 1
                    known_error = exc
            if hi - lo == 1:
                errors[lo] = known_error
                return
            mid = (lo + hi) // 2
            solve(lo, mid, None)
            solve(mid, hi, None)

        solve(0, len(requests), error)
        return results, errors
