"""The payload serialiser built from GbcGraph's core schema writes what pydantic's serialiser
writes with the in-edge exclusion, byte for byte, or is not used at all."""

import random
import warnings

import pytest
from store_helpers import gbc10m_graph

from gbc.schemas import Bbox, Description, GbcGraph
from gbc.schemas.graph import Edge, Vertex
from gbc.store import payload_json as payload_module
from gbc.store.codec import IN_EDGES_SOURCE_ORDER, ValueCodec
from gbc.store.payload_json import EXCLUDE_IN_EDGES, payload_json, probe_graphs


def pydantic_payload(graph: GbcGraph) -> bytes:
    return graph.__pydantic_serializer__.to_json(graph, exclude_unset=True, exclude=EXCLUDE_IN_EDGES)


@pytest.fixture
def fresh_cache():
    payload_json.cache_clear()
    yield
    payload_json.cache_clear()


def _mutated(graph: GbcGraph, rng: random.Random) -> GbcGraph:
    """The graph with fields unset, set, added outside the schema, or given odd values."""
    v = rng.choice(graph.vertices)
    change = rng.randrange(8)
    if change == 0:
        v.bbox.__pydantic_fields_set__.discard("confidence")
    elif change == 1:
        v.__pydantic_extra__["score"] = rng.random()
    elif change == 2 and v.out_edges:
        v.out_edges[0].__pydantic_extra__["w"] = [1, None, "x"]
    elif change == 3:
        v.descs.append(Description.full_layout("Añadido \"x\"\n\u2028.", "short", v.label))
    elif change == 4:
        v.sub_masks = [u.vertex_id for u in graph.vertices[:2]]
    elif change == 5:
        graph.img_size = (rng.randrange(1, 5000), rng.randrange(1, 5000))
        graph.__pydantic_extra__["source"] = {"shard": rng.randrange(100)}
    elif change == 6:
        v.bbox = Bbox(left=-6.7e-06, top=1e-300, right=float(rng.random()), bottom=1.0, confidence=None)
    else:
        v.descs = []
    return graph


def test_payloads_are_pydantics_bytes(reference_records):
    fast = payload_json()
    assert fast is not None  # the pydantic installed with the project builds it
    rng = random.Random(5)
    graphs = probe_graphs() + [gbc10m_graph(i) for i in range(20)]
    graphs += [GbcGraph.from_dict(r) for r in reference_records]
    graphs += [_mutated(GbcGraph.model_validate_json(g.to_json()), rng) for g in graphs if g.vertices for _ in range(3)]
    for g in graphs:
        g.mark_filled_fields()
        assert fast(g) == pydantic_payload(g)
        assert b'"in_edges"' not in fast(g)


def test_vertices_of_other_classes_and_values_of_other_types_are_written_alike():
    class TaggedVertex(Vertex):
        tag: str = "t"

    g = probe_graphs()[0]
    v = g.vertices[1]
    g.vertices[1] = TaggedVertex(**{name: getattr(v, name) for name in v.model_fields_set}, tag="x")
    g.vertices[2].bbox = {"left": 0.5, "top": 0.5, "right": 0.6, "bottom": 0.7}  # not validated on assignment
    g.mark_filled_fields()
    with warnings.catch_warnings(record=True) as fast_warnings:
        warnings.simplefilter("always")
        fast = payload_json()(g)
    with warnings.catch_warnings(record=True) as pydantic_warnings:
        warnings.simplefilter("always")
        expected = pydantic_payload(g)
    assert fast == expected and b'"left":0.5' in fast
    assert fast_warnings and [str(w.message) for w in fast_warnings] == [str(w.message) for w in pydantic_warnings]


def test_the_codec_serialises_subclasses_with_their_own_serialiser():
    class Annotated(GbcGraph):
        run_id: str = "r"

    g = Annotated(**{name: getattr(probe_graphs()[0], name) for name in probe_graphs()[0].model_fields_set}, run_id="42")
    payload, mode = ValueCodec().graph_payload(g)
    assert mode == IN_EDGES_SOURCE_ORDER and b'"run_id":"42"' in payload
    assert payload == g.__pydantic_serializer__.to_json(g, exclude_unset=True, exclude=EXCLUDE_IN_EDGES)


def test_a_serialiser_that_disagrees_is_not_used(monkeypatch, fresh_cache):
    real = payload_module._payload_schema

    def keeps_in_edges(node):  # stand-in classes, but the in-edge field is still written
        out = real(node)
        pending = [out]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                item.get("fields", {}).get("in_edges", {}).pop("serialization_exclude", None)
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return out

    monkeypatch.setattr(payload_module, "_payload_schema", keeps_in_edges)
    assert payload_json() is None
    g = gbc10m_graph(3)
    codec = ValueCodec()
    payload, mode = codec.graph_payload(g)  # pydantic's serialiser with the exclusion
    assert mode == IN_EDGES_SOURCE_ORDER and payload == pydantic_payload(g.mark_filled_fields())
    assert codec.decode_graph(codec.pack(payload, mode)) == g


def test_a_schema_it_cannot_read_leaves_pydantics_serialiser(monkeypatch, fresh_cache):
    def unreadable(node):
        raise KeyError("schema")

    monkeypatch.setattr(payload_module, "_payload_schema", unreadable)
    assert payload_json() is None
    loop = Edge(source="", text="x", target="")
    g = GbcGraph(vertices=[Vertex(vertex_id="", bbox=Bbox.full(), label="image", out_edges=[loop], in_edges=[loop])])
    payload, mode = ValueCodec().graph_payload(g)
    assert payload == pydantic_payload(g) and mode == IN_EDGES_SOURCE_ORDER
