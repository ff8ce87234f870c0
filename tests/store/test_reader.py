"""``GraphReader``: a store, a store with its shards and a graph file read the same way."""

import pytest

from gbc.schemas.graph import GraphValidationError
from gbc.store import GraphStore, StoreError
from gbc.store.files import write_graphs
from gbc.store.reader import (
    GraphFile,
    GraphReader,
    failed_count,
    iter_graphs,
    known_count,
    open_graphs,
    recorded_image_roots,
    records_statuses,
)
from gbc.store.records import GraphFormatError
from gbc.store.shards import MultiStore

from store_helpers import gbc10m_graph

GRAPHS = [gbc10m_graph(i) for i in range(5)]
KEYS = [g.image_key for g in GRAPHS]
FAILED = "images/zz-broken.jpg"


def _store(path, graphs, failed=(), roots=()):
    with GraphStore(path, readonly=False) as store:
        for graph in graphs:
            store.commit_image(graph.image_key, graph, provenance={"by": "test", "key": graph.image_key})
        for key in failed:
            store.mark_failed(key, "cannot identify image file", error_type="UnidentifiedImageError")
        if roots:
            store.update_meta({"image_roots": list(roots)})
    return path


def _source(kind, tmp_path):
    """``kind``: the path of a source holding GRAPHS (and, for stores, one failed image)."""
    if kind == "store":
        return _store(tmp_path / "run.lmdb", GRAPHS, failed=[FAILED], roots=["/data/a"])
    if kind == "shards":
        root = _store(tmp_path / "run.lmdb", GRAPHS[:2], roots=["/data/a"])
        (root / "shards").mkdir()
        _store(root / "shards" / "w0.lmdb", GRAPHS[2:4], failed=[FAILED], roots=["/data/b", "/data/a"])
        _store(root / "shards" / "w1.lmdb", GRAPHS[4:])
        return root
    path = tmp_path / f"graphs.{kind}"
    write_graphs(path, GRAPHS)
    return path


STORES = ["store", "shards"]
FILES = ["jsonl", "json", "parquet"]


@pytest.mark.parametrize("kind", STORES + FILES)
def test_every_source_opens_as_a_graph_reader_that_reads_its_graphs(kind, tmp_path):
    with open_graphs(_source(kind, tmp_path)) as reader:
        assert isinstance(reader, GraphReader)
        assert isinstance(reader, {"store": GraphStore, "shards": MultiStore}.get(kind, GraphFile))
        items = list(reader.items())
        assert [k for k, _ in items] == sorted(KEYS) if kind in STORES else KEYS
        assert {k: g.to_dict() for k, g in items} == {g.image_key: g.to_dict() for g in GRAPHS}
        assert list(reader.keys()) == [k for k, _ in items]
        assert reader.count() == len(GRAPHS)
        assert reader.get(KEYS[3]).to_dict() == GRAPHS[3].to_dict()
        assert reader.get("images/none.jpg") is None and reader.get("images/none.jpg", "x") == "x"
        assert reader.status(KEYS[1]).status == "done" and reader.status("images/none.jpg") is None
        statuses = dict(reader.statuses())
        assert {k for k, r in statuses.items() if r.status == "done"} == set(KEYS)


@pytest.mark.parametrize("kind", STORES)
def test_stores_record_failures_provenance_and_image_roots(kind, tmp_path):
    with open_graphs(_source(kind, tmp_path)) as reader:
        assert records_statuses(reader)
        assert known_count(reader) == len(GRAPHS) and failed_count(reader) == 1
        assert list(reader.keys(status="failed")) == [FAILED]
        assert reader.status(FAILED).status == "failed" and reader.status(FAILED).reason == "cannot identify image file"
        assert reader.get_provenance(KEYS[4]) == {"by": "test", "key": KEYS[4]}
        # a view over shards gathers every shard's folders, first seen first
        assert recorded_image_roots(reader) == (["/data/a", "/data/b"] if kind == "shards" else ["/data/a"])


@pytest.mark.parametrize("kind", FILES)
def test_a_graph_file_holds_only_graphs(kind, tmp_path):
    with open_graphs(_source(kind, tmp_path)) as reader:
        assert not records_statuses(reader)
        assert known_count(reader) is None and failed_count(reader) is None
        assert list(reader.keys(status="failed")) == [] and reader.count("failed") == 0
        assert reader.get_provenance(KEYS[0]) is None
        assert reader.meta == {} and recorded_image_roots(reader) == []
        assert KEYS[2] in reader and "images/none.jpg" not in reader
        with pytest.raises(ValueError, match="status must be"):
            reader.keys(status="pending")


def test_a_graph_file_is_read_again_on_every_pass(tmp_path):
    reader = GraphFile(_source("jsonl", tmp_path))
    assert [k for k, _ in reader.items()] == [k for k, _ in reader.items()] == KEYS


def test_a_graph_without_image_key_is_named_by_its_position(tmp_path):
    graph = gbc10m_graph(7)
    graph.img_path = graph.img_url = None
    path = tmp_path / "anon.jsonl"
    write_graphs(path, [GRAPHS[0], graph])
    with open_graphs(path) as reader:
        assert list(reader.keys()) == [KEYS[0], "#1"]
        assert reader.get("#1").to_dict() == graph.to_dict()


def test_open_graphs_refuses_what_is_no_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or store"):
        open_graphs(tmp_path / "missing.jsonl")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GraphFormatError, match="not a graph store"):
        open_graphs(tmp_path / "plain")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GraphFormatError, match="cannot tell the format"):
        open_graphs(tmp_path / "notes.txt")
    with pytest.raises(GraphFormatError, match="is a graph store"):
        GraphFile(_source("store", tmp_path))


def test_a_folder_of_stores_opens_as_one_view(tmp_path):
    folder = tmp_path / "stores"
    folder.mkdir()
    _store(folder / "a.lmdb", GRAPHS[:3])
    _store(folder / "b.lmdb", GRAPHS[3:], failed=[FAILED])
    with open_graphs(folder) as reader:
        assert isinstance(reader, MultiStore)
        assert list(reader.keys()) == sorted(KEYS) and failed_count(reader) == 1


def _invalid_graph():
    graph = gbc10m_graph(9)
    graph.vertices[1].vertex_id = graph.vertices[0].vertex_id  # two vertices with one id
    return graph


def test_iter_graphs_checks_store_graphs_only_when_asked(tmp_path):
    path = _store(tmp_path / "bad.lmdb", [GRAPHS[0]])
    with GraphStore(path, readonly=False) as store:
        store.put("images/bad.jpg", _invalid_graph())
    with open_graphs(path) as reader:
        assert len(list(iter_graphs(reader))) == 2
        with pytest.raises(GraphValidationError, match="bad.jpg"):
            list(iter_graphs(reader, validate=True))


def test_a_graph_file_checks_its_graphs_while_parsing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(GRAPHS[0].to_json().decode() + "\n" + _invalid_graph().to_json().decode() + "\n")
    with open_graphs(path, validate=False) as reader:
        assert len(list(iter_graphs(reader))) == 2
    with open_graphs(path, validate=True) as reader:
        with pytest.raises(GraphFormatError, match="line 2: not a valid graph"):
            list(iter_graphs(reader, validate=True))


def test_close_releases_the_stores_of_a_view(tmp_path):
    reader = open_graphs(_source("shards", tmp_path))
    stores = reader.stores
    with reader:
        assert len(stores) == 3
    for store in stores:
        with pytest.raises(StoreError, match="closed"):
            store.get(KEYS[0])


def test_the_protocol_asks_for_every_reading_method():
    class OnlyItems:
        def items(self, on_damaged=None):
            return iter(())

        def close(self):
            pass

    assert not isinstance(OnlyItems(), GraphReader)
    assert not isinstance([("key", GRAPHS[0])], GraphReader)


def test_whole_store_readers_open_with_readahead_and_lookups_without(tmp_path):
    from gbc.export.source import open_source

    path = _store(tmp_path / "s.lmdb", GRAPHS)
    with open_graphs(path) as reader:  # lookups by key: one page per miss
        assert reader._shared.env.flags()["readahead"] is False
    with open_graphs(path, readahead=True) as reader:
        assert reader._shared.env.flags()["readahead"] is True
        assert sorted(reader.keys()) == sorted(KEYS)
    pairs, total = open_source(path, view=True)  # an export reads every graph in key order
    from gbc.store import lmdb_env

    [shared] = [s for p, s in lmdb_env.REGISTRY.items() if p == str(path.resolve())]
    assert shared.env.flags()["readahead"] is True
    assert [k for k, _ in pairs] == sorted(KEYS) and total == len(KEYS)
    assert not lmdb_env.REGISTRY  # the source closed itself when exhausted
    shards = tmp_path / "run"
    _store(shards / "a.lmdb", GRAPHS[:2]), _store(shards / "b.lmdb", GRAPHS[2:])
    for readahead in (False, True):
        with open_graphs(shards, readahead=readahead) as reader:
            assert isinstance(reader, MultiStore) and sorted(reader.keys()) == sorted(KEYS)
            assert [s._shared.env.flags()["readahead"] for s in reader._stores] == [readahead] * 2
