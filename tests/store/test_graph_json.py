"""view_with_lossless_json: a stored graph's JSON made from its payload is the graph's own to_json()."""

import pickle

import pytest

from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph
from gbc.schemas.views import GraphView
from gbc.store import GraphStore
from gbc.store.codec import (IN_EDGES_EXPLICIT, IN_EDGES_SORTED_BY_SOURCE, IN_EDGES_SOURCE_ORDER, ValueCodec,
                             ValueDecodeError, in_edges_mode)
from gbc.store.files import read_graphs
from gbc.store.graph_json import NotSpliceable, view_with_lossless_json

from store_helpers import gbc10m_graph


def _odd(seed):
    g = synthetic_graph(seed)
    if seed % 4 == 0:
        g.vertices[0].descs[0].__pydantic_extra__["score"] = 2.5e-07
    if seed % 4 == 1:
        g.__pydantic_extra__["note"] = {"nested": ["ünï", None, 1]}
    if seed % 4 == 2:
        edge = next(e for v in g.vertices for e in v.out_edges)
        edge.__pydantic_extra__["weight"] = -0.0
    if seed % 5 == 0:
        for v in g.vertices:  # sorted by source id, as the reference pipeline writes in-edges
            v.in_edges = sorted(v.in_edges, key=lambda e: e.source)
    return g


def _json(payload, mode):
    if mode == IN_EDGES_EXPLICIT:  # as the codec does: the payload is the JSON
        return payload
    view, json = view_with_lossless_json(payload, sort_by_source=mode == IN_EDGES_SORTED_BY_SOURCE)
    assert view == ValueCodec().decode_view_payload(payload, mode)  # in-edges rebuilt as a plain view's
    return json


def _check(graphs):
    """The in-edge modes of ``graphs``; each graph's JSON made from its payload is its own, and
    only graphs with extra fields on the graph or a vertex are refused (read as full graphs)."""
    codec = ValueCodec()
    modes = set()
    for g in graphs:
        payload, mode = codec.graph_payload(g)
        modes.add(mode)
        expected = codec.decode_payload(payload, mode).to_json()
        refused = mode != IN_EDGES_EXPLICIT and (g.__pydantic_extra__ or any(v.__pydantic_extra__ for v in g.vertices))
        if refused:
            with pytest.raises(NotSpliceable):
                _json(payload, mode)
        else:
            assert _json(payload, mode) == expected
        read = codec.decode_view_payload(payload, mode, with_json=True)
        assert isinstance(read, GbcGraph if refused else GraphView)
        assert (read.to_json() if refused else read.lossless_json()) == expected
    return modes


def test_synthetic_graphs_in_every_in_edge_mode():
    graphs = [gbc10m_graph(i) for i in range(30)] + [_odd(i) for i in range(40)]
    graphs[3].vertices[-1].in_edges = []  # no longer implied by the out-edges: stored explicitly
    assert _check(graphs) == {IN_EDGES_EXPLICIT, IN_EDGES_SOURCE_ORDER, IN_EDGES_SORTED_BY_SOURCE}


def test_reference_graphs(reference_jsonl):
    graphs = list(read_graphs(reference_jsonl))
    assert len(graphs) > 5
    assert _check(graphs)


def test_values_of_older_stores_with_empty_in_edge_lists():
    # values written before in-edges were left out hold "in_edges": [] in every vertex
    g = gbc10m_graph(7).mark_filled_fields()
    assert in_edges_mode(g) == IN_EDGES_SOURCE_ORDER
    old = g.model_copy(deep=True)
    for v in old.vertices:
        v.in_edges = []
    payload = old.__pydantic_serializer__.to_json(old, exclude_unset=True)
    assert b'"in_edges":[]' in payload
    codec = ValueCodec()
    assert _json(payload, IN_EDGES_SOURCE_ORDER) == codec.decode_payload(payload, IN_EDGES_SOURCE_ORDER).to_json()
    assert _json(payload, IN_EDGES_SOURCE_ORDER) == g.to_json()


def test_odd_values_inside_descriptions_and_edges_are_copied_as_they_are():
    g = gbc10m_graph(2)
    g.vertices[0].descs[0].__pydantic_extra__['say "hi"\n'] = {"clé \x7f \u2028": [1.5e-300, "\x00"]}
    edge = next(e for v in g.vertices for e in v.out_edges)
    twin = next(e for e in g.vertex(edge.target).in_edges if e.source == edge.source and e.text == edge.text)
    for e in (edge, twin):  # the in-edge says the same: still implied by the out-edge
        e.__pydantic_extra__["ünï"] = "\ud7ff\t"
    payload, mode = ValueCodec().graph_payload(g)
    assert mode == IN_EDGES_SOURCE_ORDER
    assert _json(payload, mode) == g.to_json()


@pytest.mark.parametrize("change", ["vertex extra", "graph extra"])
def test_what_cannot_be_copied_byte_for_byte_is_refused(change):
    g = gbc10m_graph(2)
    if change == "vertex extra":
        g.vertices[1].__pydantic_extra__["note"] = 1
    else:
        g.__pydantic_extra__['say "hi"'] = 1
    payload, mode = ValueCodec().graph_payload(g)
    assert mode == IN_EDGES_SOURCE_ORDER
    with pytest.raises(NotSpliceable):
        _json(payload, mode)
    # the store reads such a graph as a full graph, with the same JSON
    got = ValueCodec().decode_view_payload(payload, mode, with_json=True)
    assert isinstance(got, GbcGraph) and got.to_json() == g.to_json()


@pytest.mark.parametrize("payload", [b'{"vertices":3}', b"[", b'{"vertices":[{"vertex_id":"a","bbox":{"left":0,'
                                     b'"top":0,"right":1,"bottom":1},"label":"image","descs":[]}],"img_url":7}'])
def test_payloads_that_are_not_graphs_are_refused_as_they_are_without_json(payload):
    codec = ValueCodec()
    for with_json in (False, True):
        with pytest.raises(ValueDecodeError, match="not a valid graph"):
            codec.decode_view_payload(payload, IN_EDGES_SOURCE_ORDER, with_json=with_json)


@pytest.mark.parametrize("change", ["duplicate id", "missing target"])
def test_in_edges_that_cannot_be_rebuilt_are_refused_with_or_without_json(change):
    g = gbc10m_graph(3)
    payload, mode = ValueCodec().graph_payload(g)
    assert mode != IN_EDGES_EXPLICIT
    first, second = g.vertices[1].vertex_id, g.vertices[2].vertex_id
    if change == "duplicate id":
        payload = payload.replace(b'"vertex_id":"%s"' % second.encode(), b'"vertex_id":"%s"' % first.encode(), 1)
    else:
        payload = payload.replace(b'"target":"%s"' % first.encode(), b'"target":"nowhere"', 1)
    assert payload != ValueCodec().graph_payload(g)[0]
    with pytest.raises(ValueError, match="in-edges cannot be rebuilt"):
        view_with_lossless_json(payload, sort_by_source=False)
    for with_json in (False, True):
        with pytest.raises(ValueDecodeError, match="in-edges cannot be rebuilt"):
            ValueCodec().decode_view_payload(payload, mode, with_json=with_json)


def test_views_read_with_json_carry_it_through_pickling(tmp_path):
    graphs = [gbc10m_graph(i) for i in range(7)]
    graphs[5].vertices[0].descs[0].__pydantic_extra__["score"] = 2.5e-07
    graphs[6].__pydantic_extra__["note"] = {"nested": ["ünï", None, 1]}
    with GraphStore(tmp_path / "g.lmdb", readonly=False, dict_train_samples=0) as store:
        store.put_many((f"k{i}", g) for i, g in enumerate(graphs))
    with GraphStore(tmp_path / "g.lmdb") as store:
        views = dict(store.items(view="json"))
        plain = store.view("k0")
        expected = {k: store[k].to_json() for k in views}
    full = views.pop("k6")  # a graph-level extra field: read as a full graph
    assert isinstance(full, GbcGraph) and b'"note":{"nested"' in full.to_json() == expected["k6"]
    assert all(isinstance(v, GraphView) for v in views.values())
    for key, view in views.items():
        assert view.lossless_json() == expected[key]
        again = pickle.loads(pickle.dumps(view))
        assert again == view and again.lossless_json() == expected[key]
    assert b'"score":2.5e-7' in views["k5"].lossless_json()  # a description's extra field
    with pytest.raises(ValueError, match='view="json"'):
        plain.lossless_json()
    assert pickle.loads(pickle.dumps(plain)) == plain


def test_a_multistore_gives_views_with_json(tmp_path):
    from gbc.store.shards import MultiStore

    graphs = [_odd(i) for i in range(8)]
    for s in range(2):
        with GraphStore(tmp_path / f"s{s}.lmdb", readonly=False, dict_train_samples=0) as store:
            store.put_many((f"k{i}", graphs[i]) for i in range(s, 8, 2))
    with MultiStore([tmp_path / "s0.lmdb", tmp_path / "s1.lmdb"]) as multi:
        got = {k: g.to_json() if isinstance(g, GbcGraph) else g.lossless_json() for k, g in multi.items(view="json")}
    assert got == {f"k{i}": g.to_json() for i, g in enumerate(graphs)}


def test_an_unknown_view_mode_is_refused(tmp_path):
    from gbc.store.shards import MultiStore

    with GraphStore(tmp_path / "g.lmdb", readonly=False) as store:
        store.put("k", gbc10m_graph(1))
    with GraphStore(tmp_path / "g.lmdb") as store:
        with pytest.raises(ValueError, match='"json"'):
            next(store.items(view="jsn"))
    with MultiStore([tmp_path / "g.lmdb"]) as multi:
        with pytest.raises(ValueError, match='"json"'):
            next(multi.items(view="JSON"))
