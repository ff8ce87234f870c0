"""Score filters: drop captions under a CLIP bar, in the bottom percent of their label, or too toxic.

The reference's way (``min_clip_scores`` per full label, e.g. ``detail-entity: 0.1533``) and
the DataComp way (drop the lowest k % of each caption label, measured over the whole input):

>>> flt = ScoreFilter(min_clip={"": 0.2, "detail-entity": 0.15}, drop_bottom=5, max_toxicity=0.5)  # doctest: +SKIP
>>> flt.fit(gbc.read_graphs("scored.jsonl"))        # score names present, percentiles  # doctest: +SKIP
>>> kept = [g for g in map(flt.apply, gbc.read_graphs("scored.jsonl")) if g is not None]  # doctest: +SKIP

A caption's CLIP score is the mean of its scores under ``score_names`` (all the names found
when ``fit`` scans the input, as the reference averages over its CLIP models). A caption
without a needed score, or with NaN, never passes. A vertex that loses every caption is removed
with every edge to or from it (and from the masks of other vertices); a graph whose image
vertex loses every caption is dropped. What remains still validates.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from gbc.schemas import GbcGraph
from gbc.schemas.description import DESC_LABELS, Description
from gbc.schemas.graph import VERTEX_LABELS

#: Why a caption was dropped (keys of ``FilterSummary.reasons``).
REASONS = ("clip", "bottom", "toxicity", "unscored")

_TOP_LEVEL_CAPTIONS = (("short", "short_caption"), ("detail", "detail_caption"), ("original", "original_caption"))


def check_label_key(key: str) -> str:
    """``""`` (every caption), a description label (``relation``) or a full label (``detail-entity``)."""
    if key == "" or key in DESC_LABELS:
        return key
    desc, _, vertex = key.partition("-")
    if desc in DESC_LABELS and vertex in VERTEX_LABELS:
        return key
    raise ValueError(f"unknown caption label {key!r}: expected a description label ({', '.join(DESC_LABELS)}) "
                     f"or a full label <description>-<vertex> such as detail-entity")


def parse_min_clip(values: Iterable[str]) -> Dict[str, float]:
    """``["0.2", "detail-entity=0.15"]`` -> ``{"": 0.2, "detail-entity": 0.15}``."""
    out: Dict[str, float] = {}
    for text in values:
        label, sep, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"bad --min-clip {text!r}: expected [LABEL=]VALUE, e.g. detail-entity=0.15") from None
        if not math.isfinite(value):
            raise ValueError(f"bad --min-clip {text!r}: the bar must be a finite number")
        out[check_label_key(label.strip())] = value
    return out


@dataclass
class FilterSummary:
    """Captions kept and dropped per full label, and why; vertices and graphs removed."""

    kept: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    graphs_read: int = 0
    graphs_dropped: int = 0
    vertices_removed: int = 0
    edges_removed: int = 0

    def to_dict(self) -> Dict:
        labels = sorted(set(self.kept) | set(self.dropped))
        return {
            "graphs_read": self.graphs_read, "graphs_kept": self.graphs_read - self.graphs_dropped,
            "graphs_dropped": self.graphs_dropped, "vertices_removed": self.vertices_removed,
            "edges_removed": self.edges_removed,
            "captions": {label: {"kept": self.kept[label], "dropped": self.dropped[label]} for label in labels},
            "reasons": {r: self.reasons[r] for r in REASONS if self.reasons[r]},
        }


@dataclass
class ScoreFilter:
    """Thresholds on caption scores; ``fit`` then ``apply`` each graph.

    ``min_clip``: label key (``""`` for all, a description label, or a full label; the most
    specific key applies) -> lowest CLIP score kept. ``drop_bottom``: percent of each full
    label's captions with the lowest CLIP scores dropped (percentiles over the fitted input).
    ``max_toxicity``: highest toxicity score (over all toxicity labels) kept.
    ``score_names``: CLIP score names averaged (default: all names found by ``fit``).
    """

    min_clip: Dict[str, float] = field(default_factory=dict)
    drop_bottom: Optional[float] = None
    max_toxicity: Optional[float] = None
    score_names: Optional[Sequence[str]] = None
    bottom_thresholds: Dict[str, float] = field(default_factory=dict)
    summary: FilterSummary = field(default_factory=FilterSummary)
    _fitted: bool = False

    def __post_init__(self) -> None:
        for key in self.min_clip:
            check_label_key(key)
        if self.drop_bottom is not None and not 0 <= self.drop_bottom < 100:
            raise ValueError(f"--drop-bottom must be a percentage in [0, 100), got {self.drop_bottom}")
        if self.max_toxicity is not None and not math.isfinite(self.max_toxicity):
            raise ValueError("--max-toxicity must be a finite number")

    @property
    def active(self) -> bool:
        return bool(self.min_clip) or self.drop_bottom is not None or self.max_toxicity is not None

    @property
    def uses_clip(self) -> bool:
        return bool(self.min_clip) or self.drop_bottom is not None

    # ------------------------------------------------------------------ fitting
    def fit(self, graphs: Iterable[GbcGraph]) -> "ScoreFilter":
        """Scan ``graphs`` once: check the score names and compute the drop-bottom thresholds.

        Raises ``ValueError`` naming the score names present when a requested one is absent.
        """
        present: Dict[str, None] = {}
        values: Dict[str, array] = {}
        wanted = list(self.score_names) if self.score_names else None
        for graph in graphs:
            for vertex in graph.vertices:
                for desc in vertex.descs:
                    scores = desc.clip_scores.scores if desc.clip_scores is not None else None
                    if not scores:
                        continue
                    for name in scores:
                        present.setdefault(name, None)
                    if self.drop_bottom is not None:
                        value = _mean_score(desc, wanted or list(scores))
                        if value is not None:
                            values.setdefault(_full_label(desc, vertex.label), array("d")).append(value)
        if self.uses_clip:
            names = list(present)
            if not names:
                raise ValueError("no CLIP scores found in the input: score it first with `gbc score`")
            if wanted:
                unknown = [n for n in wanted if n not in present]
                if unknown:
                    raise ValueError(f"unknown score name(s) {', '.join(map(repr, unknown))}; "
                                     f"names present: {', '.join(names)}")
            else:
                self.score_names = names
        if self.drop_bottom is not None:
            self.bottom_thresholds = {label: _percentile_bar(v, self.drop_bottom) for label, v in values.items()}
        self._fitted = True
        return self

    # ------------------------------------------------------------------ applying
    def caption_verdict(self, desc: Description, vertex_label: str) -> Optional[str]:
        """``None`` when the caption passes, else the reason it is dropped (see ``REASONS``)."""
        if self.uses_clip:
            if not self._fitted:
                raise RuntimeError("call ScoreFilter.fit(graphs) before applying CLIP filters")
            score = _mean_score(desc, self.score_names or [])
            if score is None:
                return "unscored"
            full_label = _full_label(desc, vertex_label)
            bar = self._min_clip_for(full_label, desc.label)
            if bar is not None and not score >= bar:
                return "clip"
            if self.drop_bottom is not None and not score >= self.bottom_thresholds.get(full_label, -math.inf):
                return "bottom"
        if self.max_toxicity is not None:
            values = list((desc.toxicity_scores or {}).values())
            if not values or any(not math.isfinite(v) for v in values):
                return "unscored"
            if max(values) > self.max_toxicity:
                return "toxicity"
        return None

    def _min_clip_for(self, full_label: str, desc_label: str) -> Optional[float]:
        for key in (full_label, desc_label, ""):
            if key in self.min_clip:
                return self.min_clip[key]
        return None

    def apply(self, graph: GbcGraph) -> Optional[GbcGraph]:
        """Filter ``graph`` in place; ``None`` when its image vertex loses every caption."""
        summary = self.summary
        summary.graphs_read += 1
        emptied: List[str] = []
        dropped_root_texts: List[str] = []
        for vertex in graph.vertices:
            if not vertex.descs:
                continue
            kept = []
            for desc in vertex.descs:
                label = _full_label(desc, vertex.label)
                reason = self.caption_verdict(desc, vertex.label)
                if reason is None:
                    kept.append(desc)
                    summary.kept[label] += 1
                else:
                    summary.dropped[label] += 1
                    summary.reasons[reason] += 1
                    if vertex.label == "image":
                        dropped_root_texts.append(desc.text)
            if len(kept) != len(vertex.descs):
                vertex.descs = kept
                if not kept:
                    emptied.append(vertex.vertex_id)
        root = next((v for v in graph.vertices if v.label == "image"), None)
        if root is not None and root.vertex_id in emptied:
            summary.graphs_dropped += 1
            return None
        if emptied:
            self._remove_vertices(graph, set(emptied))
        if dropped_root_texts:
            _sync_top_level_captions(graph, root, set(dropped_root_texts))
        return graph

    def _remove_vertices(self, graph: GbcGraph, removed: set) -> None:
        self.summary.vertices_removed += len(removed)
        graph.vertices = [v for v in graph.vertices if v.vertex_id not in removed]
        for v in graph.vertices:
            out_edges = [e for e in v.out_edges if e.target not in removed]
            if len(out_edges) != len(v.out_edges):
                self.summary.edges_removed += len(v.out_edges) - len(out_edges)
                v.out_edges = out_edges
            in_edges = [e for e in v.in_edges if e.source not in removed]
            if len(in_edges) != len(v.in_edges):
                v.in_edges = in_edges
            for name in ("sub_masks", "super_masks"):
                masks = getattr(v, name)
                if masks and any(m in removed for m in masks):
                    setattr(v, name, [m for m in masks if m not in removed])
        graph.invalidate_caches()


def _full_label(desc: Description, vertex_label: str) -> str:
    return f"{desc.label}-{vertex_label}"


def _mean_score(desc: Description, names: Sequence[str]) -> Optional[float]:
    """Mean of the caption's scores under ``names``; ``None`` when one is missing or not finite."""
    scores = desc.clip_scores.scores if desc.clip_scores is not None else None
    if not scores or not names:
        return None
    total = 0.0
    for name in names:
        value = scores.get(name)
        if value is None or not math.isfinite(value):
            return None
        total += value
    return total / len(names)


def _percentile_bar(values: array, percent: float) -> float:
    """The lowest score kept when the bottom ``percent`` of ``values`` is dropped."""
    ordered = sorted(values)
    drop = int(len(ordered) * percent / 100)
    return ordered[drop] if drop < len(ordered) else math.inf


def _sync_top_level_captions(graph: GbcGraph, root, dropped: set) -> None:
    """A top-level caption field that held a dropped caption of the image vertex takes the next
    caption of its label there (or ``None``), as the reference fills these fields."""
    for label, name in _TOP_LEVEL_CAPTIONS:
        current = getattr(graph, name)
        if current is None or current not in dropped:
            continue
        texts = [d.text for d in root.descs if d.label == label]
        setattr(graph, name, texts[0] if texts else None)


def filter_graphs(graphs: Iterable[GbcGraph], flt: ScoreFilter) -> Iterable[GbcGraph]:
    """``flt.apply`` over ``graphs``, leaving out dropped graphs (``flt`` must be fitted for CLIP bars)."""
    for graph in graphs:
        out = flt.apply(graph)
        if out is not None:
            yield out
