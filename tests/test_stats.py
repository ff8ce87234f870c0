import json

import pytest

from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.synthetic import synthetic_graph
from gbc.stats import REFERENCE_FIGURES, GraphStats, Summary, compute_stats, format_stats, graph_depth


def _link(vertices, edges):
    index = {v.vertex_id: v for v in vertices}
    for e in edges:
        index[e.source].out_edges.append(e)
        index[e.target].in_edges.append(e.model_copy())
    return vertices


def _small_graph() -> GbcGraph:
    """Image -> dog (0.9), image -> trees composition of 2 trees, relation [dog|trees]; depth 2."""
    d = Description
    vertices = [
        Vertex(vertex_id="", bbox=Bbox.full(), label="image",
               descs=[d(text="a dog near two trees", label="detail"), d(text="a dog", label="short")]),
        Vertex(vertex_id="dog", bbox=Bbox(left=0, top=0, right=0.5, bottom=0.5, confidence=0.9), label="entity",
               descs=[d(text="brown dog", label="detail")]),
        Vertex(vertex_id="trees_0", bbox=Bbox(left=0.5, top=0, right=1, bottom=0.5, confidence=0.5), label="entity"),
        Vertex(vertex_id="trees_1", bbox=Bbox(left=0.5, top=0.5, right=1, bottom=1), label="entity"),
        Vertex(vertex_id="trees", bbox=Bbox(left=0.5, top=0, right=1, bottom=1), label="composition",
               descs=[d(text="two trees stand", label="composition"), d(text="tree 1 is above tree 2", label="hardcode")]),
        Vertex(vertex_id="[dog|trees]", bbox=Bbox.full(), label="relation",
               descs=[d(text="the dog sits left of the trees", label="relation")]),
    ]
    edges = [
        Edge(source="", text="dog", target="dog"),
        Edge(source="", text="trees", target="trees"),
        Edge(source="trees", text="tree 1", target="trees_0"),
        Edge(source="trees", text="tree 2", target="trees_1"),
        Edge(source="", text="dog", target="[dog|trees]"),
        Edge(source="", text="trees", target="[dog|trees]"),
        Edge(source="[dog|trees]", text="dog", target="dog"),
        Edge(source="[dog|trees]", text="trees", target="trees"),
    ]
    return GbcGraph(vertices=_link(vertices, edges), img_path="dog.jpg")


def test_small_graph_figures_by_hand():
    g = _small_graph()
    assert g.validate() == []
    s = compute_stats([g, g])
    assert s.n_graphs == 2 and s.n_failed is None
    assert (s.vertices.mean, s.edges.mean, s.captions.mean) == (6, 8, 6)
    assert s.words.mean == 5 + 2 + 2 + 3 + 6 + 7
    assert s.depth.histogram == {2: 2}
    assert {k: v.total for k, v in s.vertices_by_label.items()} == {
        "image": 2, "entity": 6, "composition": 2, "relation": 2}
    assert s.descs_by_label["hardcode"].mean == 1 and s.descs_by_label["original"].total == 0
    assert s.caption_words["detail-image"].mean == 5
    assert s.caption_words["hardcode-composition"].histogram == {6: 2}
    assert s.composition_size.histogram == {2: 2}
    assert s.relation_arity.histogram == {2: 2}
    assert s.descs_per_relation.histogram == {1: 2}
    assert s.entity_confidence.count == 4 and s.entity_confidence.mean == pytest.approx(0.7)
    assert (s.entity_confidence.min, s.entity_confidence.max) == (0.5, 0.9)
    assert s.entities_without_confidence == 2
    assert s.bbox_area["entity"].mean == pytest.approx(0.25)
    assert s.bbox_area["composition"].mean == pytest.approx(0.5)


def test_reference_file_matches_published_figures(reference_jsonl):
    graphs = (GbcGraph.from_json(line) for line in reference_jsonl.read_text().splitlines())
    s = compute_stats(graphs)
    assert s.n_graphs == 19
    assert round(s.vertices.mean, 1) == 12.2 and (s.vertices.min, s.vertices.max) == (2, 22)
    assert round(s.edges.mean, 1) == 19.4 and s.edges.max == 47
    assert s.vertices.total == 231 and s.edges.total == 368
    assert {k: v.total for k, v in s.vertices_by_label.items()} == {
        "image": 19, "entity": 143, "composition": 28, "relation": 41}
    assert {k: v.total for k, v in s.descs_by_label.items() if v.total} == {
        "detail": 162, "short": 109, "composition": 28, "hardcode": 110, "relation": 50}
    assert s.depth.histogram == {1: 3, 2: 5, 3: 8, 4: 3}
    assert s.composition_size.histogram == {2: 14, 3: 8, 4: 3, 5: 1, 6: 2}
    assert s.relation_arity.histogram == {2: 29, 3: 11, 4: 1}
    assert s.descs_per_relation.histogram == {1: 33, 2: 7, 3: 1}
    assert s.entities_without_confidence == 6
    assert round(s.entity_confidence.mean, 3) == 0.323
    assert (round(s.entity_confidence.min, 3), round(s.entity_confidence.max, 3)) == (0.051, 0.971)
    wiki_words = REFERENCE_FIGURES["wiki"]["caption_words"]
    assert {k: round(v.mean, 1) for k, v in s.caption_words.items()} == wiki_words
    assert round(s.bbox_area["entity"].mean, 3) == 0.161


def test_merge_of_shards_equals_one_pass():
    graphs = [synthetic_graph(i) for i in range(12)] + [_small_graph()]
    whole = compute_stats(graphs).to_dict()
    left, right = compute_stats(graphs[:5], n_failed=1), compute_stats(graphs[5:], n_failed=2)
    merged = left.merge(right).to_dict()
    assert merged.pop("failed") == 3
    whole.pop("failed")
    assert merged == whole


def test_consumes_a_generator_once_and_is_json_ready():
    consumed = []

    def gen():
        for i in range(30):
            consumed.append(i)
            yield synthetic_graph(i)

    s = compute_stats(gen(), n_failed=4)
    assert consumed == list(range(30))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["graphs"] == 30 and d["failed"] == 4
    assert d["per_graph"]["vertices"]["mean"] == pytest.approx(12.0)
    assert sum(d["per_graph"]["depth"]["histogram"].values()) == 30


def test_empty_input():
    s = compute_stats([], n_failed=0)
    d = s.to_dict()
    assert d["graphs"] == 0 and d["per_graph"]["vertices"]["mean"] is None
    text = format_stats(s)
    assert text.startswith("0 graphs, 0 failed")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], {"count": 0, "mean": None, "min": None, "max": None}),
        ([3], {"count": 1, "mean": 3.0, "min": 3, "max": 3}),
        ([1, 2, 6], {"count": 3, "mean": 3.0, "min": 1, "max": 6}),
        ([0.25, 0.75], {"count": 2, "mean": 0.5, "min": 0.25, "max": 0.75}),
    ],
)
def test_summary(values, expected):
    s = Summary()
    for v in values:
        s.add(v)
    d = s.to_dict()
    assert {k: d[k] for k in expected} == expected


def test_table_shows_figures_and_reference_columns():
    text = format_stats(compute_stats([_small_graph()]))
    lines = text.splitlines()
    vertices_row = next(line for line in lines if line.startswith("vertices"))
    assert vertices_row.split() == ["vertices", "6.0", "6", "6", "12.2", "12.12"]
    assert any(line.startswith("hardcode-composition") for line in lines)
    assert "relation arity: 2:1" in text
    assert "GBC1M dataset card" in text
    assert "GBC1M" not in format_stats(compute_stats([_small_graph()]), references=())


def test_stats_object_is_a_plain_accumulator():
    s = GraphStats()
    s.add(_small_graph())
    s.add(synthetic_graph(0))
    assert s.n_graphs == 2 and s.vertices.histogram[6] == 1


def test_fast_depth_equals_graph_depth(reference_jsonl):
    graphs = [GbcGraph.from_json(line) for line in reference_jsonl.read_text().splitlines()]
    graphs += [synthetic_graph(i) for i in range(5)] + [_small_graph(), GbcGraph()]
    # A graph whose only roots are non-image vertices, and one with a cycle below the root.
    cyc = _small_graph()
    cyc.vertex("dog").out_edges.append(Edge(source="dog", text="x", target=""))
    graphs += [cyc]
    for g in graphs:
        assert graph_depth(g) == g.depth
