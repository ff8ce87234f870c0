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
