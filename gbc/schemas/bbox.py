"""Bounding boxes in coordinates relative to the whole image ([0, 1] on both axes)."""

from __future__ import annotations

from typing import Iterable, Optional

from pydantic import BaseModel, ConfigDict

from gbc.schemas import geometry as _geo

#: How far outside [0, 1] a coordinate may lie and still count as inside. Detectors return
#: boxes a float error beyond the image edge (released graphs hold ``top`` of -6.7e-06 and
#: ``right`` of 1.0000004); such values are accepted and kept exactly as written.
BOX_TOLERANCE = 1e-4


class BoxQueries:
    """What ``Bbox`` and the read-only ``BboxView`` answer from ``left, top, right, bottom``."""

    __slots__ = ()  # adds no instance dict: msgspec structs with gc=False may inherit it

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def width(self) -> float:
        return max(0.0, self.right - self.left)

    @property
    def height(self) -> float:
        return max(0.0, self.bottom - self.top)

    def is_valid(self) -> bool:
        """Coordinates within [0, 1] (give or take ``BOX_TOLERANCE``) and not inverted."""
        eps = BOX_TOLERANCE
        return (
            -eps <= self.left <= self.right <= 1 + eps
            and -eps <= self.top <= self.bottom <= 1 + eps
        )


class Bbox(BoxQueries, BaseModel):
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

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def area(self) -> float:
        return _geo.area(self.to_xyxy())

    def intersection_area(self, other: "Bbox") -> float:
        return _geo.intersection_area(self.to_xyxy(), other.to_xyxy())

    def iou(self, other: "Bbox") -> float:
        return _geo.iou(self.to_xyxy(), other.to_xyxy())

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
        return _geo.is_mostly_inside(self.to_xyxy(), other.to_xyxy(), threshold)

    def is_overlapped(self, other: "Bbox", threshold: float = 0.85) -> bool:
        """True when each box has more than ``threshold`` of its area inside the other."""
        return _geo.is_overlapped(self.to_xyxy(), other.to_xyxy(), threshold)

    def to_global(self, outer: Optional["Bbox"]) -> "Bbox":
        """Map a box expressed relative to ``outer`` into image coordinates."""
        if outer is None:
            return self.model_copy()
        return Bbox.from_xyxy(_geo.to_global(self.to_xyxy(), outer.to_xyxy()), confidence=self.confidence)

    def to_relative(self, outer: Optional["Bbox"]) -> "Bbox":
        """Express this image-coordinate box relative to ``outer`` (inverse of ``to_global``)."""
        if outer is None:
            return self.model_copy()
        return Bbox.from_xyxy(_geo.to_relative(self.to_xyxy(), outer.to_xyxy()), confidence=self.confidence)

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box clamped to the image, at least one pixel wide and high."""
        return _geo.to_pixels(self.to_xyxy(), width, height)


def union_bboxes(boxes: Iterable[Bbox]) -> Bbox:
    """Smallest box enclosing all ``boxes`` (confidence ``None``). Raises on an empty input."""
    boxes = [b.to_xyxy() for b in boxes]
    if not boxes:
        raise ValueError("union_bboxes needs at least one box")
    return Bbox.from_xyxy(_geo.union(boxes))
