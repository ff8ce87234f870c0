"""Bounding boxes in coordinates relative to the whole image ([0, 1] on both axes)."""

from __future__ import annotations

from typing import Iterable, Optional

from pydantic import BaseModel, ConfigDict

#: How far outside [0, 1] a coordinate may lie and still count as inside. Detectors return
#: boxes a float error beyond the image edge (released graphs hold ``top`` of -6.7e-06 and
#: ``right`` of 1.0000004); such values are accepted and kept exactly as written.
BOX_TOLERANCE = 1e-4


class Bbox(BaseModel):
    """An axis-aligned box ``left, top, right, bottom`` relative to the image size.

    ``confidence`` is the detector score for entity boxes and ``None`` for boxes that no
    detector produced (image, composition and relation vertices, merged duplicates).

    >>> Bbox(left=0.0, top=0.0, right=0.5, bottom=0.5).area()
    0.25
    """

    model_config = ConfigDict(extra="allow")

    left: float
    top: float
    right: float
    bottom: float
    confidence: Optional[float] = None

    @classmethod
    def full(cls) -> "Bbox":
        """The box of the whole image."""
        return cls(left=0.0, top=0.0, right=1.0, bottom=1.0, confidence=None)

    @classmethod
    def from_xyxy(cls, xyxy: Iterable[float], confidence: Optional[float] = None) -> "Bbox":
        left, top, right, bottom = (float(v) for v in xyxy)
        return cls(left=left, top=top, right=right, bottom=bottom, confidence=confidence)

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def width(self) -> float:
        return max(0.0, self.right - self.left)

    @property
    def height(self) -> float:
        return max(0.0, self.bottom - self.top)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def area(self) -> float:
        return self.width * self.height

    def intersection_area(self, other: "Bbox") -> float:
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        return w * h if w > 0 and h > 0 else 0.0

    def iou(self, other: "Bbox") -> float:
        inter = self.intersection_area(other)
        union = self.area() + other.area() - inter
        return inter / union if union > 0 else 0.0

    def is_inside(self, other: "Bbox") -> bool:
        """Non-strict containment of ``self`` in ``other`` on all four sides."""
        return (
            self.left >= other.left
            and self.top >= other.top
            and self.right <= other.right
            and self.bottom <= other.bottom
        )

    def is_mostly_inside(self, other: "Bbox", threshold: float = 0.85) -> bool:
        """True when more than ``threshold`` of this box's area lies inside ``other``.

        A box of zero area counts as fully inside.
        """
        area = self.area()
        if area <= 0:
            return True
        return self.intersection_area(other) / area > threshold

    def is_overlapped(self, other: "Bbox", threshold: float = 0.85) -> bool:
        """True when each box has more than ``threshold`` of its area inside the other."""
        inter = self.intersection_area(other)
        a, b = self.area(), other.area()
        r1 = inter / a if a > 0 else 1.0
        r2 = inter / b if b > 0 else 1.0
        return r1 > threshold and r2 > threshold

    def is_valid(self) -> bool:
        """Coordinates within [0, 1] (give or take ``BOX_TOLERANCE``) and not inverted."""
        eps = BOX_TOLERANCE
        return (
            -eps <= self.left <= self.right <= 1 + eps
            and -eps <= self.top <= self.bottom <= 1 + eps
        )

    def to_global(self, outer: Optional["Bbox"]) -> "Bbox":
        """Map a box expressed relative to ``outer`` into image coordinates."""
        if outer is None:
            return self.model_copy()
        w, h = outer.right - outer.left, outer.bottom - outer.top
        return Bbox(
            left=outer.left + self.left * w,
            top=outer.top + self.top * h,
            right=outer.left + self.right * w,
            bottom=outer.top + self.bottom * h,
            confidence=self.confidence,
        )

    def to_relative(self, outer: Optional["Bbox"]) -> "Bbox":
        """Express this image-coordinate box relative to ``outer`` (inverse of ``to_global``)."""
        if outer is None:
            return self.model_copy()
        w, h = outer.right - outer.left, outer.bottom - outer.top
        w = w if w > 0 else 1.0
        h = h if h > 0 else 1.0
        return Bbox(
            left=(self.left - outer.left) / w,
            top=(self.top - outer.top) / h,
            right=(self.right - outer.left) / w,
            bottom=(self.bottom - outer.top) / h,
            confidence=self.confidence,
        )

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box clamped to the image, at least one pixel wide and high."""
        left = min(max(int(self.left * width), 0), max(width - 1, 0))
        top = min(max(int(self.top * height), 0), max(height - 1, 0))
        right = min(max(int(round(self.right * width)), left + 1), width)
        bottom = min(max(int(round(self.bottom * height)), top + 1), height)
        return left, top, right, bottom


def union_bboxes(boxes: Iterable[Bbox]) -> Bbox:
    """Smallest box enclosing all ``boxes`` (confidence ``None``). Raises on an empty input."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("union_bboxes needs at least one box")
    return Bbox(
        left=min(b.left for b in boxes),
        top=min(b.top for b in boxes),
        right=max(b.right for b in boxes),
        bottom=max(b.bottom for b in boxes),
        confidence=None,
    )
