"""The duplicate-merge rule, on synthetic scenes (no reference data needed).

A box found in a crop becomes an existing vertex instead of a new one when both boxes hold more
than ``queries.merge_overlap_threshold`` of each other's area AND the names denote the same
object (equal singular forms with the rule test); the vertex then has several parents and the
union of the boxes, without a detector score. A box never merges into its own ancestors, nor
into a vertex whose query said the object is not there.
"""

import pytest
from engine_fakes import MemoryStore, TableDetector, TableMllm
from PIL import Image
from test_engine import SCENE_BOXES, scene_answers

from gbc.annotators.answers import TaggedEntity, format_entity_answer
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import ImageSource

SAME = ((0.11, 0.50, 0.40, 0.88), 0.7)        # mutual overlap with the horse ~0.93
SHIFTED = ((0.25, 0.50, 0.55, 0.90), 0.7)     # half of it outside the horse's box


def _run(tmp_path, name_in_tree: str, box_in_tree, threshold: float = 0.85):
    path = tmp_path / "scene.png"
    Image.new("RGB", (400, 300), (200, 200, 210)).save(path)

    def answers(request):
        ctx = request.context
        if request.kind == "entity" and ctx["vertex_id"] == "trees_0":
            return format_entity_answer(f"A bare tree with a {name_in_tree} beside its trunk.",
                                        [TaggedEntity(name_in_tree, "single"), TaggedEntity("trunk", "single")])
        if request.kind == "relation" and ctx["vertex_id"] == "trees_0":
            return "The [trunk] is brown."
        return scene_answers(request)

    boxes = {k: v for k, v in SCENE_BOXES.items() if k != ("trees_0", "horse")}
    boxes[("trees_0", name_in_tree.lower())] = [box_in_tree]  # the detector is asked in lower case
    config = AnnotateConfig().with_overrides({
        "detection.from_image.min_rel_area": None, "detection.from_entity.min_rel_area": None,
        "queries.merge_overlap_threshold": threshold})
    store = MemoryStore()
    summary = RecursiveAnnotator(config, TableMllm(answers), TableDetector(boxes)).run(
        [ImageSource(key="scene.png", path=str(path))], store)
    assert summary.done == 1, store.records["scene.png"].reason
    return store.graphs["scene.png"]


def _entity_ids(graph):
    return sorted(v.vertex_id for v in graph.vertices if v.label == "entity")


@pytest.mark.parametrize("name", ["horse", "horses", "Horse"])
def test_same_object_with_mutual_overlap_is_one_vertex_with_two_parents(tmp_path, name):
    g = _run(tmp_path, name, SAME)
    assert f"trees_0_{name.lower()}" not in _entity_ids(g)
    parents = {p.vertex_id for p, _ in g.parents("horse") if p.label != "relation"}
    assert parents == {"", "trees_0"}
    horse = g.vertex("horse")
    assert horse.bbox.confidence is None  # a merged box is no single detection
    assert horse.bbox.to_xyxy() == pytest.approx((0.10, 0.50, 0.40, 0.90))  # the union


def test_overlap_below_the_threshold_makes_a_new_vertex(tmp_path):
    g = _run(tmp_path, "horse", SHIFTED)
    assert "trees_0_horse" in _entity_ids(g)
    assert {p.vertex_id for p, _ in g.parents("horse")} - {"[horse|trees]"} == {""}


def test_a_different_object_in_the_same_place_makes_a_new_vertex(tmp_path):
    g = _run(tmp_path, "pony", SAME)
    assert "trees_0_pony" in _entity_ids(g)
    assert g.vertex("horse").bbox.confidence == pytest.approx(0.9)  # untouched


def test_the_threshold_is_the_setting(tmp_path):
    # the same boxes merge at 0.85 and stay apart when the setting asks for more overlap
    assert "trees_0_horse" not in _entity_ids(_run(tmp_path, "horse", SAME, threshold=0.85))
    assert "trees_0_horse" in _entity_ids(_run(tmp_path, "horse", SAME, threshold=0.95))
