import pytest

from gbc.export.captions import (
    STRATEGIES,
    CaptionFilter,
    caption_rows,
    count_caption_types,
    get_strategy,
    structured_text,
)
from gbc.export.tokens import estimate_clip_tokens
from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.synthetic import synthetic_graph

EXACT_OFF = dict(exact_tokens=False)


def _graph(root_id=""):
    """image -> dog (entity, small box) -> ear (entity); image -> [dog|sofa] relation; sofa entity."""

    def v(vid, label, box, descs):
        return Vertex(vertex_id=vid, bbox=Bbox.from_xyxy(box), label=label,
                      descs=[Description(text=t, label=l) for t, l in descs])

    vs = {
        root_id: v(root_id, "image", (0, 0, 1, 1), [("A dog sleeps on a red sofa. The room is bright.", "detail"),
                                                   ("A dog on a sofa.", "short")]),
        "dog": v("dog", "entity", (0.1, 0.1, 0.3, 0.3), [("A brown dog with floppy ears.", "detail")]),
        "dog_ear": v("dog_ear", "entity", (0.1, 0.1, 0.12, 0.12), [("A floppy ear.", "detail")]),
        "sofa": v("sofa", "entity", (0.0, 0.2, 0.9, 0.9), [("A red sofa.", "detail"), ("sofa 1 is left.", "hardcode")]),
        "[dog|sofa]": v("[dog|sofa]", "relation", (0.0, 0.1, 0.9, 0.9), [("The dog lies on the sofa.", "relation")]),
    }
    edges = [(root_id, "dog", "dog"), ("dog", "ear", "dog_ear"), (root_id, "sofa", "sofa"),
             (root_id, "dog", "[dog|sofa]"), (root_id, "sofa", "[dog|sofa]"),
             ("[dog|sofa]", "dog", "dog"), ("[dog|sofa]", "sofa", "sofa")]
    for s, t, d in edges:
        e = Edge(source=s, text=t, target=d)
        vs[s].out_edges.append(e)
        vs[d].in_edges.append(e.model_copy())
    g = GbcGraph(vertices=list(vs.values()), img_path="x/dog.jpg", original_caption="dog sofa photo")
    assert g.validate() == []
    return g


@pytest.mark.parametrize(
    "strategy, flt, expected",
    [
        ("gbc-captions", {}, {"detail-image": 1, "short-image": 1, "detail-entity": 3, "relation-relation": 1}),
        ("gbc-captions", {"exclude_desc_labels": []}, {"detail-image": 1, "short-image": 1, "detail-entity": 3,
                                                       "relation-relation": 1, "hardcode-entity": 1}),
        ("gbc-captions", {"vertex_labels": ["entity"]}, {"detail-entity": 3}),
        ("gbc-captions", {"desc_labels": ["short", "relation"]}, {"short-image": 1, "relation-relation": 1}),
        ("gbc-captions", {"max_depth": 1}, {"detail-image": 1, "short-image": 1, "detail-entity": 2, "relation-relation": 1}),
        ("gbc-captions", {"min_box_size": 0.1}, {"detail-image": 1, "short-image": 1, "detail-entity": 2, "relation-relation": 1}),
        ("gbc-captions", {"max_tokens": 12}, {"detail-image": 2, "short-image": 1, "detail-entity": 3, "relation-relation": 1}),
        ("region", {"vertex_labels": ["entity", "relation"]}, {"detail-entity": 3, "relation-relation": 1}),
        ("short", {}, {"short-image": 1}),
        ("detail", {}, {"detail-image": 1}),
        ("detail", {"max_tokens": 12}, {"detail-image": 2}),
        ("original", {}, {"original-image": 1}),
        ("concat", {}, {"concat": 1}),
        ("concat", {"max_tokens": 20}, {"concat": 3}),
        ("structured", {}, {"structured": 2}),  # the outline is over 77 tokens: split between lines
        ("structured", {"max_tokens": None}, {"structured": 1}),
    ],
)
def test_strategy_rows_by_type(strategy, flt, expected):
    rows = caption_rows(_graph(), strategy, CaptionFilter(**{**EXACT_OFF, **flt}))
    assert dict(count_caption_types(rows)) == expected


def test_region_rows_carry_boxes_and_whole_image_rows_do_not():
    rows = caption_rows(_graph(), "region", CaptionFilter(**EXACT_OFF))
    boxes = {r.vertex_id: r.bbox for r in rows}
    assert boxes[""] is None
    assert boxes["dog"] == (0.1, 0.1, 0.3, 0.3)
    assert all(r.bbox is None for r in caption_rows(_graph(), "gbc-captions"))


def test_long_captions_split_at_sentences_within_limit():
    g = synthetic_graph(3)
    for strategy in ("gbc-captions", "detail", "concat"):
        rows = caption_rows(g, strategy, CaptionFilter(**EXACT_OFF))
        assert rows
        for r in rows:
            assert estimate_clip_tokens(r.text) <= 77
            assert r.text.endswith((".", "s")) or r.text[-1].isalpha()


def test_detail_chunks_rejoin_to_the_caption():
    g = _graph()
    rows = caption_rows(g, "detail", CaptionFilter(max_tokens=12, **EXACT_OFF))
    assert " ".join(r.text for r in rows) == g.vertices[0].descs[0].text


def test_no_limit_keeps_captions_whole():
    g = synthetic_graph(1)
    rows = caption_rows(g, "detail", CaptionFilter(max_tokens=None))
    assert [r.text for r in rows] == [g.vertices[0].descs[0].text]


def test_concat_follows_graph_order_parents_first():
    text = caption_rows(_graph(), "concat", CaptionFilter(max_tokens=None))[0].text
    assert text.index("A dog sleeps") < text.index("A brown dog") < text.index("A floppy ear")
    assert "sofa 1 is left" not in text


@pytest.mark.parametrize("root_id", ["", "image", "root"])
def test_structured_text_is_robust_to_root_id(root_id):
    text = structured_text(_graph(root_id))
    lines = text.splitlines()
    assert lines[0].startswith(f"{root_id or 'image'} [image]: A dog sleeps")
    assert "- dog [entity]: A brown dog with floppy ears." in lines
    assert "  - ear [entity]: A floppy ear." in lines
    assert "- dog, sofa [relation]: The dog lies on the sofa." in lines
    # vertices reached twice are written once, then referenced
    assert "  - dog [entity] (see above)" in lines
    assert sum("A brown dog" in line for line in lines) == 1


def test_structured_text_all_captions_and_filters():
    g = _graph()
    assert "The room is bright. A dog on a sofa." in structured_text(g, all_captions=True)
    assert "ear [entity]" in structured_text(g)
    assert "ear [entity]" not in structured_text(g, CaptionFilter(max_depth=1))


def test_structured_text_of_a_deep_chain_does_not_recurse():
    n = 3000
    vs = [Vertex(vertex_id="", bbox=Bbox.full(), label="image", descs=[Description(text="root", label="short")])]
    for i in range(n):
        vs.append(Vertex(vertex_id=f"v{i}", bbox=Bbox.full(), label="entity", descs=[Description(text=f"c{i}", label="detail")]))
    ids = [""] + [f"v{i}" for i in range(n)]
    for a, b in zip(ids, ids[1:]):
        e = Edge(source=a, text=b, target=b)
        vs[ids.index(a)].out_edges.append(e)
        vs[ids.index(b)].in_edges.append(e.model_copy())
    g = GbcGraph(vertices=vs)
    assert len(structured_text(g).splitlines()) == n + 1


def test_every_strategy_runs_on_synthetic_graphs():
    for name in STRATEGIES:
        for seed in range(5):
            rows = caption_rows(synthetic_graph(seed), name)
            assert all(r.text.strip() for r in rows)
            assert name == "original" or rows


@pytest.mark.parametrize("kwargs", [{"min_box_size": 2}, {"max_depth": -1}, {"max_tokens": -5}])
def test_filter_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        CaptionFilter(**kwargs)


def test_unknown_strategy_is_a_value_error():
    with pytest.raises(ValueError, match="unknown caption strategy"):
        get_strategy("nope")


@pytest.mark.parametrize("limit", [None, 0, 5, 20, 40, 77, 200])
def test_gbc_captions_rows_match_fitting_each_caption_alone(limit):
    # The caption loop inlines the fitter; its rows and drop counts must be those of
    # split_to_fit applied caption by caption.
    from gbc.export.tokens import estimate_clip_tokens, split_to_fit

    flt = CaptionFilter(max_tokens=limit, exact_tokens=False)
    odd = synthetic_graph(6)  # long texts of short words (they fit whole), words not seen before
    for i, d in enumerate(d for v in odd.vertices for d in v.descs):
        d.text = ["plain " * (10 + 7 * i), f"Zq{i}xw " * (3 + i) + "end. " + "Next one. " * i][i % 2]
    for graph in [synthetic_graph(seed) for seed in range(6)] + [odd]:
        batch = STRATEGIES["gbc-captions"](graph, flt)
        expected, dropped = [], 0
        for v in graph.vertices:
            for d in v.descs:
                if d.label == "hardcode" or not d.text.strip():
                    continue
                if limit:  # counted whole, then per sentence (a wrapper is not the estimate itself)
                    chunks, n = split_to_fit(d.text.strip(), lambda text: estimate_clip_tokens(text), limit)
                else:
                    chunks, n = [d.text.strip()], 0
                expected += [(c, f"{d.label}-{v.label}") for c in chunks]
                dropped += n
        assert [(r.text, r.caption_type) for r in batch.rows] == expected
        assert batch.dropped_sentences == dropped
