"""Composition queries: spatial hints from the member boxes and the numbered-box picture.

A composition vertex groups the k >= 2 boxes found for one tag (``trees`` -> ``tree 1`` ...
``tree k``). The MLLM is shown the group's crop with each box outlined and numbered, plus
hint sentences computed from the geometry, phrased exactly like the ``hardcode`` captions
of the released GBC data:

- a Euclidean minimum spanning tree over the box centres, rooted at a member chosen at random
  among six criteria (leftmost, rightmost, topmost, bottommost, median x, median y), is walked
  depth first (children in member order);
- for each member in that order: its *position hint* if it has a notable place
  (``"tree 2 is on the left side of the composition"``, ``"... in the top left corner of the
  composition"``), then for each child the *edge hint* (``"tree 4 is to the left of tree
  2."``, ``"tree 1 is above and to the left of tree 4."``) followed by the child's own hints.

All randomness comes from the ``random.Random`` passed in, so hints are reproducible.

>>> import random
>>> spatial_hints(["tree 1", "tree 2"], [(0.0, 0.0, 0.3, 1.0), (0.7, 0.0, 1.0, 1.0)],
...               random.Random(0), root="leftmost")
['tree 1 is on the left side of the composition', 'tree 2 is to the right of tree 1.', \
'tree 2 is on the right side of the composition']
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

from gbc.schemas import Bbox

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "ROOT_CRITERIA",
    "POSITION_MARGIN",
    "CENTER_BAND",
    "SHORT_DIAGONAL_PROBABILITY",
    "SpatialLayout",
    "spatial_layout",
    "spatial_hints",
    "draw_numbered_boxes",
]

#: How the root of the spanning tree is picked (one uniformly at random per query).
ROOT_CRITERIA: tuple[str, ...] = ("leftmost", "rightmost", "topmost", "bottommost", "median_x", "median_y")

#: A box closer than this to a crop border (relative units) is "at" that border.
POSITION_MARGIN = 0.1

#: A box whose centre lies strictly inside this band on both axes is "in the center".
CENTER_BAND = (0.4, 0.6)

#: Probability of the short diagonal phrasing ("to the top-left of") over the long one
#: ("above and to the left of").
SHORT_DIAGONAL_PROBABILITY = 0.4

BoxLike = Union[Bbox, Sequence[float]]

# Eight 45-degree sectors of the angle from parent to child centre (image y axis points down),
# starting at "right" and turning clockwise on screen. Diagonals: (short corner, long form).
_SECTORS: tuple[Union[str, tuple[str, str]], ...] = (
    "to the right of",
    ("bottom-right", "below and to the right of"),
    "below",
    ("bottom-left", "below and to the left of"),
    "to the left of",
    ("top-left", "above and to the left of"),
    "above",
    ("top-right", "above and to the right of"),
)


@dataclass(frozen=True)
class SpatialLayout:
    """Hints of a composition and the member order of the tree walk (for the prompt)."""

    hints: list[str]
    order: list[int]
    root: int


def _xyxy(box: BoxLike) -> tuple[float, float, float, float]:
    if isinstance(box, Bbox):
        return box.to_xyxy()
    left, top, right, bottom = (float(v) for v in box)
    return left, top, right, bottom


def _pick_root(criterion: str, centres: Sequence[tuple[float, float]]) -> int:
    n = len(centres)
    xs = [c[0] for c in centres]
    ys = [c[1] for c in centres]
    if criterion == "leftmost":
        return min(range(n), key=lambda i: xs[i])
    if criterion == "rightmost":
        return max(range(n), key=lambda i: xs[i])
    if criterion == "topmost":
        return min(range(n), key=lambda i: ys[i])
    if criterion == "bottommost":
        return max(range(n), key=lambda i: ys[i])
    if criterion == "median_x":
        return sorted(range(n), key=lambda i: xs[i])[n // 2]
    if criterion == "median_y":
        return sorted(range(n), key=lambda i: ys[i])[n // 2]
    raise ValueError(f"unknown root criterion {criterion!r}; known: {list(ROOT_CRITERIA)}")


def _axis_position(centre: float, centres, start: float, end: float, names: tuple[str, str]) -> Optional[str]:
    """Where a box lies along one axis: ``<low>most``/``<high>most`` (extreme centre, in that
    half), ``<low>``/``<high>`` (touching that margin, in that half), ``center`` or None."""
    low_name, high_name = names
    if centre == min(centres) and end < 0.5:
        return low_name + "most"
    if centre == max(centres) and start > 0.5:
        return high_name + "most"
    if start < POSITION_MARGIN and end < 0.5:
        return low_name
    if end > 1 - POSITION_MARGIN and start > 0.5:
        return high_name
    if CENTER_BAND[0] < centre < CENTER_BAND[1]:
        return "center"
    return None


def _position_hint(name: str, box: tuple[float, float, float, float], centres_rel, index: int) -> Optional[str]:
    left, top, right, bottom = box
    cx, cy = centres_rel[index]
    horizontal = _axis_position(cx, [c[0] for c in centres_rel], left, right, ("left", "right"))
    vertical = _axis_position(cy, [c[1] for c in centres_rel], top, bottom, ("top", "bottom"))
    side = {"leftmost": "left", "left": "left", "rightmost": "right", "right": "right"}.get(horizontal or "")
    level = {"topmost": "top", "top": "top", "bottommost": "bottom", "bottom": "bottom"}.get(vertical or "")
    extreme = horizontal in ("leftmost", "rightmost") or vertical in ("topmost", "bottommost")
    if side and level and extreme:
        where = f"in the {level} {side} corner"
    elif horizontal == "leftmost":
        where = "on the left side"
    elif horizontal == "rightmost":
        where = "on the right side"
    elif vertical == "topmost":
        where = "at the top"
    elif vertical == "bottommost":
        where = "at the bottom"
    elif horizontal == "center" and vertical == "center":
        where = "in the center"
    else:
        return None  # a plain border position alone is not worth a hint
    return f"{name} is {where} of the composition"


def _edge_hint(child: str, parent: str, dx: float, dy: float, rng: random.Random) -> str:
    sector = int(round(math.degrees(math.atan2(dy, dx)) / 45.0)) % 8
    phrase = _SECTORS[sector]
    if isinstance(phrase, tuple):
        corner, long_form = phrase
        phrase = f"to the {corner} of" if rng.random() < SHORT_DIAGONAL_PROBABILITY else long_form
    return f"{child} is {phrase} {parent}."


def _spanning_tree(points: Sequence[tuple[float, float]]) -> dict[int, list[int]]:
    """Neighbours of each point in the minimum spanning tree of the complete distance graph.

    Kruskal's algorithm as networkx runs it (edges ``(i, j)``, ``i < j``, in lexicographic
    order, stably sorted by length, each kept when it joins two components), so ties are
    broken the same way; written out because building a networkx graph costs far more than
    the few members of a composition need.
    """
    n = len(points)
    edges = []
    for i in range(n):
        for j in range(i + 1, n):
            length = math.dist(points[i], points[j])
            if math.isnan(length):
                raise ValueError(f"NaN found as an edge weight. Edge {(i, j, {'weight': length})}")
            edges.append((length, i, j))
    edges.sort(key=lambda e: e[0])
    root = list(range(n))

    def find(k: int) -> int:
        while root[k] != k:
            root[k] = root[root[k]]
            k = root[k]
        return k

    neighbours: dict[int, list[int]] = {i: [] for i in range(n)}
    joined = 0
    for _, i, j in edges:
        a, b = find(i), find(j)
        if a != b:
            root[a] = b
            neighbours[i].append(j)
            neighbours[j].append(i)
            joined += 1
            if joined == n - 1:
                break
    return {i: sorted(v) for i, v in neighbours.items()}


def spatial_layout(
    member_names: Sequence[str],
    boxes: Sequence[BoxLike],
    rng: random.Random,
    crop_size: Optional[tuple[float, float]] = None,
    root: Optional[str] = None,
) -> SpatialLayout:
    """Hints and walk order of a composition (see the module docstring).

    Args:
        member_names: one name per box (``tree 1`` ...); the member order breaks ties.
        boxes: member boxes relative to the composition crop (``Bbox`` or ``xyxy``).
        rng: source of the random root criterion and diagonal phrasing.
        crop_size: ``(width, height)`` of the crop in the unit distances and angles are
            measured in. The released data measures in coordinates relative to the whole
            image: pass the composition box's width and height relative to the image to
            reproduce its hints exactly. ``None`` treats the crop as square.
        root: force a root criterion from ``ROOT_CRITERIA`` instead of drawing one.
    """
    if len(member_names) != len(boxes):
        raise ValueError(f"spatial hints: {len(member_names)} names but {len(boxes)} boxes")
    n = len(boxes)
    criterion = root if root is not None else rng.choice(ROOT_CRITERIA)
    if n == 0:
        return SpatialLayout(hints=[], order=[], root=-1)
    xyxy = [_xyxy(b) for b in boxes]
    centres_rel = [((l + r) / 2.0, (t + b) / 2.0) for l, t, r, b in xyxy]
    width, height = crop_size if crop_size is not None else (1.0, 1.0)
    points = [(x * width, y * height) for x, y in centres_rel]
    start = _pick_root(criterion, points)
    neighbours = _spanning_tree(points)
    hints: list[str] = []
    order: list[int] = []
    visited = {start}
    # Iterative pre-order walk; a stack entry is (node, parent or None).
    stack: list[tuple[int, Optional[int]]] = [(start, None)]
    while stack:
        node, parent = stack.pop()
        if parent is not None:
            dx = points[node][0] - points[parent][0]
            dy = points[node][1] - points[parent][1]
            hints.append(_edge_hint(member_names[node], member_names[parent], dx, dy, rng))
        order.append(node)
        position = _position_hint(member_names[node], xyxy[node], centres_rel, node)
        if position:
            hints.append(position)
        children = [c for c in neighbours[node] if c not in visited]
        visited.update(children)
        stack.extend((c, node) for c in reversed(children))
    return SpatialLayout(hints=hints, order=order, root=start)


def spatial_hints(
    member_names: Sequence[str],
    boxes: Sequence[BoxLike],
    rng: random.Random,
    crop_size: Optional[tuple[float, float]] = None,
    root: Optional[str] = None,
) -> list[str]:
    """Hint sentences of a composition, in walk order (see :func:`spatial_layout`)."""
    return spatial_layout(member_names, boxes, rng, crop_size=crop_size, root=root).hints


def draw_numbered_boxes(
    image: "Image.Image",
    boxes_relative: Sequence[BoxLike],
    labels: Optional[Sequence[str]] = None,
    color: tuple[int, int, int] = (0, 255, 0),
    in_place: bool = False,
) -> "Image.Image":
    """A copy of ``image`` (RGB) with each box outlined and its label (default ``1`` ... ``N``)
    written at its centre. With ``in_place=True`` an RGB ``image`` that the caller owns is
    drawn on directly (same pixels, without the copy).

    Line width is ``(W + H) / 2 / 100`` pixels (at least 1); the label height scales the same
    way, drawn in white with a dark outline so it reads on any background.
    """
    from PIL import ImageDraw, ImageFont

    if labels is not None and len(labels) != len(boxes_relative):
        raise ValueError(f"draw_numbered_boxes: {len(boxes_relative)} boxes but {len(labels)} labels")
    if in_place and image.mode == "RGB" and not image.readonly:
        canvas = image
    else:
        canvas = image.convert("RGB")  # a new image: the input is not drawn on
    width, height = canvas.size
    mean_side = (width + height) / 2.0
    thickness = max(1, int(mean_side / 100))
    font_size = max(10, int(mean_side / 20))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas)
    for index, box in enumerate(boxes_relative):
        left, top, right, bottom = Bbox.from_xyxy(_xyxy(box)).to_pixels(width, height)
        draw.rectangle([left, top, right - 1, bottom - 1], outline=color, width=thickness)
    for index, box in enumerate(boxes_relative):
        left, top, right, bottom = Bbox.from_xyxy(_xyxy(box)).to_pixels(width, height)
        text = labels[index] if labels is not None else str(index + 1)
        centre = ((left + right) / 2.0, (top + bottom) / 2.0)
        draw.text(
            centre, text, fill=(255, 255, 255), font=font, anchor="mm",
            stroke_width=max(1, font_size // 8), stroke_fill=(0, 0, 0),
        )
    return canvas
