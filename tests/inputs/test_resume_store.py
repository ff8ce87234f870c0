"""Resuming from a real LMDB store: batched status lookups, duplicates told from resumed images."""

from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.inputs import ImageSource, StoreResume
from gbc.schemas.synthetic import synthetic_graph
from gbc.store.lmdb_store import GraphStore
from input_helpers import png_bytes


def test_status_origins_and_store_resume(tmp_path):
    with GraphStore(str(tmp_path / "s.lmdb"), readonly=False) as store:
        store.commit_image("a", synthetic_graph(0), origin="x.tar:0")
        store.mark_failed("b", "HTTP 404", error_type="HTTP404", origin="l.csv:3")
        store.commit_image("c", synthetic_graph(1))  # from a folder: no origin
        assert store.status_origins(["a", "b", "c", "d"]) == [("done", "x.tar:0"), ("failed", "l.csv:3"),
                                                               ("done", None), None]
        assert store.status("a").origin == "x.tar:0"
        resume = StoreResume(store)
        said = resume.many(["a", "a", "b", "c", "d"], ["x.tar:0", "y.tar:5", "l.csv:3", "z.tar:1", "z.tar:2"])
        assert said[0] == "finished" and said[2] == "finished" and said[3] == "finished" and said[4] is None
        assert said[1].startswith("duplicate key 'a': at y.tar:5, already taken from x.tar:0")
        retry = StoreResume(store, retry_failed=True)
        assert retry.many(["a", "b", "d"], ["x.tar:0", "l.csv:3", "z.tar:2"]) == ["finished", None, "not failed before"]


def test_engine_keeps_the_first_of_two_images_with_one_key(tmp_path):
    config = AnnotateConfig().with_overrides({"limits.max_depth": 0})
    annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
    with GraphStore(str(tmp_path / "s.lmdb"), readonly=False) as store:
        # "k" was committed from a.tar after the inputs had let b.tar's "k" through
        store.commit_image("k", synthetic_graph(0), origin="a.tar:0")
        summary = annotator.run([ImageSource("k", "b.tar#k.png", png_bytes(1), origin="b.tar:4"),
                                 ImageSource("k", "c.tar#k.png", png_bytes(2), origin="c.tar:0"),
                                 ImageSource("m", "b.tar#m.png", png_bytes(3), origin="b.tar:5",
                                             url="http://h/m.png", caption="alt text")], store)
        assert summary.duplicates == 2 and summary.done == 1
        assert store.status("k").origin == "a.tar:0" and store["k"].to_dict() == synthetic_graph(0).to_dict()
        assert store.status("m").origin == "b.tar:5"
        assert store["m"].img_url == "http://h/m.png" and store["m"].original_caption == "alt text"
