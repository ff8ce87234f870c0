"""The one box-geometry kernel: plain-float functions on ``(left, top, right, bottom)`` tuples.

Every box computation of the project goes through here: the ``Bbox`` methods, the masks of a
graph, the engine's duplicate test and crop mapping, graph assembly. Plain tuples keep the hot
loops cheap (a pydantic attribute access costs more than the arithmetic), and one
implementation keeps every caller's floats identical.

>>> intersection_area((0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 1.0, 1.0))
0.0625
>>> to_global((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0))
(0.5, 0.5, 0.75, 0.75)
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

Box = Tuple[float, float, float, float]

__all__ = [
    "Box", "area", "areas", "intersection_area", "intersection_matrix", "iou", "iou_one_to_many",
    "is_mostly_inside", "is_overlapped", "mask_lists",
    "to_global", "to_pixels", "to_relative", "union",
]


def area(b: Box) -> float:
    """Area of a box; an inverted box has none."""
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def intersection_area(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    inter = intersection_area(a, b)
    union_area = area(a) + area(b) - inter
    return inter / union_area if union_area > 0 else 0.0


def is_mostly_inside(a: Box, b: Box, threshold: float) -> bool:
    """More than ``threshold`` of ``a``'s area lies inside ``b``; a box without area is inside anything."""
    a_area = area(a)
    if a_area <= 0:
        return True
    return intersection_area(a, b) / a_area > threshold


def is_overlapped(a: Box, b: Box, threshold: float) -> bool:
    """Each box has more than ``threshold`` of its area inside the other (same object, two boxes)."""
    inter = intersection_area(a, b)
    a_area, b_area = area(a), area(b)
    r1 = inter / a_area if a_area > 0 else 1.0
    r2 = inter / b_area if b_area > 0 else 1.0
    return r1 > threshold and r2 > threshold


def to_global(box: Box, outer: Box) -> Box:
    """A box given relative to ``outer`` (e.g. found in a crop), in image coordinates."""
    w, h = outer[2] - outer[0], outer[3] - outer[1]
    return (outer[0] + box[0] * w, outer[1] + box[1] * h, outer[0] + box[2] * w, outer[1] + box[3] * h)


def to_relative(box: Box, outer: Box) -> Box:
    """The inverse of :func:`to_global` (a degenerate ``outer`` side counts as 1)."""
    w, h = outer[2] - outer[0], outer[3] - outer[1]
    w = w if w > 0 else 1.0
    h = h if h > 0 else 1.0
    return ((box[0] - outer[0]) / w, (box[1] - outer[1]) / h, (box[2] - outer[0]) / w, (box[3] - outer[1]) / h)


def to_pixels(box: Box, width: int, height: int, truncate: bool = False) -> Tuple[int, int, int, int]:
    """Integer pixel box clamped to the image, at least one pixel wide and high.

    The near edges are truncated and the far edges rounded; ``truncate=True`` truncates the far
    edges too (how the reference cuts the regions it scores).
    """
    left = min(max(int(box[0] * width), 0), max(width - 1, 0))
    top = min(max(int(box[1] * height), 0), max(height - 1, 0))
    far_x, far_y = box[2] * width, box[3] * height
    if not truncate:
        far_x, far_y = round(far_x), round(far_y)
    right = min(max(int(far_x), left + 1), width)
    bottom = min(max(int(far_y), top + 1), height)
    return left, top, right, bottom


def union(boxes: Iterable[Box]) -> Box:
    """Smallest box enclosing all ``boxes``. Raises ``ValueError`` on an empty input."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("the union of boxes needs at least one box")
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def mask_lists(boxes: Sequence[Box], threshold: float) -> Tuple[List[List[int]], List[List[int]]]:
    """For each box, the indices of the boxes mostly inside it (sub) and mostly around it (super).

    The same test as :func:`is_mostly_inside` for every ordered pair, with each pair's
    intersection computed once (masks are all-pairs: this loop is the cost of a graph's masks).
    """
    areas = [area(b) for b in boxes]
    n = len(boxes)
    subs: List[List[int]] = [[] for _ in range(n)]
    supers: List[List[int]] = [[] for _ in range(n)]
    for i in range(n):
        li, ti, ri, bi = boxes[i]
        ai = areas[i]
        for j in range(i + 1, n):
            lj, tj, rj, bj = boxes[j]
            aj = areas[j]
            # min(a, b) and max(a, b) spelled out: the builtin calls cost more than the rest
            w = (rj if rj < ri else ri) - (lj if lj > li else li)
            h = (bj if bj < bi else bi) - (tj if tj > ti else ti)
            inter = w * h if w > 0 and h > 0 else 0.0
            if aj <= 0 or inter / aj > threshold:  # j mostly inside i
                subs[i].append(j)
                supers[j].append(i)
            if ai <= 0 or inter / ai > threshold:  # i mostly inside j
                supers[i].append(j)
                subs[j].append(i)
    return subs, supers


# ---------------------------------------------------------------- vectorised (numpy arrays of boxes)
# The same formulas over ``(n, 4)`` arrays, for the detector's post-processing (NMS, containment).


def areas(boxes):
    """Areas of an ``(n, 4)`` array of boxes (not clipped: boxes from detectors are not inverted)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou_one_to_many(box, others):
    """IoU of one box with each row of ``others`` (0 where the union is empty)."""
    import numpy as np

    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    union_area = (box[2] - box[0]) * (box[3] - box[1]) + areas(others) - inter
    return np.divide(inter, union_area, out=np.zeros_like(inter), where=union_area > 0)


def intersection_matrix(boxes):
    """``inter[i, j]``: the intersection area of boxes ``i`` and ``j`` (an ``(n, n)`` array)."""
    import numpy as np

    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
