"""Post-processing of raw detector boxes: which boxes of a phrase become vertices.

Detector backends return every box they find with its score; this module decides, per
phrase, which of them the annotator keeps. The steps and their order follow the released GBC
pipeline (thresholds are strict inequalities):

1. score above ``score_threshold``;
2. area filters: at least ``min_abs_area_px`` crop pixels, more than ``min_rel_area`` of the
   whole image, less than ``max_rel_area`` of the crop;
3. non-maximum suppression at ``nms_single`` (tag labelled ``single``) or ``nms_multiple``
   (anything else), leaving boxes sorted by score;
4. ``remove_contained``: drop boxes that contain another kept box (keep the parts, not the
   box around a group);
5. for ``single`` tags, keep boxes within ``high_conf_tolerance`` of the best score;
6. keep the ``topk`` best.

Differences from the reference, on purpose: the minimum area is relative to the whole image
(``min_rel_area``), so graph size does not depend on image resolution (the reference used
5000 crop pixels); a small absolute floor remains so that crops stay legible; two identical
boxes are not both removed by the containment step.

>>> select_boxes([(0.1, 0.1, 0.5, 0.5), (0.12, 0.1, 0.5, 0.5)], [0.9, 0.8], "single",
...              DetectionSettings(), (1000, 800))
[((0.1, 0.1, 0.5, 0.5), 0.9)]
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gbc.schemas import geometry

__all__ = [
    "DEFAULT_MIN_REL_AREA",
    "ENTITY_MAX_REL_AREA",
    "DetectionSettings",
    "EntityDetectionSettings",
    "select_boxes",
    "nms",
    "remove_containers",
]

#: Default minimum box area relative to the whole image: 5000 px on a 1024 x 1024 image,
#: the reference's absolute minimum at a typical resolution (about 7 % of the side).
DEFAULT_MIN_REL_AREA = round(5000 / (1024 * 1024), 6)

#: Largest area of a child box relative to its parent entity's crop (reference value): a
#: "part" covering nearly the whole parent is the parent again.
ENTITY_MAX_REL_AREA = 0.8

Box = tuple[float, float, float, float]


class DetectionSettings(BaseModel):
    """Thresholds of :func:`select_boxes`; the ``detection.*`` sections of the annotate config.

    Every filter is switched off by ``None`` (or 0). The defaults are the reference
    configuration's, with the minimum area made relative to the whole image.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    score_threshold: Optional[float] = Field(0.35, ge=0, le=1, description="boxes scoring at or below are dropped")
    nms_single: Optional[float] = Field(0.05, ge=0, le=1, description="NMS IoU for phrases tagged [single] (one object: overlapping boxes are the same object)")
    nms_multiple: Optional[float] = Field(0.2, ge=0, le=1, description="NMS IoU for [multiple] and untyped phrases (neighbours may touch)")
    high_conf_tolerance: Optional[float] = Field(0.05, ge=0, description="[single] phrases keep boxes within this of the best score")
    topk: Optional[int] = Field(6, ge=0, description="at most this many boxes per phrase (0: no limit)")
    min_rel_area: Optional[float] = Field(DEFAULT_MIN_REL_AREA, ge=0, le=1, description="boxes smaller than this share of the whole image are dropped (resolution independent; 5000 px of a 1024 px square)")
    min_abs_area_px: Optional[float] = Field(1024.0, ge=0, description="absolute floor: boxes smaller than this many pixels of the searched crop are dropped (32 x 32: below that a crop says nothing to the captioning model)")
    max_rel_area: Optional[float] = Field(None, gt=0, le=1, description="boxes larger than this share of the searched crop are dropped")
    remove_contained: bool = Field(True, description="drop boxes that contain another kept box of the phrase (keep the parts, not the box around a group)")
    containment_threshold: float = Field(0.95, gt=0, le=1, description="a box counts as inside another when more than this share of its area lies within it")

    def for_entity(self) -> "DetectionSettings":
        """These settings for detection inside an entity crop (``max_rel_area`` 0.8 unless set)."""
        if self.max_rel_area is not None:
            return self
        return self.replace(max_rel_area=ENTITY_MAX_REL_AREA)

    def replace(self, **changes) -> "DetectionSettings":
        """A validated copy with some settings changed."""
        return type(self).model_validate({**self.model_dump(), **changes})


class EntityDetectionSettings(DetectionSettings):
    """Detection inside an entity's crop: as from the image, but huge boxes (the entity itself) are dropped."""

    max_rel_area: Optional[float] = Field(ENTITY_MAX_REL_AREA, gt=0, le=1, description="boxes larger than this share of the searched crop are dropped")


def _on(value: Optional[float]) -> bool:
    return value is not None and value > 0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept boxes, best score first.

    A box is suppressed when its IoU with a better kept box is above ``iou_threshold`` (the
    semantics of ``torchvision.ops.nms``); ties in score keep input order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if rest.size == 0:
            break
        order = rest[geometry.iou_one_to_many(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def remove_containers(boxes: np.ndarray, threshold: float = 0.95) -> np.ndarray:
    """Indices (in input order) of boxes that contain no other box.

    ``boxes`` must be ranked best first. Box ``j`` is inside box ``i`` when more than
    ``threshold`` of ``j``'s area lies within ``i``. Two boxes inside each other (near
    duplicates) are not containers of each other: the better ranked one stays.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n < 2:
        return np.arange(n)
    # inside[i, j]: box j lies (mostly) within box i
    inside = geometry.intersection_matrix(boxes) > threshold * geometry.areas(boxes)[None, :]
    np.fill_diagonal(inside, False)
    mutual = inside & inside.T
    rank = np.arange(n)
    # i contains j, unless they contain each other and i is ranked better
    contains = inside & ~(mutual & (rank[:, None] < rank[None, :]))
    return np.flatnonzero(~contains.any(axis=1))


def _select_one(box, score, label: str, settings: DetectionSettings, crop_size_px, crop_rel_area: float):
    """``select_boxes`` for a single box strictly inside the crop, on plain floats (the same
    comparisons and products, so the same result); ``None`` leaves any other case to the
    array code. Most phrases get one box, and numpy costs more than the rules for one."""
    try:
        if len(box) != 4:
            return None
        left, top, right, bottom = (float(v) for v in box)
        s = float(score)
    except (TypeError, ValueError):
        return None
    # strictly inside (0, 1): clipping changes nothing; NaN fails these tests too
    if not (0.0 < left < 1.0 and 0.0 < top < 1.0 and 0.0 < right < 1.0 and 0.0 < bottom < 1.0) or not math.isfinite(s):
        return None
    rel_area = max(right - left, 0.0) * max(bottom - top, 0.0)
    keep = rel_area > 0
    if _on(settings.score_threshold):
        keep = keep and s > settings.score_threshold
    if _on(settings.min_abs_area_px):
        keep = keep and rel_area * float(crop_size_px[0]) * float(crop_size_px[1]) > settings.min_abs_area_px
    if _on(settings.min_rel_area):
        keep = keep and rel_area * crop_rel_area > settings.min_rel_area
    if _on(settings.max_rel_area):
        keep = keep and rel_area < settings.max_rel_area
    if not keep:
        return []
    # one box: NMS and container removal keep it; top-k keeps it when k >= 1
    if label.strip().lower() == "single" and _on(settings.high_conf_tolerance):
        if not s > s - settings.high_conf_tolerance:
            return []
    return [((left, top, right, bottom), s)]


def select_boxes(
    boxes: Sequence[Sequence[float]],
    scores: Sequence[float],
    label: str,
    settings: DetectionSettings,
    crop_size_px: tuple[int, int],
    crop_rel_area: float = 1.0,
) -> list[tuple[Box, float]]:
    """Boxes of one phrase that the annotator keeps, best score first.

    Args:
        boxes: ``(left, top, right, bottom)`` relative to the crop the detector saw ([0, 1];
            values outside are clipped, empty boxes and non-finite values are dropped).
        scores: one detector score per box.
        label: the tag label of the phrase (``single`` selects the single-object rules).
        settings: thresholds, see :class:`DetectionSettings`.
        crop_size_px: ``(width, height)`` in pixels of the crop the detector saw.
        crop_rel_area: area of that crop relative to the whole image (1.0 for the image).

    Returns:
        ``[((left, top, right, bottom), score), ...]`` relative to the crop.
    """
    if len(boxes) == 1 and len(scores) == 1:
        one = _select_one(boxes[0], scores[0], label, settings, crop_size_px, crop_rel_area)
        if one is not None:
            return one
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"select_boxes: {len(b)} boxes but {len(s)} scores")
    if len(b) == 0:
        return []
    finite = np.isfinite(b).all(axis=1) & np.isfinite(s)
    b, s = np.clip(b[finite], 0.0, 1.0), s[finite]
    width_px, height_px = float(crop_size_px[0]), float(crop_size_px[1])
    rel_area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep = rel_area > 0
    if _on(settings.score_threshold):
        keep &= s > settings.score_threshold
    if _on(settings.min_abs_area_px):
        keep &= rel_area * width_px * height_px > settings.min_abs_area_px
    if _on(settings.min_rel_area):
        keep &= rel_area * crop_rel_area > settings.min_rel_area
    if _on(settings.max_rel_area):
        keep &= rel_area < settings.max_rel_area
    b, s = b[keep], s[keep]
    single = label.strip().lower() == "single"
    iou = settings.nms_single if single else settings.nms_multiple
    if _on(iou) and len(b):
        order = nms(b, s, iou)
    else:
        order = np.argsort(-s, kind="stable")
    b, s = b[order], s[order]
    if settings.remove_contained and len(b) > 1:
        kept = remove_containers(b, settings.containment_threshold)
        b, s = b[kept], s[kept]
    if single and _on(settings.high_conf_tolerance) and len(s):
        close = s > s.max() - settings.high_conf_tolerance
        b, s = b[close], s[close]
    if settings.topk is not None and settings.topk > 0:
        b, s = b[: settings.topk], s[: settings.topk]
    return [(tuple(float(v) for v in box), float(score)) for box, score in zip(b, s)]

