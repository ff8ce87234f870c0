"""Finished images are committed in groups while answers keep coming, at once otherwise."""

import threading

import gbc
from engine_fakes import MemoryStore, TableDetector, TableMllm

from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from test_engine import SCENE_BOXES, make_images, scene_answers


class GroupStore(MemoryStore):
    """Records each commit call: one image (commit_image) or several (commit_images)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def commit_image(self, key, graph, provenance=None, attempts=1):
        self.calls.append(1)
        super().commit_image(key, graph, provenance, attempts)

    def commit_images(self, items):
        items = list(items)
        self.calls.append(len(items))
        for key, graph, provenance in items:
            MemoryStore.commit_image(self, key, graph, provenance)


def test_fast_backends_commit_finished_images_in_groups(tmp_path):
    images = make_images(tmp_path / "imgs", 24, size=(64, 48))
    store = GroupStore()
    config = AnnotateConfig().with_overrides({"limits.images_in_flight": 24})
    summary = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted")).run(images, store)
    assert summary.done == 24 and sum(store.calls) == 24 and set(store.graphs) == {s.key for s in images}
    assert len(store.calls) < 24 and max(store.calls) <= RecursiveAnnotator.COMMIT_BATCH
    assert summary.vertices == sum(g.n_vertices for g in store.graphs.values())


def test_an_image_is_committed_at_once_when_nothing_else_is_waiting(tmp_path):
    images = make_images(tmp_path / "imgs", 3)
    store = GroupStore()
    committed_before_next_answer = []
    lock = threading.Lock()

    def answer(request):
        # each image's first query comes after the previous image was committed
        with lock:
            if request.kind == "image":
                committed_before_next_answer.append(len(store.graphs))
        return scene_answers(request)

    config = AnnotateConfig().with_overrides({"limits.images_in_flight": 1})
    summary = RecursiveAnnotator(config, TableMllm(answer), TableDetector(SCENE_BOXES)).run(images, store)
    assert summary.done == 3 and committed_before_next_answer == [0, 1, 2]


def test_real_store_gets_every_group(tmp_path):
    images = make_images(tmp_path / "imgs", 12, size=(64, 48))
    path = str(tmp_path / "out.lmdb")
    with gbc.open_store(path, readonly=False) as store:
        summary = RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(images, store)
    with gbc.open_store(path) as store:
        assert summary.done == 12 == store.count("done") == len(store)
        assert all(store.get_provenance(s.key)["answers"] for s in images)
