"""``commit_images``: many images committed like ``commit_image``, a batch per transaction."""

from gbc.store import GraphStore
from gbc.store.shards import MultiStore

from store_helpers import gbc10m_graph


def test_commit_images_writes_graph_status_and_provenance(tmp_path):
    path = tmp_path / "s.lmdb"
    items = [(f"k{i}", gbc10m_graph(i), {"run": i}) for i in range(5)] + [("plain", gbc10m_graph(9))]
    with GraphStore(path, readonly=False) as store:
        assert store.commit_images(items, batch_size=2) == 6
    with GraphStore(path) as store:
        assert len(store) == 6 and store.count("done") == 6
        for key, graph, *prov in items:
            assert store[key] == graph
            record = store.status(key)
            assert record.status == "done" and record.counts["vertices"] == graph.n_vertices
            assert store.get_provenance(key) == (prov[0] if prov else None)


def test_multistore_items_read_each_graph_from_the_store_that_holds_it(tmp_path):
    paths = []
    for s in range(3):
        path = tmp_path / f"part-{s}.lmdb"
        with GraphStore(path, readonly=False) as store:
            store.commit_images((f"k{i:02d}", gbc10m_graph(i)) for i in range(s, 12, 3))
            if s == 1:
                store.mark_failed("k00", "failed here, done in part 0")
        paths.append(path)
    with MultiStore(paths) as view:
        items = list(view.items())
    assert [k for k, _ in items] == [f"k{i:02d}" for i in range(12)]
    assert all(graph == gbc10m_graph(int(key[1:])) for key, graph in items)
