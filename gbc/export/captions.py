"""Caption strategies: functions from a graph to caption rows for CLIP training.

A strategy takes a ``GbcGraph`` and a ``CaptionFilter`` and returns ``CaptionRow``s. Each row
is one training text; ``bbox`` is ``None`` for a caption of the whole image and the vertex box
for a region crop. ``caption_type`` names where the text comes from (``"short-image"``,
``"detail-entity"``, ``"relation-relation"``, ..., ``"concat"``, ``"structured"``); the export
summary counts rows per caption type.

>>> from gbc.schemas.synthetic import synthetic_graph
>>> rows = caption_rows(synthetic_graph(0), "gbc-captions")
>>> sorted({r.caption_type for r in rows})[:3]
['composition-composition', 'detail-entity', 'detail-image']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import msgspec

from gbc.export.tokens import (
    CLIP_MAX_TOKENS,
    LONG_TEXT_CHARS_PER_TOKEN,
    cached_chunk_costs,
    clip_token_counter,
    estimate_body_limit,
    estimate_clip_tokens,
    estimate_split_to_fit,
    split_long,
    split_to_fit,
)
from gbc.schemas import GbcGraph, Vertex

#: Description labels left out unless asked for: the composition geometry hints
#: ("tree 1 is to the left of tree 2") are generated, not written by the model.
DEFAULT_EXCLUDED_DESC_LABELS: FrozenSet[str] = frozenset({"hardcode"})


@dataclass(frozen=True)
class CaptionFilter:
    """Which captions a strategy may use, and how long they may be.

    - ``vertex_labels`` / ``desc_labels``: keep only these labels (``None``: all).
    - ``exclude_desc_labels``: description labels always dropped (default ``{"hardcode"}``).
    - ``min_box_size``: minimum width and height of a vertex box, relative to the image
      (0.0 keeps all; never applied to the image vertex).
    - ``max_depth``: deepest vertex level kept (the image is level 0; ``None``: no limit).
    - ``max_tokens``: CLIP token limit of a text, start/end tokens included (default 77;
      ``None`` or 0: no limit). Longer captions are split at sentence boundaries into
      chunks that fit, each its own row; a single sentence over the limit is dropped and
      counted, never cut. The ``structured`` outline is split between its lines (a line
      too long on its own is split at sentence boundaries), so each row is still an outline.
    - ``exact_tokens``: ``None`` uses the exact CLIP tokenizer when its merge table is
      found, else the conservative estimate; ``True`` requires it; ``False`` forces the
      estimate (see ``gbc.export.tokens``).
    """

    vertex_labels: Optional[FrozenSet[str]] = None
    desc_labels: Optional[FrozenSet[str]] = None
    exclude_desc_labels: FrozenSet[str] = DEFAULT_EXCLUDED_DESC_LABELS
    min_box_size: float = 0.0
    max_depth: Optional[int] = None
    max_tokens: Optional[int] = CLIP_MAX_TOKENS
    exact_tokens: Optional[bool] = None

    def __post_init__(self):
        for name in ("vertex_labels", "desc_labels", "exclude_desc_labels"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))
        if not 0.0 <= self.min_box_size <= 1.0:
            raise ValueError(f"min_box_size must lie in [0, 1], got {self.min_box_size}")
        if self.max_depth is not None and self.max_depth < 0:
            raise ValueError(f"max_depth must be >= 0, got {self.max_depth}")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")

    def token_counter(self) -> Tuple[Callable[[str], int], str]:
        return clip_token_counter(self.exact_tokens)

    def keeps_desc(self, label: str) -> bool:
        if label in self.exclude_desc_labels:
            return False
        return self.desc_labels is None or label in self.desc_labels

    def kept_vertices(self, graph: GbcGraph) -> List[Vertex]:
        """The graph's vertices that pass the label, box-size and depth filters, in graph order."""
        if self.vertex_labels is None and self.min_box_size <= 0 and self.max_depth is None:
            return list(graph.vertices)  # the default filter keeps every vertex
        depths = graph.depths() if self.max_depth is not None else None
        out = []
        for v in graph.vertices:
            if self.vertex_labels is not None and v.label not in self.vertex_labels:
                continue
            if v.label != "image" and self.min_box_size > 0 and (
                v.bbox.width < self.min_box_size or v.bbox.height < self.min_box_size
            ):
                continue
            if depths is not None and depths.get(v.vertex_id, 0) > self.max_depth:
                continue
            out.append(v)
        return out


class CaptionRow(msgspec.Struct, gc=False):
    """One training text. ``bbox`` (relative xyxy) is set when the text describes a region crop.

    A msgspec struct: made in C (one per caption of every graph exported), compared and
    printed like a dataclass. Its fields are strings, None and a tuple of floats, which can
    never hold a reference cycle: the cyclic garbage collector does not track rows.
    """

    text: str
    caption_type: str
    vertex_id: Optional[str] = None
    vertex_label: Optional[str] = None
    desc_label: Optional[str] = None
    bbox: Optional[Tuple[float, float, float, float]] = None


@dataclass
class RowBatch:
    """The rows of one graph, with the number of sentences dropped for exceeding the limit."""

    rows: List[CaptionRow] = field(default_factory=list)
    dropped_sentences: int = 0


class _Fitter:
    """Applies the token limit of a filter (counter created once per strategy call)."""

    def __init__(self, flt: CaptionFilter):
        self.limit = flt.max_tokens or None
        self.count = flt.token_counter()[0] if self.limit else None
        self.dropped = 0

    def fit(self, text: str) -> List[str]:
        text = text.strip()
        if not text:
            return []
        if self.limit is None:
            return [text]
        # Fast path: a short ASCII text cannot exceed the limit even if each character were a
        # token (both counters give at most one token per byte, plus start/end and margin).
        if text.isascii() and len(text) * 1.1 + 3 <= self.limit:
            return [text]
        chunks, dropped = split_to_fit(text, self.count, self.limit)
        self.dropped += dropped
        return chunks

    def fit_lines(self, text: str) -> List[str]:
        """Like ``fit`` for a text whose lines belong together: whole lines are packed into
        chunks that fit (joined by newlines); a line over the limit alone is split at its
        sentence boundaries."""
        if self.limit is None or self.count(text) <= self.limit:
            return [text] if text.strip() else []
        pieces: List[Tuple[str, int]] = []
        for line in text.split("\n"):
            n = self.count(line)
            if n <= self.limit:
                pieces.append((line, n))
                continue
            chunks, dropped = split_long(line, self.count, self.limit)
            self.dropped += dropped
            pieces.extend((chunk, self.count(chunk)) for chunk in chunks)
        # Both counters add up over whitespace-separated text (the estimate rounds up each
        # part), so the sum of the parts' bodies bounds the count of their join.
        out: List[str] = []
        current: List[str] = []
        used = 2  # start and end tokens of the chunk being filled
        for piece, n in pieces:
            if current and used + n - 2 > self.limit:
                out.append("\n".join(current))
                current, used = [], 2
            current.append(piece)
            used += n - 2
        if current:
            out.append("\n".join(current))
        return out


#: ``(desc label, vertex label)`` -> caption type; labels come from a small vocabulary, so
#: each type string is formatted once per process rather than once per row.
_CAPTION_TYPES: Dict[Tuple[str, str], str] = {}


def _caption_type(desc_label: str, vertex_label: str) -> str:
    ctype = _CAPTION_TYPES.get((desc_label, vertex_label))
    if ctype is None:
        ctype = f"{desc_label}-{vertex_label}"
        if len(_CAPTION_TYPES) < 4096:  # bounded: labels are free text in hand-made graphs
            _CAPTION_TYPES[(desc_label, vertex_label)] = ctype
    return ctype


def _vertex_rows(vertices: Iterable[Vertex], flt: CaptionFilter, fitter: _Fitter, with_box: bool) -> List[CaptionRow]:
    # The hot loop of a text-only export (~18 captions per graph): the label filter, the
    # caption type table and the fitter's checks are inlined here to save calls per caption.
    rows: List[CaptionRow] = []
    append = rows.append
    excluded = flt.exclude_desc_labels
    wanted = flt.desc_labels
    limit = fitter.limit
    count = fitter.count
    types = _CAPTION_TYPES
    # With the estimate, a text fits when its cached chunk costs add up to at most body_limit
    # (the same test as count(text) <= limit, without a call and rounding per caption).
    if count is estimate_clip_tokens:
        body_limit = estimate_body_limit(limit)
        cost = cached_chunk_costs().__getitem__
        long_text = LONG_TEXT_CHARS_PER_TOKEN * limit  # split_to_fit's rule, written out
    else:
        body_limit = cost = long_text = None
    for v in vertices:
        vlabel = v.label
        box = v.bbox.to_xyxy() if with_box and vlabel != "image" else None
        vid = v.vertex_id
        for d in v.descs:
            dlabel = d.label
            if dlabel in excluded or (wanted is not None and dlabel not in wanted):
                continue
            text = d.text.strip()
            if not text:
                continue
            ctype = types.get((dlabel, vlabel)) or _caption_type(dlabel, vlabel)
            # _Fitter.fit written out: the short-text fast path (the same expression, so the
            # same floating-point result at the boundary), then one count for a text that fits
            # whole (most captions), and sentence packing only for the rest; long texts are
            # counted per sentence straight away.
            if limit is None or (text.isascii() and len(text) * 1.1 + 3 <= limit):
                append(CaptionRow(text, ctype, vid, vlabel, dlabel, box))
                continue
            if long_text is not None and len(text) > long_text:
                chunks, dropped = estimate_split_to_fit(text, limit)  # [text] when it fits after all
            else:
                if cost is None:
                    fits = count(text) <= limit
                else:
                    try:
                        fits = sum(map(cost, text.split())) <= body_limit
                    except KeyError:  # a chunk not seen yet: the estimate counts and remembers it
                        fits = count(text) <= limit
                if fits:
                    append(CaptionRow(text, ctype, vid, vlabel, dlabel, box))
                    continue
                chunks, dropped = split_long(text, count, limit)
            fitter.dropped += dropped
            for chunk in chunks:
                append(CaptionRow(chunk, ctype, vid, vlabel, dlabel, box))
    return rows


def gbc_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """Every caption of every kept vertex as its own row for the whole image (multiple positives)."""
    fitter = _Fitter(flt)
    rows = _vertex_rows(flt.kept_vertices(graph), flt, fitter, with_box=False)
    return RowBatch(rows, fitter.dropped)


def region_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """Every caption of every kept vertex, paired with the crop of that vertex's box."""
    fitter = _Fitter(flt)
    rows = _vertex_rows(flt.kept_vertices(graph), flt, fitter, with_box=True)
    return RowBatch(rows, fitter.dropped)


def _image_vertex(graph: GbcGraph) -> Optional[Vertex]:
    for v in graph.vertices:
        if v.label == "image":
            return v
    return None


def _image_level(graph: GbcGraph, flt: CaptionFilter, desc_label: str, fallback: Optional[str]) -> RowBatch:
    fitter = _Fitter(flt)
    root = _image_vertex(graph)
    texts: List[str] = []
    vertex_id = None
    if root is not None:
        vertex_id = root.vertex_id
        texts = [d.text for d in root.descs if d.label == desc_label]
    if not texts and fallback:
        texts = [fallback]
    rows = [
        CaptionRow(chunk, f"{desc_label}-image", vertex_id, "image", desc_label)
        for text in texts
        for chunk in fitter.fit(text)
    ]
    return RowBatch(rows, fitter.dropped)


def short_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """The short caption of the image (``short_caption`` when the image vertex has none)."""
    return _image_level(graph, flt, "short", graph.short_caption)


def detail_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """The detailed caption of the image, split into sentence chunks that fit the limit."""
    return _image_level(graph, flt, "detail", graph.detail_caption)


def original_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """The original alt-text of the image (``original_caption``), when the record has one."""
    return _image_level(graph, flt, "original", graph.original_caption)


def _graph_order(graph: GbcGraph) -> List[str]:
    try:
        return graph.topological_order()
    except ValueError:
        # An invalid (cyclic) graph still exports: fall back to breadth-first order.
        return graph.bfs_order()


def concat_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """All kept captions in graph order (parents before children) joined by spaces.

    Under a token limit the joined text is split into sentence chunks, one row each.
    """
    fitter = _Fitter(flt)
    kept = {v.vertex_id for v in flt.kept_vertices(graph)}
    index = graph.vertex_dict
    texts = [
        d.text.strip()
        for vid in _graph_order(graph)
        if vid in kept
        for d in index[vid].descs
        if flt.keeps_desc(d.label) and d.text.strip()
    ]
    rows = [CaptionRow(chunk, "concat") for chunk in fitter.fit(" ".join(texts))]
    return RowBatch(rows, fitter.dropped)


def structured_text(graph: GbcGraph, flt: CaptionFilter = CaptionFilter(), all_captions: bool = False) -> str:
    """The graph as an indented outline: each child is introduced by the phrase that names it.

    A vertex is written in full at its first appearance (depth-first from the roots, whatever
    their ids); later references say ``(see above)``. Several edges from one parent to the
    same child (relation members) are listed together. Without ``all_captions`` each vertex
    shows its first kept caption.

    >>> from gbc.schemas.synthetic import synthetic_graph
    >>> print(structured_text(synthetic_graph(0)).splitlines()[1][:17])
    - cloud [entity]:
    """
    kept = {v.vertex_id for v in flt.kept_vertices(graph)}
    index = graph.vertex_dict
    written: set = set()
    lines: List[str] = []

    def caption(v: Vertex) -> str:
        texts = [" ".join(d.text.split()) for d in v.descs if flt.keeps_desc(d.label) and d.text.strip()]
        if not texts:
            return ""
        return " ".join(texts) if all_captions else texts[0]

    def grouped_children(v: Vertex) -> List[Tuple[str, str]]:
        phrases: Dict[str, List[str]] = {}
        for e in v.out_edges:
            if e.target in index and e.target in kept:
                names = phrases.setdefault(e.target, [])
                if e.text not in names:
                    names.append(e.text)
        return [(target, ", ".join(names)) for target, names in phrases.items()]

    # Iterative depth-first walk: deep graphs must not hit the recursion limit.
    roots = [v for v in graph.roots if v.vertex_id in kept]
    stack: List[Tuple[Vertex, Optional[str], int]] = [(v, None, 0) for v in reversed(roots)]
    while stack:
        v, phrase, level = stack.pop()
        indent = "  " * max(level - 1, 0) + ("- " if level else "")
        name = phrase if phrase is not None else (v.vertex_id or v.label)
        if v.vertex_id in written:
            lines.append(f"{indent}{name} [{v.label}] (see above)")
            continue
        written.add(v.vertex_id)
        text = caption(v)
        lines.append(f"{indent}{name} [{v.label}]" + (f": {text}" if text else ""))
        for target, child_phrase in reversed(grouped_children(v)):
            stack.append((index[target], child_phrase, level + 1))
    return "\n".join(lines)


def structured_captions(graph: GbcGraph, flt: CaptionFilter = CaptionFilter()) -> RowBatch:
    """``structured_text(graph)`` as one row, or under a token limit as several rows that fit,
    split between the outline's lines (see ``CaptionFilter``)."""
    fitter = _Fitter(flt)
    rows = [CaptionRow(chunk, "structured") for chunk in fitter.fit_lines(structured_text(graph, flt))]
    return RowBatch(rows, fitter.dropped)


#: Strategy name -> function(graph, filter) -> RowBatch.
STRATEGIES: Dict[str, Callable[[GbcGraph, CaptionFilter], RowBatch]] = {
    "gbc-captions": gbc_captions,
    "short": short_captions,
    "detail": detail_captions,
    "original": original_captions,
    "concat": concat_captions,
    "structured": structured_captions,
    "region": region_captions,
}


def get_strategy(name: str) -> Callable[[GbcGraph, CaptionFilter], RowBatch]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown caption strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None


def caption_rows(graph: GbcGraph, strategy: str = "gbc-captions", flt: CaptionFilter = CaptionFilter()) -> List[CaptionRow]:
    """The rows of ``graph`` under the named strategy."""
    return get_strategy(strategy)(graph, flt).rows


def count_caption_types(rows: Iterable[CaptionRow]) -> Counter:
    return Counter(r.caption_type for r in rows)
