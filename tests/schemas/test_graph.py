import json

import networkx as nx
import pytest

from gbc.schemas import Bbox, Description, Edge, GbcGraph, GraphValidationError, Vertex, union_bboxes
from gbc.schemas.synthetic import synthetic_graph


def _tiny_graph() -> GbcGraph:
    root = Vertex(vertex_id="", bbox=Bbox.full(), label="image", descs=[Description(text="A dog and a cat.", label="short")])
    dog = Vertex(vertex_id="dog", bbox=Bbox(left=0.1, top=0.1, right=0.4, bottom=0.5, confidence=0.9), label="entity")
    cat = Vertex(vertex_id="cat", bbox=Bbox(left=0.5, top=0.1, right=0.9, bottom=0.5, confidence=0.8), label="entity")
    tail = Vertex(vertex_id="dog_tail", bbox=Bbox(left=0.1, top=0.3, right=0.2, bottom=0.4), label="entity")
    rel = Vertex(vertex_id="[cat|dog]", bbox=Bbox(left=0.1, top=0.1, right=0.9, bottom=0.5), label="relation",
                 descs=[Description(text="The dog sits beside the cat.", label="relation")])
    edges = [
        Edge(source="", text="dog", target="dog"),
        Edge(source="", text="cat", target="cat"),
        Edge(source="dog", text="tail", target="dog_tail"),
        Edge(source="", text="dog", target="[cat|dog]"),
        Edge(source="", text="cat", target="[cat|dog]"),
        Edge(source="[cat|dog]", text="dog", target="dog"),
        Edge(source="[cat|dog]", text="cat", target="cat"),
    ]
    vs = {v.vertex_id: v for v in (root, dog, cat, tail, rel)}
    for e in edges:
        vs[e.source].out_edges.append(e)
        vs[e.target].in_edges.append(e)
    return GbcGraph(vertices=list(vs.values()), img_path="a.jpg")


def test_reference_graphs_round_trip_and_are_valid(reference_jsonl):
    for line in reference_jsonl.read_text().splitlines():
        original = json.loads(line)
        graph = GbcGraph.from_json(line)
        assert graph.to_dict() == original
        assert json.loads(graph.to_json()) == original
        assert graph.validate() == []


def test_gbc10m_layout_drops_full_only_fields(reference_jsonl):
    graph = GbcGraph.from_json(reference_jsonl.read_text().splitlines()[0])
    slim = graph.to_dict(layout="gbc10m")
    assert set(slim) == {"vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption"}
    assert set(slim["vertices"][0]) == {"vertex_id", "bbox", "label", "descs", "in_edges", "out_edges"}
    assert set(slim["vertices"][0]["descs"][0]) == {"text", "label"}
    # a GBC10M record reads and writes back unchanged too
    assert GbcGraph.from_dict(slim).to_dict() == slim


def test_navigation():
    g = _tiny_graph()
    assert g.root.vertex_id == ""
    assert [(v.vertex_id, t) for v, t in g.children("")] == [("dog", "dog"), ("cat", "cat"), ("[cat|dog]", "dog"), ("[cat|dog]", "cat")]
    assert sorted((v.vertex_id, t) for v, t in g.parents("dog")) == [("", "dog"), ("[cat|dog]", "dog")]
    assert g.descendants("dog") == ["dog_tail"]
    assert g.depths() == {"": 0, "dog": 1, "cat": 1, "[cat|dog]": 1, "dog_tail": 2}
    assert g.depth == 2
    assert g.bfs_order() == ["", "dog", "cat", "[cat|dog]", "dog_tail"]
    assert g.dfs_order() == ["", "dog", "dog_tail", "cat", "[cat|dog]"]
    topo = g.topological_order()
    assert topo.index("[cat|dog]") < topo.index("dog") and topo.index("dog") < topo.index("dog_tail")
    assert [d.text for _, d in g.captions(desc_labels=["relation"])] == ["The dog sits beside the cat."]
    assert [v.vertex_id for v, _ in g.captions(vertex_labels=["image"])] == [""]
    assert g.n_vertices == 5 and g.n_edges == 7 and g.n_captions == 2


def test_to_networkx_carries_attributes():
    nxg = _tiny_graph().to_networkx()
    assert isinstance(nxg, nx.MultiDiGraph)
    assert nxg.number_of_nodes() == 5 and nxg.number_of_edges() == 7
    assert nxg.nodes["dog"]["label"] == "entity"
    assert nxg.nodes["dog"]["confidence"] == 0.9
    assert {d["text"] for _, _, d in nxg.edges("", data=True)} == {"dog", "cat"}
    assert nx.is_directed_acyclic_graph(nxg)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda g: g.vertices.append(g.vertices[1].model_copy()), "duplicate vertex id 'dog'"),
        (lambda g: g.vertex("dog").out_edges.append(Edge(source="dog", text="ear", target="dog_ear")), "points to a missing vertex"),
        (lambda g: g.vertex("cat").in_edges.pop(), "time(s) in out_edges but"),
        (lambda g: setattr(g.vertex("cat").bbox, "right", 1.5), "outside [0,1] or inverted"),
        (lambda g: setattr(g.vertex("cat").bbox, "left", 0.95), "outside [0,1] or inverted"),
        (lambda g: setattr(g.vertex("cat"), "label", "image"), "exactly one image vertex, found 2"),
        (lambda g: setattr(g.vertices[0], "label", "entity"), "exactly one image vertex, found 0"),
        (lambda g: _add_edge(g, "dog_tail", "dog"), "cycle"),
        (lambda g: _add_edge(g, "dog", ""), "image vertex '' has 1 in-edge"),
    ],
)
def test_validate_reports_each_violation(mutate, expected):
    g = _tiny_graph()
    assert g.validate() == []
    mutate(g)
    g.invalidate_caches()
    problems = g.validate()
    assert any(expected in p for p in problems), problems
    with pytest.raises(GraphValidationError) as err:
        g.validate(strict=True)
    assert expected in str(err.value)


def _add_edge(g, source, target):
    e = Edge(source=source, text="x", target=target)
    g.vertex(source).out_edges.append(e)
    g.vertex(target).in_edges.append(e)


def test_topological_order_raises_on_cycle():
    g = _tiny_graph()
    _add_edge(g, "dog_tail", "dog")
    with pytest.raises(ValueError, match="cycle"):
        g.topological_order()


def test_bbox_geometry():
    a = Bbox(left=0.0, top=0.0, right=0.5, bottom=0.5)
    b = Bbox(left=0.25, top=0.25, right=0.75, bottom=0.75)
    assert a.area() == 0.25
    assert a.intersection_area(b) == pytest.approx(0.0625)
    assert a.iou(b) == pytest.approx(0.0625 / 0.4375)
    assert Bbox(left=0.1, top=0.1, right=0.2, bottom=0.2).is_mostly_inside(a)
    assert not b.is_mostly_inside(a)
    assert a.is_overlapped(Bbox(left=0.0, top=0.0, right=0.5, bottom=0.52))
    inner = Bbox(left=0.5, top=0.5, right=1.0, bottom=1.0, confidence=0.7)
    glob = inner.to_global(b)
    assert glob.to_xyxy() == pytest.approx((0.5, 0.5, 0.75, 0.75)) and glob.confidence == 0.7
    assert glob.to_relative(b).to_xyxy() == pytest.approx(inner.to_xyxy())
    assert union_bboxes([a, b]).to_xyxy() == (0.0, 0.0, 0.75, 0.75)
    with pytest.raises(ValueError):
        union_bboxes([])
    assert Bbox(left=0.0, top=0.0, right=1.0, bottom=1.0).to_pixels(10, 20) == (0, 0, 10, 20)


def test_compute_masks_matches_reference(reference_jsonl):
    for line in reference_jsonl.read_text().splitlines()[:5]:
        g = GbcGraph.from_json(line)
        expected = {v.vertex_id: (v.sub_masks, v.super_masks) for v in g.vertices}
        g.compute_masks()
        assert {v.vertex_id: (v.sub_masks, v.super_masks) for v in g.vertices} == expected


def test_synthetic_graphs_have_gbc10m_size():
    for i in range(20):
        for layout in ("gbc10m", "full"):
            g = synthetic_graph(i, layout=layout)
            assert g.validate() == []
            assert (g.n_vertices, g.n_edges, g.n_captions) == (12, 22, 18)
    assert synthetic_graph(3).to_dict() == synthetic_graph(3).to_dict()


def test_edges_appended_in_place_are_written():
    g = _tiny_graph()  # built by appending to defaulted lists
    back = GbcGraph.from_json(g.to_json())
    assert back.n_edges == 7 and back.validate() == []
    assert GbcGraph.from_dict(g.to_dict()).n_edges == 7
    # a sparse record without edge lists still writes back unchanged
    sparse = {"vertices": [{"vertex_id": "", "bbox": {"left": 0, "top": 0, "right": 1, "bottom": 1}, "label": "image"}]}
    assert GbcGraph.from_dict(sparse).to_dict() == sparse
