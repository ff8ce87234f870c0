"""The box-geometry kernel: plain-float and vectorised forms agree, and Bbox is a view over it."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbc.schemas import Bbox, geometry

coord = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def boxes(draw):
    a, b, c, d = draw(coord), draw(coord), draw(coord), draw(coord)
    return (min(a, b), min(c, d), max(a, b), max(c, d))


def test_worked_values():
    a, b = (0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 1.0, 1.0)
    assert geometry.area(a) == 0.25
    assert geometry.intersection_area(a, b) == 0.0625
    assert geometry.iou(a, b) == pytest.approx(0.0625 / (0.25 + 0.5625 - 0.0625))
    assert geometry.is_mostly_inside((0.1, 0.1, 0.2, 0.2), a, 0.85)
    assert not geometry.is_mostly_inside(a, (0.1, 0.1, 0.2, 0.2), 0.85)
    assert geometry.is_mostly_inside((0.3, 0.3, 0.3, 0.9), (0.9, 0.9, 1.0, 1.0), 0.85)  # no area: inside anything
    assert geometry.to_global((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)) == (0.5, 0.5, 0.75, 0.75)
    assert geometry.to_pixels((0.0, 0.0, 0.999, 0.5), 10, 10) == (0, 0, 10, 5)
    assert geometry.to_pixels((0.0, 0.0, 0.999, 0.5), 10, 10, truncate=True) == (0, 0, 9, 5)
    assert geometry.to_pixels((1.0, 1.0, 1.0, 1.0), 10, 10) == (9, 9, 10, 10)  # never empty
    with pytest.raises(ValueError):
        geometry.union([])


@settings(max_examples=200, deadline=None)
@given(boxes(), boxes(), st.floats(min_value=0.05, max_value=0.95))
def test_bbox_methods_are_the_kernel(a, b, thr):
    ba, bb = Bbox.from_xyxy(a), Bbox.from_xyxy(b)
    assert ba.area() == geometry.area(a)
    assert ba.intersection_area(bb) == geometry.intersection_area(a, b)
    assert ba.iou(bb) == geometry.iou(a, b)
    assert ba.is_mostly_inside(bb, thr) == geometry.is_mostly_inside(a, b, thr)
    assert ba.is_overlapped(bb, thr) == geometry.is_overlapped(a, b, thr)
    assert ba.to_global(bb).to_xyxy() == geometry.to_global(a, b)
    # Mapping into a box and back divides by its size: exact to 1e-9 only for boxes at least
    # 1e-6 on a side (a box 5e-324 high has an area but no usable precision).
    if b[2] - b[0] >= 1e-6 and b[3] - b[1] >= 1e-6:
        back = geometry.to_relative(geometry.to_global(a, b), b)
        assert all(math.isclose(x, y, abs_tol=1e-9) for x, y in zip(back, a))


@settings(max_examples=100, deadline=None)
@given(st.lists(boxes(), min_size=1, max_size=12), st.floats(min_value=0.05, max_value=0.95))
def test_mask_lists_equal_the_pairwise_test(bs, thr):
    subs, supers = geometry.mask_lists(bs, thr)
    for i, a in enumerate(bs):
        want_sub = [j for j, b in enumerate(bs) if j != i and geometry.is_mostly_inside(b, a, thr)]
        want_super = [j for j, b in enumerate(bs) if j != i and geometry.is_mostly_inside(a, b, thr)]
        assert sorted(subs[i]) == want_sub and sorted(supers[i]) == want_super


@settings(max_examples=100, deadline=None)
@given(st.lists(boxes(), min_size=2, max_size=10))
def test_vectorised_forms_equal_the_plain_ones(bs):
    arr = np.asarray(bs, dtype=np.float64)
    inter = geometry.intersection_matrix(arr)
    ious = geometry.iou_one_to_many(arr[0], arr)
    for j, b in enumerate(bs):
        assert ious[j] == pytest.approx(geometry.iou(bs[0], b), abs=1e-12)
        for i, a in enumerate(bs):
            assert inter[i, j] == pytest.approx(geometry.intersection_area(a, b), abs=1e-12)
