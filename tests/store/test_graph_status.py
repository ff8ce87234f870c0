"""Every graph in a store has a status: graphs imported by ``put``/``put_many``/``gbc convert``
are ``done`` (origin ``imported``), and graphs of stores written before status records
existed read as ``done`` too. ``ls``, ``count``, ``status`` and ``keys(status=...)`` agree,
and ``gbc annotate`` never annotates such a key again."""

import json

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gbc
from gbc.cli.main import cli
from gbc.distributed.merge import MultiStore
from gbc.distributed.ray_runner import finished_keys
from store_helpers import gbc10m_graph


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _graph(i: int, key: str = None):
    graph = gbc10m_graph(i)
    if key is not None:
        graph.img_path = key
    return graph


def _drop_status_records(path) -> None:
    """Make ``path`` look like a store written before graphs got status records."""
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"status", txn=txn), delete=False)
        txn.delete(b"statuses_complete", db=env.open_db(b"meta", txn=txn))  # such stores lack it
    env.close()


def _views(store):
    """What every reader says about the store's images."""
    return {
        "count_done": store.count("done"),
        "count_failed": store.count("failed"),
        "keys_done": list(store.keys(status="done")),
        "keys_failed": list(store.keys(status="failed")),
        "status": {k: store.status(k).status for k in store.keys()},
        "statuses": {k: r.status for k, r in store.statuses()},
        "graphs": len(store),
    }


def _ls(path):
    return [tuple(line.split("\t")[:2]) for line in run_cli("ls", path).stdout.splitlines()]


def test_put_many_and_put_write_done_imported_records(tmp_path):
    path = tmp_path / "s.lmdb"
    with gbc.open_store(path, readonly=False) as store:
        store.put_many((g.image_key, g) for g in map(_graph, range(3)))
        store.put("images/extra.jpg", _graph(9, "images/extra.jpg"))
        store.commit_image("images/annotated.jpg", _graph(5, "images/annotated.jpg"))
        store.mark_failed("images/broken.jpg", "cannot identify image file", error_type="UnidentifiedImageError")
        views = _views(store)
        assert store.status("images/00000001.jpg").origin == "imported"
        assert store.status("images/annotated.jpg").origin is None
    keys = ["images/00000000.jpg", "images/00000001.jpg", "images/00000002.jpg", "images/annotated.jpg",
            "images/extra.jpg"]
    assert views == {
        "count_done": 5, "count_failed": 1, "keys_done": keys, "keys_failed": ["images/broken.jpg"],
        "status": {k: "done" for k in keys},
        "statuses": {**{k: "done" for k in keys}, "images/broken.jpg": "failed"},
        "graphs": 5,
    }
    assert _ls(path) == sorted([(k, "done") for k in keys] + [("images/broken.jpg", "failed")])


def test_a_graph_replacing_a_failure_is_done(tmp_path):
    path = tmp_path / "s.lmdb"
    with gbc.open_store(path, readonly=False) as store:
        store.mark_failed("images/00000000.jpg", "timeout", error_type="TimeoutError")
        store.put_many([("images/00000000.jpg", _graph(0))])
        assert store.status("images/00000000.jpg").status == "done"
        assert (store.count("done"), store.count("failed")) == (1, 0)


@pytest.mark.parametrize("source", ["jsonl", "store"])
def test_gbc_convert_into_a_store_gives_every_graph_a_status(tmp_path, source):
    src = tmp_path / ("g.jsonl" if source == "jsonl" else "src.lmdb")
    if source == "jsonl":
        src.write_text("".join(_graph(i).to_json().decode() + "\n" for i in range(4)))
    else:
        with gbc.open_store(src, readonly=False) as store:
            store.put_many((g.image_key, g) for g in map(_graph, range(2)))
            store.commit_image("images/00000002.jpg", _graph(2))
            store.commit_image("images/00000003.jpg", _graph(3))
            store.mark_failed("images/bad.jpg", "boom", error_type="RuntimeError")
    dst = tmp_path / "dst.lmdb"
    assert run_cli("convert", src, dst).exit_code == 0
    with gbc.open_store(dst) as store:
        views = _views(store)
    keys = [f"images/{i:08d}.jpg" for i in range(4)]
    assert views["count_done"] == 4 and views["keys_done"] == keys
    assert views["status"] == {k: "done" for k in keys}
    assert views["statuses"] == {k: "done" for k in keys} | ({"images/bad.jpg": "failed"} if source == "store" else {})


def test_stores_written_without_status_records_read_their_graphs_as_done(tmp_path):
    path = tmp_path / "old.lmdb"
    with gbc.open_store(path, readonly=False) as store:
        store.put_many((g.image_key, g) for g in map(_graph, range(3)))
        store.mark_failed("images/bad.jpg", "boom", error_type="RuntimeError")
    _drop_status_records(path)  # the failure record goes too: only graphs are left
    with gbc.open_store(path) as store:
        views = _views(store)
        record = store.status("images/00000001.jpg")
        assert store.status("images/nothing.jpg") is None
    keys = [f"images/{i:08d}.jpg" for i in range(3)]
    assert views == {"count_done": 3, "count_failed": 0, "keys_done": keys, "keys_failed": [],
                     "status": {k: "done" for k in keys}, "statuses": {k: "done" for k in keys}, "graphs": 3}
    assert record.status == "done"
    assert _ls(path) == [(k, "done") for k in keys]
    with MultiStore([path]) as view:
        assert view.count("done") == 3
    assert finished_keys(path) == set(keys)  # a Ray run into it skips them too


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ["a.png", "b.png", "c.png", "d.png"]:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("legacy", [False, True])
def test_annotate_never_reannotates_a_key_that_has_a_graph(images, tmp_path, legacy):
    out = tmp_path / "o.lmdb"
    imported = {key: _graph(i, key) for i, key in enumerate(["a.png", "c.png"])}
    with gbc.open_store(out, readonly=False) as store:
        store.put_many(imported.items())
    if legacy:
        _drop_status_records(out)
    args = ["annotate", images, "-o", out, "--mllm", "scripted", "--detector", "scripted", "--json"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["images"], summary["skipped"]) == (2, 2)
    assert summary["store"] == {"done": 4, "failed": 0}
    with gbc.open_store(out) as store:
        for key, graph in imported.items():
            assert store[key].to_dict() == graph.to_dict()  # not replaced
        assert store.status("b.png").origin is None and store.status("b.png").status == "done"
    retry = json.loads(run_cli(*args, "--retry-failed").stdout)
    assert retry["images"] == 0
