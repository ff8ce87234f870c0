"""A graph as the page draws it: vertices with colours, layout, captions cut into segments.

Captions are sent as segments (plain text, or an edge phrase with the child it names) rather
than as offsets, so the page never has to reconcile Python and JavaScript string indices and
never builds markup from text: every segment becomes a text node.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from gbc.annotators.text import find_mentions
from gbc.schemas.graph import GbcGraph, Vertex
from gbc.viz.render import LABEL_COLOURS, layered_layout, vertex_name


def colour_hex(label: str) -> str:
    r, g, b = LABEL_COLOURS.get(label, (128, 128, 128))
    return f"#{r:02x}{g:02x}{b:02x}"


def caption_segments(text: str, links: List[Tuple[int, int, str]]) -> List[Dict[str, str]]:
    """``text`` cut at the ``(start, end, target)`` links (overlaps: the earlier, then longer, wins)."""
    segments: List[Dict[str, str]] = []
    pos = 0
    for start, end, target in sorted(links, key=lambda t: (t[0], -(t[1] - t[0]))):
        if start < pos or end <= start or end > len(text):
            continue
        if start > pos:
            segments.append({"text": text[pos:start]})
        segments.append({"text": text[start:end], "target": target})
        pos = end
    if pos < len(text) or not segments:
        segments.append({"text": text[pos:]})
    return segments


def _links(graph: GbcGraph, v: Vertex) -> Dict[int, List[Tuple[int, int, str]]]:
    """Where each edge phrase of ``v`` occurs in ``v``'s captions: the recorded span, and every
    other mention. Edges to relations are left out: their phrases are the members' names, which
    already link to the members themselves."""
    index = graph.vertex_dict
    texts = [d.text for d in v.descs]
    links: Dict[int, List[Tuple[int, int, str]]] = {}
    for e in v.out_edges:
        child = index.get(e.target)
        if child is None or (child.label == "relation" and v.label != "relation"):
            continue
        if e.span is not None and 0 <= e.span.desc_index < len(texts):
            links.setdefault(e.span.desc_index, []).append((e.span.start, e.span.end, e.target))
        for desc_index, start, end in find_mentions(texts, e.text):
            links.setdefault(desc_index, []).append((start, end, e.target))
    return links


def _desc(d, links) -> Dict[str, Any]:
    clip = d.clip_scores.scores if d.clip_scores is not None and d.clip_scores.scores else None
    return {"label": d.label, "segments": caption_segments(d.text, links), "clip": clip,
            "toxicity": d.toxicity_scores or None}


def graph_payload(key: str, graph: GbcGraph) -> Dict[str, Any]:
    """Everything the page needs to draw and explore ``graph``."""
    positions = layered_layout(graph)
    depths = graph.depths()
    vertices = []
    for v in graph.vertices:
        links = _links(graph, v)
        x, layer = positions.get(v.vertex_id, (0.5, 0))
        b = v.bbox
        members = sorted({e.target for e in v.out_edges}) if v.label in ("composition", "relation") else []
        vertices.append({
            "id": v.vertex_id,
            "name": vertex_name(v),
            "label": v.label,
            "colour": colour_hex(v.label),
            "box": {"left": b.left, "top": b.top, "right": b.right, "bottom": b.bottom},
            "confidence": b.confidence,
            "depth": depths.get(v.vertex_id),
            "x": x,
            "layer": layer,
            "descs": [_desc(d, links.get(i, [])) for i, d in enumerate(v.descs)],
            "children": [{"target": e.target, "text": e.text} for e in v.out_edges],
            "parents": [{"source": e.source, "text": e.text} for e in v.in_edges],
            "members": members,
        })
    return {
        "key": key,
        "img_path": graph.img_path,
        "img_url": graph.img_url,
        "img_size": list(graph.img_size) if graph.img_size else None,
        "layers": max((p[1] for p in positions.values()), default=0) + 1,
        "colours": {label: colour_hex(label) for label in LABEL_COLOURS},
        "vertices": vertices,
    }


#: Characters of context shown on each side of a search hit.
SNIPPET_CONTEXT = 70


def search_words(text: str) -> List[str]:
    """The words and phrases of a search, lower-cased, without quotes or prefix stars."""
    found = []
    for i, piece in enumerate(text.split('"')):
        parts = [piece] if i % 2 else piece.split()
        found += [p.strip().rstrip("*").lower() for p in parts if any(ch.isalnum() for ch in p)]
    return found


def snippet(graph: GbcGraph, words: List[str], caption_label: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The first caption holding one of ``words`` (of ``caption_label`` when given), cut around the
    first hit, as segments with the hits marked."""
    if not words:
        return None
    pattern = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    matcher = re.compile(rf"(?<!\w)(?:{pattern})", re.IGNORECASE)
    for v in graph.vertices:
        for d in v.descs:
            if caption_label and d.label != caption_label:
                continue
            first = matcher.search(d.text)
            if first is None:
                continue
            start = max(0, first.start() - SNIPPET_CONTEXT)
            end = min(len(d.text), first.end() + SNIPPET_CONTEXT)
            piece = d.text[start:end]
            segments, pos = [], 0
            for m in matcher.finditer(piece):
                if m.start() > pos:
                    segments.append({"text": piece[pos:m.start()]})
                segments.append({"text": m.group(0), "hit": True})
                pos = m.end()
            if pos < len(piece):
                segments.append({"text": piece[pos:]})
            return {"vertex": v.vertex_id, "label": d.label, "segments": segments,
                    "cut_start": start > 0, "cut_end": end < len(d.text)}
    return None


def entry_payload(entry, row: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A list row: key, status, reason, counts (from the catalog when known)."""
    out = {"key": entry.key, "status": entry.status, "reason": entry.reason, "error_type": entry.error_type}
    if row:
        out.update(n_vertices=row.get("n_vertices"), n_captions=row.get("n_captions"))
    return out
