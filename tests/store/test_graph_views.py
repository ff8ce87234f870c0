"""Read-only graph views: ``store.view(key)`` and ``items(view=True)`` give msgspec structs with
the same content and queries as the pydantic graphs, and damage is still detected."""

import lmdb
import pytest

from gbc.schemas.graph import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.views import GraphView
from gbc.store import GraphStore, StoreCorruptError
from gbc.store.codec import IN_EDGES_EXPLICIT, ValueCodec
from gbc.store.shards import MultiStore

from store_helpers import gbc10m_graph


def _content(graph):
    """What a view must agree on with the graph, through the API both offer."""
    return {
        "top": (graph.img_url, graph.img_path, graph.original_caption, graph.short_caption,
                graph.detail_caption, graph.n_vertices, graph.n_edges, graph.n_captions, graph.image_key),
        "vertices": [
            (v.vertex_id, v.label, v.bbox.to_xyxy(), v.bbox.confidence, v.is_leaf,
             [(d.text, d.label) for d in v.descs],
             [e.key() for e in v.in_edges], [e.key() for e in v.out_edges],
             [None if e.span is None else (e.span.desc_index, e.span.start, e.span.end) for e in v.out_edges],
             v.sub_masks, v.super_masks)
            for v in graph.vertices
        ],
        "orders": (graph.bfs_order(), graph.dfs_order(), graph.depths(), graph.root.vertex_id,
                   [v.vertex_id for v in graph.roots], [v.vertex_id for v in graph.leaves]),
        "captions": [(v.vertex_id, d.text) for v, d in graph.captions(vertex_labels=["entity", "image"],
                                                                      desc_labels=["short", "detail"], order="bfs")],
    }


def _store(path, graphs, **kwargs):
    with GraphStore(path, readonly=False, **kwargs) as store:
        store.put_many((f"k{i:03d}", g) for i, g in enumerate(graphs))


@pytest.mark.parametrize("dict_train_samples", [0, 50])
def test_views_agree_with_graphs(tmp_path, dict_train_samples):
    graphs = [gbc10m_graph(i) for i in range(120)]
    _store(tmp_path / "s.lmdb", graphs, dict_train_samples=dict_train_samples)
    with GraphStore(tmp_path / "s.lmdb") as store:
        pairs = list(store.items())
        views = list(store.items(view=True))
        assert [k for k, _ in views] == [k for k, _ in pairs]
        for (key, graph), (_, view) in zip(pairs, views):
            assert isinstance(view, GraphView) and not isinstance(view, GbcGraph)
            assert _content(view) == _content(graph), key
            assert _content(store.view(key)) == _content(graph)
        assert [_content(v) for v in store.values(view=True)] == [_content(g) for g in store.values()]
        with pytest.raises(KeyError):
            store.view("absent")


def test_views_of_reference_graphs(tmp_path, reference_records):
    graphs = [GbcGraph.from_dict(r) for r in reference_records]
    # released boxes may lie a float error outside [0, 1] (GBC10M holds top=-6.7e-06)
    edge = graphs[0].model_copy(deep=True)
    edge.vertices[-1].bbox = Bbox(left=0.5, top=-6.7e-06, right=1.0000004, bottom=0.9, confidence=0.41)
    graphs.append(edge)
    _store(tmp_path / "ref.lmdb", graphs)
    with GraphStore(tmp_path / "ref.lmdb") as store:
        for key, graph in store.items():
            view = store.view(key)
            assert _content(view) == _content(graph), key
            # the released layouts come back from the view's fields
            assert view.to_graph().to_dict("gbc10m") == graph.to_dict("gbc10m")
        last = store.view(f"k{len(graphs) - 1:03d}").vertices[-1].bbox
        assert (last.top, last.right, last.confidence) == (-6.7e-06, 1.0000004, 0.41) and last.is_valid()


def test_explicit_and_sorted_in_edges_survive(tmp_path):
    # in-edges in an order the out-edges do not imply: stored explicitly, and so viewed
    image = Vertex(vertex_id="", bbox=Bbox.full(), label="image", descs=[Description(text="Two cats.", label="short")])
    a = Vertex(vertex_id="a", bbox=Bbox.from_xyxy([0, 0, 0.5, 0.5]), label="entity")
    b = Vertex(vertex_id="b", bbox=Bbox.from_xyxy([0.5, 0, 1, 0.5]), label="entity")
    r = Vertex(vertex_id="[a|b]", bbox=Bbox.full(), label="relation")
    image.out_edges = [Edge(source="", text="cat", target="a"), Edge(source="", text="cat", target="b"),
                       Edge(source="", text="cats", target="[a|b]")]
    a.out_edges = [Edge(source="a", text="b", target="[a|b]")]
    b.out_edges = [Edge(source="b", text="a", target="[a|b]")]
    a.in_edges, b.in_edges = [image.out_edges[0]], [image.out_edges[1]]
    image.in_edges = []
    r.in_edges = [b.out_edges[0], image.out_edges[2], a.out_edges[0]]  # neither order rule
    graph = GbcGraph(vertices=[image, a, b, r], img_path="cats.jpg")
    assert ValueCodec().graph_payload(graph)[1] == IN_EDGES_EXPLICIT
    _store(tmp_path / "s.lmdb", [graph, gbc10m_graph(1)], dict_train_samples=0)
    with GraphStore(tmp_path / "s.lmdb") as store:
        view = store.view("k000")
        assert [e.source for e in view.vertex("[a|b]").in_edges] == ["b", "", "a"]
        assert _content(view) == _content(store["k000"])
        assert _content(store.view("k001")) == _content(store["k001"])


def _damage(path, values) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    graphs = env.open_db(b"graphs")  # outside the write transaction: it opens one of its own
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value, db=graphs)
    env.close()


def test_damage_is_detected_by_views(tmp_path):
    path = tmp_path / "s.lmdb"
    with GraphStore(path, readonly=False, dict_train_samples=0) as store:
        for i in range(6):
            store.put(f"k{i:03d}", gbc10m_graph(i))
        raw = dict(store.raw_items())
    flipped = bytearray(raw["k002"])
    flipped[len(flipped) // 2] ^= 0x20
    codec = ValueCodec()
    # checksum right, content wrong: a vertex label no graph may have
    bad_label = codec.pack(b'{"vertices":[{"vertex_id":"","bbox":{"left":0,"top":0,"right":1,"bottom":1},'
                           b'"label":"planet"}]}')
    not_json = codec.pack(b'{"vertices": [')
    _damage(path, {b"k002": bytes(flipped), b"k003": bad_label, b"k004": not_json})
    with GraphStore(path) as store:
        with pytest.raises(StoreCorruptError, match="'k002'.*checksum mismatch"):
            store.view("k002")
        with pytest.raises(StoreCorruptError, match="'k003'.*planet|'k003'.*label"):
            store.view("k003")
        with pytest.raises(StoreCorruptError, match="'k004'"):
            store.view("k004")
        with pytest.raises(StoreCorruptError):
            list(store.items(view=True))
        damaged = []
        keys = [k for k, _ in store.items(on_damaged=lambda k, m: damaged.append(k), view=True)]
        assert keys == ["k000", "k001", "k005"]
        assert damaged == ["k002", "k003", "k004"]


def test_multistore_views(tmp_path):
    first, second = tmp_path / "a.lmdb", tmp_path / "b.lmdb"
    with GraphStore(first, readonly=False) as store:
        for i in (0, 2, 4):
            store.put(f"k{i}", gbc10m_graph(i))
        store.mark_failed("k3", "ValueError", "no answer")
    with GraphStore(second, readonly=False) as store:
        for i in (1, 2, 3):
            store.put(f"k{i}", gbc10m_graph(10 + i))
    with MultiStore([first, second]) as multi:
        pairs = list(multi.items())
        views = list(multi.items(view=True))
        assert [k for k, _ in views] == [k for k, _ in pairs] == ["k0", "k1", "k2", "k3", "k4"]
        assert [_content(v) for _, v in views] == [_content(g) for _, g in pairs]
        assert _content(multi.view("k2")) == _content(gbc10m_graph(2))  # the first store's graph wins
        assert _content(multi.view("k3")) == _content(gbc10m_graph(13))  # done beats failed
        assert len(list(multi.values(view=True))) == 5
        with pytest.raises(KeyError):
            multi.view("k9")


def test_views_declare_the_fields_of_the_schema_in_its_order():
    # A view is a second decoding target of the same JSON: a field added to the schema must be
    # added to its view too. Descriptions leave out the caption scores of the "full" layout.
    from gbc.schemas import bbox, graph, views

    left_out = {views.DescriptionView: {"clip_scores", "toxicity_scores", "statistics"}}
    for view, model in [(views.GraphView, graph.GbcGraph), (views.VertexView, graph.Vertex),
                        (views.EdgeView, graph.Edge), (views.EdgeSpanView, graph.EdgeSpan),
                        (views.DescriptionView, graph.Description), (views.BboxView, bbox.Bbox)]:
        expected = tuple(f for f in model.model_fields if f not in left_out.get(view, ()))
        assert view.__struct_fields__ == expected, view.__name__
