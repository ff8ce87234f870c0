"""Failures are data: every image ends done or failed with a reason, and the run goes on."""

import threading
import time

from PIL import Image

from engine_fakes import MemoryStore, TableDetector, TableMllm

from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import ImageSource, discover_images
from gbc.annotators.scheduler import BackendWorker, RetryPolicy, Task
from test_engine import SCENE_BOXES, make_images, scene_answers

FAST_RETRY = {"mllm.backoff_s": 0.001, "detector.backoff_s": 0.001, "mllm.retries": 2, "detector.retries": 2}


def run(images, mllm, det, **overrides):
    store = MemoryStore()
    config = AnnotateConfig().with_overrides({**FAST_RETRY, **overrides})
    summary = RecursiveAnnotator(config, mllm, det).run(images, store)
    return summary, store


def test_failing_image_fails_alone_after_retries(tmp_path):
    images = make_images(tmp_path / "imgs", 5)
    bad = images[2].key
    mllm = create_mllm("scripted", {"fail_on": [bad], "max_batch_size": 1})
    summary, store = run(images, mllm, create_detector("scripted"))
    assert (summary.done, summary.failed) == (4, 1)
    record = store.records[bad]
    assert record.status == "failed" and record.attempts == 3
    assert "mllm call failed after 3 attempt(s)" in record.reason and "ScriptedFailure" in record.reason
    assert summary.backends["mllm"]["retries"] == 2 and summary.failures == {"ScriptedFailure": 1}


def test_transient_failure_is_retried_and_succeeds(tmp_path):
    images = make_images(tmp_path / "imgs", 3)
    mllm = create_mllm("scripted", {"fail_on": [images[0].key], "fail_times": 1})
    summary, store = run(images, mllm, create_detector("scripted"))
    assert summary.done == 3 and summary.failed == 0
    assert summary.backends["mllm"]["retries"] >= 1


def test_detector_failure_fails_its_images(tmp_path):
    images = make_images(tmp_path / "imgs", 4)
    det = create_detector("scripted", {"fail_on": [images[1].key], "max_batch_size": 1})
    summary, store = run(images, create_mllm("scripted"), det)
    assert store.records[images[1].key].status == "failed"
    assert store.records[images[1].key].reason.startswith("detector call failed")
    assert summary.done == 3


def test_call_timeout_then_failure(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(path)
    mllm = TableMllm(scene_answers, delay_s=0.5)
    summary, store = run([ImageSource("a.png", str(path))], mllm, TableDetector(SCENE_BOXES),
                         **{"mllm.timeout_s": 0.05, "mllm.retries": 1})
    record = store.records["a.png"]
    assert record.status == "failed" and "CallTimeout" in record.reason and record.attempts == 2
    assert len(mllm.calls) == 2


def test_wrong_number_of_results_is_an_error(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(path)

    class Short(TableMllm):
        def generate(self, requests):
            return []

    summary, store = run([ImageSource("a.png", str(path))], Short(scene_answers), TableDetector({}))
    assert "returned 0 results for 1 requests" in store.records["a.png"].reason


def test_garbage_answers(tmp_path):
    images = make_images(tmp_path / "imgs", 2)

    def answer(request):
        if request.kind == "image":
            return "I cannot help with that." if request.image_key == images[0].key else scene_answers(request)
        return "%%% garbage ###"

    summary, store = run(images, TableMllm(answer), TableDetector(SCENE_BOXES),
                         **{"detection.from_image.min_rel_area": None})
    # an image answer with nothing usable fails the image with a clear reason
    assert store.records[images[0].key].status == "failed"
    assert "image query gave no usable caption" in store.records[images[0].key].reason
    # garbage entity/composition/relation answers only make the graph smaller
    g = store.graphs[images[1].key]
    assert g.validate() == [] and [v.vertex_id for v in g.vertices] == [""]


def test_unreadable_files_fail_with_reason(tmp_path):
    folder = tmp_path / "mixed"
    make_images(folder, 2)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    Image.new("RGB", (400, 400)).save(folder / "huge.png")
    config_overrides = {"limits.max_image_pixels": 100_000}
    summary, store = run(discover_images([folder]), create_mllm("scripted"), create_detector("scripted"),
                         **config_overrides)
    assert summary.images == 5 and summary.done == 2 and summary.failed == 3
    assert store.records["empty.png"].error_type == "EmptyFile"
    assert store.records["text.jpg"].error_type == "NotAnImage"
    assert store.records["huge.png"].error_type == "ImageTooLarge"
    assert "limits.max_image_pixels" in store.records["huge.png"].reason


def test_engine_bug_on_one_image_is_recorded(tmp_path):
    images = make_images(tmp_path / "imgs", 3)

    def answer(request):
        if request.kind == "image" and request.image_key == images[1].key:
            return 42  # not text
        return scene_answers(request)

    summary, store = run(images, TableMllm(answer), TableDetector(SCENE_BOXES))
    assert store.records[images[1].key].status == "failed"
    assert "instead of text" in store.records[images[1].key].reason
    assert summary.done == 2


def test_window_bounds_images_in_flight(tmp_path):
    images = make_images(tmp_path / "imgs", 10)
    seen = []
    lock = threading.Lock()

    def answer(request):
        with lock:
            seen.append(request.image_key)
        return scene_answers(request)

    mllm = TableMllm(answer, max_batch_size=32)
    det = TableDetector(SCENE_BOXES, max_batch_size=32)
    annotator = RecursiveAnnotator(AnnotateConfig().with_overrides({"limits.images_in_flight": 2}), mllm, det)
    store = MemoryStore()
    summary = annotator.run(images, store)
    assert summary.done == 10
    # no batch ever held requests of more than two images
    assert max(len({r.image_key for r in call}) for call in mllm.calls) <= 2


def test_worker_retry_policy_and_backoff():
    import queue

    sleeps = []
    attempts = []

    def flaky(requests):
        attempts.append(len(requests))
        if len(attempts) < 3:
            raise ConnectionError("down")
        return [r * 2 for r in requests]

    events = queue.Queue()
    worker = BackendWorker("mllm", flaky, 4, RetryPolicy(timeout_s=5, retries=3, backoff_s=0.5, backoff_factor=3),
                           events, sleep=sleeps.append)
    worker.start()

    class Job:
        finished = False

    for i in range(3):
        worker.submit(Task(job=Job(), kind="image", vertex_id="", build=lambda i=i: i))
    outcome = events.get(timeout=5)
    worker.stop()
    assert outcome.results == [0, 2, 4] and outcome.error is None and outcome.attempts == 3
    assert sleeps == [0.5, 1.5]
    assert worker.stats.retries == 2 and worker.stats.calls == 1 and worker.stats.requests == 3


def test_oldest_image_first():
    import queue

    events = queue.Queue()
    gate = threading.Event()
    order = []

    def call(requests):
        gate.wait(5)
        order.extend(requests)
        return list(requests)

    worker = BackendWorker("mllm", call, 2, RetryPolicy(), events)

    class Job:
        finished = False

    for prio, name in [(5, "e"), (1, "a"), (3, "c"), (1, "b")]:
        worker.submit(Task(job=Job(), kind="entity", vertex_id=name, build=lambda n=name: n, priority=prio))
    worker.start()
    gate.set()
    events.get(timeout=5)
    events.get(timeout=5)
    worker.stop()
    assert order == ["a", "b", "c", "e"]
    time.sleep(0.01)


def test_failed_batch_is_split_to_isolate_the_bad_request():
    import queue

    calls = []

    def call(requests):
        calls.append(list(requests))
        if "bad" in requests:
            raise ValueError("cannot read request")
        return [r.upper() for r in requests]

    events = queue.Queue()
    worker = BackendWorker("mllm", call, 8, RetryPolicy(timeout_s=5, retries=1, backoff_s=0), events, sleep=lambda s: None)

    class Job:
        finished = False

    for r in ["a", "b", "bad", "c", "d"]:
        worker.submit(Task(job=Job(), kind="entity", vertex_id=r, build=lambda r=r: r))
    worker.start()
    outcome = events.get(timeout=5)
    worker.stop()
    assert outcome.error is None
    assert set(outcome.errors) == {2} and isinstance(outcome.errors[2], ValueError)
    assert [r for i, r in enumerate(outcome.results) if i != 2] == ["A", "B", "C", "D"]
    # 2 attempts of the full batch, then halves and quarters: never more than 2n calls
    assert len(calls) <= 2 + 2 * 5 and calls[-1] in (["bad"], ["c", "d"], ["d"])


def test_assembly_error_fails_only_that_image(tmp_path, monkeypatch):
    import gbc.annotators.assembly as assembly

    images = make_images(tmp_path / "imgs", 3)
    real = assembly.build_graph

    def flaky_build(job, threshold=0.85):
        if job.key == images[0].key:
            raise KeyError("simulated assembly bug")
        return real(job, threshold)

    monkeypatch.setattr(assembly, "build_graph", flaky_build)
    summary, store = run(images, create_mllm("scripted"), create_detector("scripted"))
    assert (summary.done, summary.failed) == (2, 1)
    assert store.records[images[0].key].reason == "KeyError: 'simulated assembly bug'"
    assert store.provenance[images[0].key]["answers"]  # raw answers kept for a later re-parse


def test_error_in_the_image_list_is_raised(tmp_path):
    import pytest

    images = make_images(tmp_path / "imgs", 2)

    def listing():
        yield images[0]
        raise OSError("listing broke")

    store = MemoryStore()
    with pytest.raises(OSError, match="listing broke"):
        RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(listing(), store)


def test_nothing_is_retained_after_commit(tmp_path):
    import gc
    import weakref

    from gbc.annotators.job import ImageJob

    images = make_images(tmp_path / "imgs", 6)
    alive = []
    original_init = ImageJob.__init__

    def tracking_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        alive.append(weakref.ref(self))

    ImageJob.__init__ = tracking_init
    try:
        store = MemoryStore()
        config = AnnotateConfig().with_overrides({"limits.images_in_flight": 2})
        annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
        summary = annotator.run(images, store)
    finally:
        ImageJob.__init__ = original_init
    assert summary.done == 6 and len(alive) == 6
    gc.collect()
    assert [ref() for ref in alive if ref() is not None] == []
