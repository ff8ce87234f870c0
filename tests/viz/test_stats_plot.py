import subprocess
import sys

import pytest
from PIL import Image

from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graphs
from gbc.stats import compute_stats
from gbc.viz.stats_plot import DPI, FIGURE_SIZE, plot_stats


def _check_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (int(FIGURE_SIZE[0] * DPI), int(FIGURE_SIZE[1] * DPI))
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # Drawn panels, not a blank canvas: many distinct colours and a good share of non-white pixels.
    assert len(colors) > 50
    white = sum(n for n, c in colors if c == (255, 255, 255))
    assert white < 0.95 * sum(n for n, _ in colors)


def test_plot_of_reference_graphs(reference_jsonl, tmp_path):
    graphs = (GbcGraph.from_json(line) for line in reference_jsonl.read_text().splitlines())
    out = plot_stats(compute_stats(graphs), tmp_path / "sub" / "stats.png")
    assert out == tmp_path / "sub" / "stats.png"
    _check_png(out)


@pytest.mark.parametrize("n, references", [(0, ("wiki", "GBC1M")), (5, ("wiki", "unknown"))])
def test_plot_edge_cases(tmp_path, n, references):
    stats = compute_stats(synthetic_graphs(n), n_failed=1)
    out = plot_stats(stats, tmp_path / "s.png", references=references)
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_matplotlib_is_imported_only_when_drawing():
    code = (
        "import sys, gbc, gbc.stats, gbc.viz.stats_plot\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _graphs_with_scores(n):
    import math

    from gbc.schemas.description import ClipScores

    graphs = list(synthetic_graphs(n))
    for gi, g in enumerate(graphs):
        for vi, v in enumerate(g.vertices):
            for di, d in enumerate(v.descs):
                value = math.nan if (gi, vi, di) == (0, 0, 0) else ((gi * 7 + vi * 3 + di) % 40) / 100
                d.clip_scores = ClipScores(scores={"l14": value}, truncation=False)
                d.toxicity_scores = {"toxicity": value / 10 if value == value else 0.0, "insult": 0.001}
    return graphs


def test_score_distributions_are_counted_per_label_and_plotted(tmp_path):
    graphs = _graphs_with_scores(6)
    stats = compute_stats(graphs)
    data = stats.to_dict()
    finite = [(f"{d.label}-{v.label}", d.clip_scores.scores["l14"]) for g in graphs for v in g.vertices for d in v.descs
              if d.clip_scores.scores["l14"] == d.clip_scores.scores["l14"]]
    counts = {label: sum(1 for lab, _ in finite if lab == label) for label, _ in finite}
    assert {k: s["count"] for k, s in data["clip_scores"]["l14"].items()} == counts  # NaN left out
    assert sum(sum(s["histogram"].values()) for s in data["clip_scores"]["l14"].values()) == len(finite)
    assert set(data["toxicity_max"]) == set(counts) | {"short-image"}
    out = plot_stats(stats, tmp_path / "scores.png")
    with Image.open(out) as im:
        # a third row of panels
        assert im.size == (int(FIGURE_SIZE[0] * DPI), int(FIGURE_SIZE[1] * 1.5 * DPI))
    merged = compute_stats(graphs[:3]).merge(compute_stats(graphs[3:]))
    assert merged.to_dict()["clip_scores"] == data["clip_scores"]


def test_graphs_without_scores_have_no_score_entries():
    data = compute_stats(synthetic_graphs(3)).to_dict()
    assert "clip_scores" not in data and "toxicity_max" not in data
