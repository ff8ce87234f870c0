"""ScoreFilter on graphs whose scores are set here (no model needed)."""

import math
import random

import pytest

from gbc.schemas.description import ClipScores
from gbc.schemas.synthetic import synthetic_graph
from gbc.scoring.filters import ScoreFilter, check_label_key, filter_graphs, parse_min_clip


def _scored(seed, names=("a",), nan_every=0, toxic=None):
    """A synthetic graph whose captions carry random scores under ``names`` (every
    ``nan_every``-th one NaN) and toxicity scores."""
    rng = random.Random(seed)
    graph = synthetic_graph(seed, layout="full")
    i = 0
    for v in graph.vertices:
        for d in v.descs:
            i += 1
            scores = {n: rng.uniform(-0.1, 0.5) for n in names}
            if nan_every and i % nan_every == 0:
                scores[names[0]] = math.nan
            d.clip_scores = ClipScores(scores=scores, truncation=False)
            d.toxicity_scores = {"toxicity": rng.uniform(0, 1) if toxic is None else toxic, "insult": 0.01}
    return graph


def _captions(graphs):
    return [(v.label, d) for g in graphs for v in g.vertices for d in v.descs]


def test_min_clip_per_label_removes_exactly_the_captions_under_their_bar():
    graphs = [_scored(i) for i in range(6)]
    before = _captions([g.model_copy(deep=True) for g in graphs])
    flt = ScoreFilter(min_clip=parse_min_clip(["0.1", "detail-entity=0.3", "relation=0.0"])).fit(graphs)
    kept = list(filter_graphs(graphs, flt))

    def bar(vlabel, d):
        full = f"{d.label}-{vlabel}"
        return 0.3 if full == "detail-entity" else 0.0 if d.label == "relation" else 0.1

    expected = sorted(d.text for vl, d in before if d.clip_scores.scores["a"] >= bar(vl, d))
    assert sorted(d.text for _, d in _captions(kept)) == expected
    total = flt.summary.to_dict()
    assert sum(r["kept"] for r in total["captions"].values()) == len(expected)
    assert sum(r["dropped"] for r in total["captions"].values()) == len(before) - len(expected)
    for g in kept:
        assert g.validate() == []


def test_nan_scores_never_pass():
    graphs = [_scored(i, nan_every=3) for i in range(3)]
    flt = ScoreFilter(min_clip={"": -math.inf}, drop_bottom=0).fit(graphs)
    kept = list(filter_graphs(graphs, flt))
    assert all(math.isfinite(d.clip_scores.scores["a"]) for _, d in _captions(kept))
    assert flt.summary.reasons["unscored"] > 0
    # toxicity NaN too
    g = _scored(9, toxic=math.nan)
    assert ScoreFilter(max_toxicity=1.0).apply(g) is None


def test_drop_bottom_drops_the_lowest_percent_of_each_label():
    graphs = [_scored(i) for i in range(20)]
    by_label = {}
    for vl, d in _captions(graphs):
        by_label.setdefault(f"{d.label}-{vl}", []).append(d.clip_scores.scores["a"])
    flt = ScoreFilter(drop_bottom=10).fit(graphs)
    list(filter_graphs(graphs, flt))
    summary = flt.summary.to_dict()["captions"]
    for label, values in by_label.items():
        assert summary[label]["dropped"] == int(len(values) * 10 / 100), label
        assert summary[label]["kept"] + summary[label]["dropped"] == len(values)


def test_vertices_that_lose_every_caption_go_with_their_edges_and_the_result_validates():
    graph = _scored(3)
    entity = next(v for v in graph.vertices if v.label == "entity" and v.in_edges)
    for d in entity.descs:
        d.clip_scores.scores["a"] = -0.5
    for v in graph.vertices:
        if v is not entity:
            for d in v.descs:
                d.clip_scores.scores["a"] = 0.9
    flt = ScoreFilter(min_clip={"": 0.0}).fit([graph])
    out = flt.apply(graph)
    assert entity.vertex_id not in out
    assert all(entity.vertex_id not in (e.source, e.target) for v in out.vertices for e in v.in_edges + v.out_edges)
    assert all(entity.vertex_id not in (v.sub_masks or []) + (v.super_masks or []) for v in out.vertices)
    assert out.validate() == [] and flt.summary.vertices_removed == 1


def test_a_graph_whose_image_vertex_loses_every_caption_is_dropped():
    graph = _scored(1)
    for d in graph.root.descs:
        d.clip_scores.scores["a"] = -1.0
    flt = ScoreFilter(min_clip={"short-image": 0.0, "detail-image": 0.0}).fit([graph])
    assert flt.apply(graph) is None and flt.summary.graphs_dropped == 1


def test_the_short_caption_field_follows_a_dropped_short_caption():
    graph = _scored(1)
    short = next(d for d in graph.root.descs if d.label == "short")
    graph.short_caption = short.text
    short.clip_scores.scores["a"] = -1.0
    for d in graph.root.descs:
        if d is not short:
            d.clip_scores.scores["a"] = 1.0
    out = ScoreFilter(min_clip={"short-image": 0.0}).fit([graph]).apply(graph)
    assert out.short_caption is None


def test_unknown_score_names_are_one_error_listing_the_names_present():
    graphs = [_scored(0, names=("a", "b"))]
    with pytest.raises(ValueError, match=r"unknown score name\(s\) 'c'; names present: a, b"):
        ScoreFilter(min_clip={"": 0.1}, score_names=["c"]).fit(graphs)
    with pytest.raises(ValueError, match="no CLIP scores"):
        ScoreFilter(min_clip={"": 0.1}).fit([synthetic_graph(0)])


def test_scores_are_averaged_over_the_score_names():
    graph = _scored(0, names=("a", "b"))
    d = graph.root.descs[0]
    d.clip_scores.scores.update(a=0.1, b=0.3)
    flt = ScoreFilter(min_clip={"": 0.19}).fit([graph])
    assert flt.caption_verdict(d, "image") is None
    assert ScoreFilter(min_clip={"": 0.21}).fit([graph]).caption_verdict(d, "image") == "clip"
    assert ScoreFilter(min_clip={"": 0.11}, score_names=["a"]).fit([graph]).caption_verdict(d, "image") == "clip"


def test_max_toxicity_uses_the_highest_label():
    graph = _scored(0, toxic=0.4)
    assert ScoreFilter(max_toxicity=0.5).apply(graph.model_copy(deep=True)) is not None
    assert ScoreFilter(max_toxicity=0.3).apply(graph) is None


@pytest.mark.parametrize("key", ["", "relation", "detail-entity", "short-composition"])
def test_label_keys(key):
    assert check_label_key(key) == key


@pytest.mark.parametrize("bad", ["entity", "detail-foo", "x=0.1=2", "detail-entity=high", "nan"])
def test_bad_min_clip_values(bad):
    with pytest.raises(ValueError):
        parse_min_clip([bad])
