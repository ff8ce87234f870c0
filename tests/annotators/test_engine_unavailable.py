"""A backend that cannot serve any request stops the run instead of failing every image."""

import threading
import time

import pytest

import gbc
from engine_fakes import MemoryStore
from gbc.annotators.backends.base import BackendOptions, BackendUnavailable
from gbc.annotators.backends.registry import create_detector, create_mllm, register_detector, register_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.scheduler import BackendWorker
from test_engine import make_images

# generous retries and backoff: a BackendUnavailable must skip them all, so a run that
# waited for them would take seconds and fail the time bounds below
SLOW_RETRY = {"mllm.retries": 3, "mllm.backoff_s": 2.0, "detector.retries": 3, "detector.backoff_s": 2.0}

#: the switches of the ``gated`` backends, by name (a spec argument names its switch)
GATES = {}


class _Gate:
    """``down`` set: every call raises ``BackendUnavailable``; ``calls`` counts the calls."""

    def __init__(self, down=False):
        self.down = threading.Event()
        if down:
            self.down.set()
        self.calls = 0


class _GatedOptions(BackendOptions):
    max_batch_size: int = 4


@register_mllm
class GatedMllm:
    """The scripted MLLM behind a switch (``gated:<gate name>``), for these tests only."""

    name = "gated-test"
    Options = _GatedOptions

    def __init__(self, argument, options):
        self.gate = GATES[argument]
        self.max_batch_size = options.max_batch_size
        self._inner = create_mllm("scripted", {"max_batch_size": options.max_batch_size})

    def generate(self, requests):
        self.gate.calls += 1
        if self.gate.down.is_set():
            raise BackendUnavailable("model 'gated' cannot be loaded: switched off")
        return self._inner.generate(requests)

    def close(self):
        pass


@register_detector
class GatedDetector:
    """The scripted detector behind a switch, for these tests only."""

    name = "gated-test"
    Options = _GatedOptions

    def __init__(self, argument, options):
        self.gate = GATES[argument]
        self.max_batch_size = options.max_batch_size
        self._inner = create_detector("scripted", {"max_batch_size": options.max_batch_size})

    def detect(self, requests):
        self.gate.calls += 1
        if self.gate.down.is_set():
            raise BackendUnavailable("detector 'gated' cannot be loaded: switched off")
        return self._inner.detect(requests)

    def close(self):
        pass


@pytest.fixture
def gates():
    yield GATES
    GATES.clear()


def engine_threads():
    return [t for t in threading.enumerate() if t.name.startswith("gbc-") and t.is_alive()]


def assert_no_engine_threads_left():
    deadline = time.monotonic() + 5
    while engine_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine_threads() == []


def annotator(mllm_gate="m", det_gate="d", **overrides):
    config = AnnotateConfig().with_overrides({**SLOW_RETRY, **overrides})
    return RecursiveAnnotator(config, create_mllm(f"gated-test:{mllm_gate}"), create_detector(f"gated-test:{det_gate}"))


@pytest.mark.parametrize("which", ["mllm", "detector"])
def test_unavailable_backend_stops_the_run_at_once(tmp_path, gates, which):
    images = make_images(tmp_path / "imgs", 6)
    gates["m"], gates["d"] = _Gate(down=which == "mllm"), _Gate(down=which == "detector")
    store = MemoryStore()
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="switched off") as info:
        annotator(**{"limits.images_in_flight": 3}).run(images, store)
    assert time.monotonic() - start < 3  # no retry, no backoff, no split batches
    assert store.records == {} and store.graphs == {}  # nothing marked failed (nor done)
    assert gates["m" if which == "mllm" else "d"].calls == 1  # one call: not retried, not bisected
    summary = info.value.run_summary
    assert (summary.done, summary.failed) == (0, 0) and summary.backends[which]["failed_calls"] == 1
    assert_no_engine_threads_left()


def test_worker_does_not_retry_or_split_an_unavailable_backend():
    import queue

    events = queue.Queue()
    seen = []

    def call(requests):
        seen.append(len(requests))
        raise BackendUnavailable("gone")

    from gbc.annotators.scheduler import RetryPolicy, Task

    worker = BackendWorker("t", call, batch_size=4, policy=RetryPolicy(retries=5, backoff_s=10.0), events=events)
    worker.submit_many([Task(job=None, kind="image", vertex_id=str(i), build=lambda: object()) for i in range(8)])
    worker.start()
    outcome = events.get(timeout=5)
    assert isinstance(outcome.error, BackendUnavailable) and outcome.attempts == 1 and len(outcome.tasks) == 4
    worker.stop()
    assert seen == [4]  # one call for the whole batch, then the worker takes no more tasks
    assert events.empty() and worker.stats.retries == 0 and worker.stats.failed_calls == 1


def test_committed_images_stay_and_a_rerun_finishes_the_rest(tmp_path, gates):
    images = make_images(tmp_path / "imgs", 10)
    gates["m"], gates["d"] = _Gate(), _Gate()
    path = str(tmp_path / "out.lmdb")

    def switch_off_after_two(summary, engine):
        if summary.done >= 2:
            gates["m"].down.set()

    with gbc.open_store(path, readonly=False) as store:
        with pytest.raises(BackendUnavailable):
            annotator(**{"limits.images_in_flight": 2}).run(images, store, on_progress=switch_off_after_two)
        done = set(store.keys(status="done"))
        assert len(done) >= 2 and store.count("failed") == 0
        assert len(done) < len(images)
        assert all(store.status(s.key) is None for s in images if s.key not in done)  # no status: resumable
    assert_no_engine_threads_left()

    # the model is back: a rerun does the images without a status and leaves the others alone
    gates["m"].down.clear()
    with gbc.open_store(path, readonly=False) as store:
        before = {key: store.get(key).to_json() for key in done}
        todo = [s for s in images if s.key not in done]
        summary = annotator().run(todo, store)
        assert (summary.done, summary.failed) == (len(todo), 0)
        assert store.count("done") == len(images) and store.count("failed") == 0
        assert {key: store.get(key).to_json() for key in done} == before


def test_unreachable_openai_server_stops_the_run(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    images = make_images(tmp_path / "imgs", 3)
    mllm = create_mllm(f"openai:http://127.0.0.1:{port}/v1#m", {"max_retries": 1, "backoff_s": 0.01})
    config = AnnotateConfig().with_overrides(SLOW_RETRY)
    store = MemoryStore()
    start = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match=rf"127.0.0.1:{port}.*reachable"):
            RecursiveAnnotator(config, mllm, create_detector("scripted")).run(images, store)
    finally:
        mllm.close()
    assert time.monotonic() - start < 3
    assert store.records == {}
    assert_no_engine_threads_left()
