"""A picture of ``GraphStats``: histograms of graph size, depth, caption lengths and labels.

Published figures (``gbc.stats.REFERENCE_FIGURES``) are drawn beside the data where they
are known, so a new run can be compared with the reference pipeline's output at a glance.
matplotlib is imported here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

from gbc.stats import REFERENCE_FIGURES, GraphStats

#: Width in words of the bins of the caption-length histogram.
CAPTION_BIN_WORDS = 10
#: At most this many full labels (the most frequent) get a curve in the caption-length panel.
MAX_CAPTION_CURVES = 6
#: Figure size in inches and resolution of the saved picture.
FIGURE_SIZE = (13.0, 9.0)
DPI = 110

_DATA_COLOR = "#1f77b4"
_REF_STYLES = {"wiki": ("#ff7f0e", "--"), "GBC1M": ("#2ca02c", ":")}


def _fractions(hist: Dict[int, int]) -> Dict[int, float]:
    total = sum(hist.values())
    return {k: v / total for k, v in hist.items()} if total else {}


def plot_stats(
    stats: GraphStats,
    path: Union[str, Path],
    references: Iterable[str] = ("wiki", "GBC1M"),
    title: Optional[str] = None,
) -> Path:
    """Draw ``stats`` as four panels into a PNG (or any format matplotlib knows from the suffix);
    graphs with caption scores get a third row: CLIP score and toxicity distributions per label.

    >>> from gbc.stats import compute_stats  # doctest: +SKIP
    >>> plot_stats(compute_stats(graphs), "stats.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    refs = [r for r in references if r in REFERENCE_FIGURES]
    path = Path(path)
    score_panels = _score_panels(stats)
    rows = 3 if score_panels else 2
    fig, axes = plt.subplots(rows, 2, figsize=(FIGURE_SIZE[0], FIGURE_SIZE[1] * rows / 2))
    try:
        _vertices_panel(axes[0][0], stats, refs)
        _depth_panel(axes[0][1], stats, refs)
        _caption_panel(axes[1][0], stats, refs)
        _label_panel(axes[1][1], stats, refs)
        for ax, panel in zip(axes[2] if score_panels else (), score_panels):
            _score_panel(ax, *panel)
        if len(score_panels) == 1:
            axes[2][1].set_visible(False)
        head = title or f"{stats.n_graphs} graphs"
        if stats.n_failed is not None and title is None:
            head += f" ({stats.n_failed} failed images)"
        fig.suptitle(head, fontsize=14)
        if refs:
            fig.text(0.01, 0.005, "References: " + "; ".join(f"{r}: {REFERENCE_FIGURES[r]['source']}" for r in refs),
                     fontsize=8, color="#555555")
        fig.tight_layout(rect=(0, 0.02, 1, 0.97))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _vertices_panel(ax, stats: GraphStats, refs: Sequence[str]) -> None:
    hist = _fractions(stats.vertices.histogram or {})
    if hist:
        ax.bar(list(hist), list(hist.values()), width=0.9, color=_DATA_COLOR, alpha=0.8, label="this data")
    if stats.vertices.mean is not None:
        ax.axvline(stats.vertices.mean, color=_DATA_COLOR, lw=2, label=f"mean {stats.vertices.mean:.1f}")
    for ref in refs:
        mean = REFERENCE_FIGURES[ref].get("vertices")
        if mean is not None:
            color, style = _REF_STYLES.get(ref, ("#777777", "-."))
            ax.axvline(mean, color=color, ls=style, lw=2, label=f"{ref} mean {mean:g}")
    marks = list(hist) + [mean for ref in refs if (mean := REFERENCE_FIGURES[ref].get("vertices")) is not None]
    if marks:
        ax.set_xlim(min(marks) - 1.5, max(marks) + 1.5)
    ax.set_title("Vertices per graph")
    ax.set_xlabel("vertices")
    ax.set_ylabel("fraction of graphs")
    ax.legend(fontsize=8)


def _grouped_bars(ax, categories: List, series: Dict[str, Dict], colors: Dict[str, str]) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    xs = range(len(categories))
    for i, (name, values) in enumerate(series.items()):
        offsets = [x - 0.4 + width * (i + 0.5) for x in xs]
        ax.bar(offsets, [values.get(c, 0.0) for c in categories], width=width, color=colors[name], label=name,
               alpha=0.85)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(c) for c in categories])
    ax.legend(fontsize=8)


def _depth_panel(ax, stats: GraphStats, refs: Sequence[str]) -> None:
    series = {"this data": _fractions(stats.depth.histogram or {})}
    colors = {"this data": _DATA_COLOR}
    for ref in refs:
        hist = REFERENCE_FIGURES[ref].get("depth_histogram")
        if hist:
            series[ref] = _fractions(hist)
            colors[ref] = _REF_STYLES.get(ref, ("#777777", ""))[0]
    categories = sorted(set().union(*[set(s) for s in series.values()])) or [0]
    _grouped_bars(ax, categories, series, colors)
    ax.set_title("Depth (longest BFS level from the image vertex)")
    ax.set_xlabel("depth")
    ax.set_ylabel("fraction of graphs")


def _score_panels(stats: GraphStats) -> List[tuple]:
    """(title, x label, full label -> binned Summary) of the score panels: up to two, CLIP scores first."""
    panels = [(f"CLIP score '{name}' by full label", "cosine similarity (caption, region)", by_label)
              for name, by_label in stats.clip_scores.items()]
    if stats.toxicity:
        panels.append(("Toxicity by full label", "highest toxicity score of the caption", stats.toxicity))
    return panels[:2]


def _score_panel(ax, title: str, xlabel: str, by_label) -> None:
    import matplotlib

    ranked = sorted(by_label.items(), key=lambda kv: -kv[1].count)[:MAX_CAPTION_CURVES]
    cmap = matplotlib.colormaps["tab10"]
    for i, (full_label, summary) in enumerate(ranked):
        fractions = _fractions(summary.histogram or {})
        if not fractions:
            continue
        width = summary.bin_width
        bins = list(range(min(fractions), max(fractions) + 1))
        edges = [b * width for b in bins] + [(bins[-1] + 1) * width]
        ax.stairs([fractions.get(b, 0.0) for b in bins], edges, color=cmap(i % 10), lw=1.8,
                  label=f"{full_label} (mean {summary.mean:.3f}, n={summary.count})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of captions of that label")
    if ranked:
        ax.legend(fontsize=8)


def _caption_panel(ax, stats: GraphStats, refs: Sequence[str]) -> None:
    import matplotlib

    ranked = sorted(stats.caption_words.items(), key=lambda kv: -kv[1].count)[:MAX_CAPTION_CURVES]
    cmap = matplotlib.colormaps["tab10"]
    for i, (full_label, summary) in enumerate(ranked):
        binned: Dict[int, int] = {}
        for words, n in (summary.histogram or {}).items():
            b = words // CAPTION_BIN_WORDS * CAPTION_BIN_WORDS
            binned[b] = binned.get(b, 0) + n
        fractions = _fractions(binned)
        if not fractions:
            continue
        # Every bin between the shortest and the longest caption, empty ones included.
        xs = list(range(min(fractions), max(fractions) + CAPTION_BIN_WORDS, CAPTION_BIN_WORDS))
        edges = xs + [xs[-1] + CAPTION_BIN_WORDS]
        color = cmap(i % 10)
        ax.stairs([fractions.get(x, 0.0) for x in xs], edges, color=color, lw=1.8,
                  label=f"{full_label} (mean {summary.mean:.0f})")
        for ref in refs:
            ref_mean = (REFERENCE_FIGURES[ref].get("caption_words") or {}).get(full_label)
            if ref_mean is not None:
                ax.plot([ref_mean], [0], marker="^", ms=10, color=color, clip_on=False, ls="none")
    ax.set_title(f"Caption length by full label (bins of {CAPTION_BIN_WORDS} words)")
    ax.set_xlabel("words per caption   (triangles: wiki reference means)" if refs else "words per caption")
    ax.set_ylabel("fraction of captions of that label")
    if ranked:
        ax.legend(fontsize=8)


def _label_panel(ax, stats: GraphStats, refs: Sequence[str]) -> None:
    categories = list(stats.vertices_by_label)
    series = {"this data": {k: (s.mean or 0.0) for k, s in stats.vertices_by_label.items()}}
    colors = {"this data": _DATA_COLOR}
    for ref in refs:
        by_label = REFERENCE_FIGURES[ref].get("vertices_by_label")
        if by_label:
            series[ref] = dict(by_label)
            colors[ref] = _REF_STYLES.get(ref, ("#777777", ""))[0]
    _grouped_bars(ax, categories, series, colors)
    ax.set_title("Vertices per graph by label (mean)")
    ax.set_ylabel("vertices per graph")
