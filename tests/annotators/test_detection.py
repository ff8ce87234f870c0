"""Detection post-processing: each filter, the order of the steps, NMS against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbc.annotators.detection import (
    DEFAULT_MIN_REL_AREA,
    ENTITY_MAX_REL_AREA,
    DetectionSettings,
    nms,
    remove_containers,
    select_boxes,
)

OFF = DetectionSettings(
    score_threshold=None, nms_single=None, nms_multiple=None, high_conf_tolerance=None, topk=None,
    min_rel_area=None, min_abs_area_px=None, max_rel_area=None, remove_contained=False,
)
A = (0.0, 0.0, 0.4, 0.4)
B = (0.5, 0.5, 0.9, 0.9)
C = (0.5, 0.0, 0.9, 0.4)
D = (0.0, 0.5, 0.4, 0.9)
BIG = (0.0, 0.0, 1.0, 1.0)
SMALL = (0.1, 0.1, 0.2, 0.2)          # inside A and BIG, IoU with BIG = 0.01
A_SHIFTED = (0.02, 0.0, 0.42, 0.4)    # IoU with A ~ 0.905
A_TOUCHING = (0.3, 0.0, 0.7, 0.4)     # IoU with A = 1/7 ~ 0.143
GRID = [(x / 4, y / 4, x / 4 + 0.2, y / 4 + 0.2) for x in range(4) for y in range(2)]

# (name, boxes, scores, label, settings changes, crop size, crop relative area, expected indices)
CASES = [
    ("nothing", [], [], "single", {}, (1000, 1000), 1.0, []),
    ("all off keeps all, by score", [A, B, C], [0.1, 0.3, 0.2], "multiple", {}, (10, 10), 1.0, [1, 2, 0]),
    ("score is strict", [A, B], [0.35, 0.36], "multiple", {"score_threshold": 0.35}, (10, 10), 1.0, [1]),
    ("score 0 means off", [A, B], [0.0, 0.36], "multiple", {"score_threshold": 0}, (10, 10), 1.0, [1, 0]),
    ("abs area is strict", [(0, 0, 0.32, 0.32), (0.5, 0.5, 0.83, 0.83)], [0.9, 0.8], "multiple",
     {"min_abs_area_px": 1024}, (100, 100), 1.0, [1]),
    ("abs area uses crop pixels", [(0, 0, 0.32, 0.32)], [0.9], "multiple", {"min_abs_area_px": 1024},
     (1000, 1000), 1.0, [0]),
    ("rel area against whole image", [(0, 0, 0.1, 0.1)], [0.9], "multiple",
     {"min_rel_area": DEFAULT_MIN_REL_AREA}, (100, 100), 1.0, [0]),
    ("rel area in a small crop", [(0, 0, 0.1, 0.1)], [0.9], "multiple",
     {"min_rel_area": DEFAULT_MIN_REL_AREA}, (100, 100), 0.25, []),
    ("max rel area is strict", [(0, 0, 0.9, 0.9), (0, 0, 0.89, 0.89)], [0.9, 0.8], "multiple",
     {"max_rel_area": 0.8}, (100, 100), 1.0, [1]),
    ("nms single", [A, A_TOUCHING], [0.9, 0.8], "single", {"nms_single": 0.05}, (10, 10), 1.0, [0]),
    ("nms multiple", [A, A_TOUCHING], [0.9, 0.8], "multiple", {"nms_multiple": 0.2}, (10, 10), 1.0, [0, 1]),
    ("nms multiple suppresses", [A, A_SHIFTED], [0.8, 0.9], "entity", {"nms_multiple": 0.2}, (10, 10), 1.0,
     [1]),
    ("label is case-insensitive", [A, A_TOUCHING], [0.9, 0.8], " Single ", {"nms_single": 0.05}, (10, 10),
     1.0, [0]),
    ("container dropped", [BIG, SMALL, B], [0.9, 0.5, 0.4], "multiple", {"remove_contained": True},
     (10, 10), 1.0, [1, 2]),
    ("containers kept when off", [BIG, SMALL], [0.9, 0.5], "multiple", {}, (10, 10), 1.0, [0, 1]),
    ("identical boxes keep the best", [A, A], [0.5, 0.7], "multiple", {"remove_contained": True},
     (10, 10), 1.0, [1]),
    ("high confidence for single", [A, B, C], [0.9, 0.86, 0.84], "single", {"high_conf_tolerance": 0.05},
     (10, 10), 1.0, [0, 1]),
    ("no high confidence for multiple", [A, B, C], [0.9, 0.86, 0.84], "multiple",
     {"high_conf_tolerance": 0.05}, (10, 10), 1.0, [0, 1, 2]),
    ("topk", GRID, [0.1 * i for i in range(1, 9)], "multiple", {"topk": 6}, (10, 10), 1.0,
     [7, 6, 5, 4, 3, 2]),
    ("topk 0 means off", [A, B], [0.1, 0.2], "multiple", {"topk": 0}, (10, 10), 1.0, [1, 0]),
    # order of steps: NMS before high confidence (the suppressed runner-up does not count) ...
    ("nms then high confidence", [A, A_SHIFTED, B], [0.9, 0.88, 0.87], "single",
     {"nms_single": 0.05, "high_conf_tolerance": 0.05}, (10, 10), 1.0, [0, 2]),
    # ... containment before high confidence (the small part survives, its container does not)
    ("containment then high confidence", [BIG, SMALL], [0.9, 0.6], "single",
     {"nms_single": 0.05, "remove_contained": True, "high_conf_tolerance": 0.05}, (10, 10), 1.0, [1]),
    # ... and high confidence before topk
    ("high confidence then topk", [A, B, C, D], [0.9, 0.89, 0.88, 0.87], "single",
     {"high_conf_tolerance": 0.025, "topk": 1}, (10, 10), 1.0, [0]),
    # score before NMS: a low-score box cannot suppress a better one that survives
    ("score before nms", [A, A_SHIFTED], [0.2, 0.5], "multiple", {"score_threshold": 0.3, "nms_multiple": 0.2},
     (10, 10), 1.0, [1]),
    # area before NMS: a too-large box cannot suppress the box it overlaps
    ("area before nms", [(0, 0, 1, 0.95), (0, 0, 0.9, 0.85)], [0.9, 0.5], "single",
     {"max_rel_area": 0.8, "nms_single": 0.05}, (10, 10), 1.0, [1]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_select_boxes(case):
    _, boxes, scores, label, changes, size, rel, expected = case
    got = select_boxes(boxes, scores, label, OFF.replace(**changes), size, rel)
    assert got == [(tuple(float(v) for v in boxes[i]), float(scores[i])) for i in expected]


def test_defaults_match_the_reference_configuration():
    d = DetectionSettings()
    assert (d.score_threshold, d.nms_single, d.nms_multiple, d.high_conf_tolerance, d.topk) == (
        0.35, 0.05, 0.2, 0.05, 6)
    assert d.max_rel_area is None and d.remove_contained is True
    assert d.min_rel_area * 1024 * 1024 == pytest.approx(5000, abs=1)  # 6 decimals, as the config has always written it
    assert d.for_entity().max_rel_area == ENTITY_MAX_REL_AREA == 0.8
    assert d.replace(max_rel_area=0.5).for_entity().max_rel_area == 0.5


def test_default_settings_on_a_realistic_detection():
    # a 1024 x 768 image; boxes of "trees" (multiple)
    boxes = [
        (0.10, 0.20, 0.30, 0.80),   # tree
        (0.11, 0.21, 0.31, 0.79),   # near duplicate of the first
        (0.60, 0.25, 0.80, 0.85),   # tree
        (0.05, 0.15, 0.85, 0.90),   # the whole group
        (0.40, 0.40, 0.42, 0.42),   # speck
        (0.45, 0.20, 0.58, 0.80),   # weak tree
    ]
    scores = [0.8, 0.75, 0.7, 0.65, 0.9, 0.3]
    got = select_boxes(boxes, scores, "multiple", DetectionSettings(), (1024, 768))
    assert [s for _, s in got] == [0.8, 0.7]
    single = select_boxes(boxes, scores, "single", DetectionSettings(), (1024, 768))
    assert [s for _, s in single] == [0.8]


def test_clipping_and_bad_values():
    boxes = [(-0.1, 0.0, 0.5, 1.2), (0.2, 0.2, 0.2, 0.6), (0.1, 0.1, np.nan, 0.5), (0, 0, 0.5, 0.5)]
    got = select_boxes(boxes, [0.9, 0.9, 0.9, float("nan")], "multiple", OFF, (10, 10))
    assert got == [((0.0, 0.0, 0.5, 1.0), 0.9)]
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        select_boxes([A, B], [0.5], "single", OFF, (10, 10))
    assert select_boxes(np.zeros((0, 4)), np.zeros(0), "single", DetectionSettings(), (10, 10)) == []


def test_remove_containers_keeps_parts():
    boxes = np.array([BIG, A, SMALL, B])
    assert remove_containers(boxes).tolist() == [2, 3]
    assert remove_containers(np.array([A])).tolist() == [0]
    assert remove_containers(np.array([A, A, A])).tolist() == [0]


def _brute_nms(boxes, scores, thr):
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


coord = st.floats(0, 1, allow_nan=False)
box = st.tuples(coord, coord, coord, coord).map(
    lambda t: (min(t[0], t[2]), min(t[1], t[3]), max(t[0], t[2]), max(t[1], t[3])))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(box, st.floats(0, 1)), max_size=25), st.floats(0.01, 0.9))
def test_nms_matches_brute_force(items, thr):
    boxes = [b for b, _ in items]
    scores = [s for _, s in items]
    assert nms(np.array(boxes).reshape(-1, 4), np.array(scores), thr).tolist() == _brute_nms(boxes, scores, thr)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(box, st.floats(0, 1)), max_size=25),
    st.sampled_from(["single", "multiple", "entity"]),
    st.floats(0.05, 1.0),
)
def test_select_boxes_properties(items, label, crop_rel_area):
    boxes = [b for b, _ in items]
    scores = [s for _, s in items]
    d = DetectionSettings().for_entity()
    got = select_boxes(boxes, scores, label, d, (640, 480), crop_rel_area)
    kept_scores = [s for _, s in got]
    assert kept_scores == sorted(kept_scores, reverse=True)
    assert len(got) <= d.topk
    for (l, t, r, b), s in got:
        assert s > d.score_threshold
        assert 0 <= l < r <= 1 and 0 <= t < b <= 1
        assert (r - l) * (b - t) < d.max_rel_area
        assert (r - l) * (b - t) * crop_rel_area > d.min_rel_area
    if label == "single" and got:
        assert kept_scores[-1] > kept_scores[0] - d.high_conf_tolerance


@pytest.mark.parametrize("seed", range(4))
def test_one_box_fast_path_agrees_with_the_array_rules(seed, monkeypatch):
    import random

    import gbc.annotators.detection as detection

    base = DetectionSettings()
    variants = [base, base.for_entity(),
                base.replace(score_threshold=None, min_rel_area=None, min_abs_area_px=None,
                                    high_conf_tolerance=1e-20, topk=None),
                base.replace(high_conf_tolerance=0.0, max_rel_area=0.3, score_threshold=0.0)]
    rng = random.Random(seed)
    odd = [0.0, 1.0, -0.0, 1e-9, 1.5, -0.2, float("nan")]
    cases = []
    for _ in range(3000):
        box = [rng.choice(odd) if rng.random() < 0.1 else rng.random() for _ in range(4)]
        if rng.random() < 0.5:
            box[2], box[3] = min(1.0, box[0] + rng.random() / 2), min(1.0, box[1] + rng.random() / 2)
        score = rng.choice([0.35, float("nan"), float("inf")]) if rng.random() < 0.1 else rng.random()
        cases.append(([box], [score], rng.choice(["single", "multiple", " Single "]), rng.choice(variants),
                      (rng.randint(1, 1024), rng.randint(1, 1024)), rng.choice([1.0, rng.random()])))
    fast = [select_boxes(*case) for case in cases]
    monkeypatch.setattr(detection, "_select_one", lambda *args: None)  # array rules only
    assert fast == [select_boxes(*case) for case in cases]
    assert sum(bool(f) for f in fast) > 300  # the comparison covered kept boxes too
