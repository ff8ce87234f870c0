"""The recursive engine end to end on real (rule-based) backends and an in-memory store."""

import re

import numpy as np
import pytest
from PIL import Image

from engine_fakes import MemoryStore, TableDetector, TableMllm

from gbc.annotators.answers import (
    TaggedEntity,
    format_composition_answer,
    format_entity_answer,
    format_image_answer,
    format_relation_answer,
)
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import ImageSource, discover_images

ID_PART = r"[^_\[\]|]+"
ENTITY_ID = re.compile(rf"^{ID_PART}(_({ID_PART}))*$")


def make_images(folder, n, size=(320, 240), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = rng.integers(0, 255, 3)
        arr = np.clip(rng.normal(colour, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
    return discover_images([folder])


def scripted_run(images, config=None, mllm_options=None, detector_options=None, store=None):
    config = config or AnnotateConfig()
    mllm = create_mllm("scripted", mllm_options or {})
    det = create_detector("scripted", detector_options or {})
    store = store if store is not None else MemoryStore()
    summary = RecursiveAnnotator(config, mllm, det).run(images, store)
    return summary, store


def test_scripted_run_gives_valid_full_layout_graphs(tmp_path):
    images = make_images(tmp_path / "imgs", 6)
    summary, store = scripted_run(images)
    assert (summary.images, summary.done, summary.failed) == (6, 6, 0)
    assert sorted(store.graphs) == [s.key for s in images]
    labels = set()
    for key, graph in store.graphs.items():
        assert graph.validate() == []
        assert graph.img_path == key and graph.img_size == (320, 240)
        assert graph.mask_inside_threshold == 0.85
        data = graph.to_dict("full")
        assert data["vertices"][0]["vertex_id"] == "" and data["vertices"][0]["label"] == "image"
        assert graph.short_caption and graph.detail_caption
        for v in graph.vertices:
            labels.add(v.label)
            assert v.sub_masks is not None and v.super_masks is not None
            assert all(d.full_label == f"{d.label}-{v.label}" for d in v.descs)
            if v.label == "entity":
                assert ENTITY_ID.match(v.vertex_id), v.vertex_id
            if v.label == "relation":
                assert v.vertex_id.startswith("[") and v.vertex_id.endswith("]")
                members = v.vertex_id[1:-1].split("|")
                assert members == sorted(members) and len(members) >= 2
                assert all(d.label == "relation" for d in v.descs)
            for e in v.out_edges:
                if e.span is not None:
                    assert v.descs[e.span.desc_index].text[e.span.start:e.span.end].lower() == e.text.lower()
        # composition -> member edges are "<singular> k"
        for v in graph.vertices:
            if v.label == "composition":
                assert any(d.label == "hardcode" for d in v.descs)
                texts = [e.text for e in v.out_edges]
                assert all(re.match(r".+ \d+$", t) for t in texts) and len(texts) >= 2
        prov = store.provenance[key]
        assert prov["answers"][0]["kind"] == "image" and prov["prompt_version"]
        assert prov["mllm"] == "scripted" and prov["detector"] == "scripted"
    assert labels == {"image", "entity", "composition", "relation"}
    assert summary.backends["mllm"]["calls"] > 0 and summary.backends["detector"]["calls"] > 0


def test_same_seed_same_graphs_whatever_the_batching(tmp_path):
    images = make_images(tmp_path / "imgs", 8)
    a = AnnotateConfig().with_overrides({"mllm.batch_size": 1, "detector.batch_size": 1, "limits.images_in_flight": 1})
    b = AnnotateConfig().with_overrides({"mllm.batch_size": 7, "detector.batch_size": 3, "limits.images_in_flight": 8})
    _, s1 = scripted_run(images, a)
    _, s2 = scripted_run(images, b, mllm_options={"latency_per_item_s": 0.0005})
    assert sorted(s1.graphs) == sorted(s2.graphs)
    for key in s1.graphs:
        assert s1.graphs[key].to_dict("full") == s2.graphs[key].to_dict("full")
    # a different seed changes randomised parts (relation counts, hints) but never validity
    _, s3 = scripted_run(images, AnnotateConfig(seed=5))
    assert all(g.validate() == [] for g in s3.graphs.values())


def test_batches_mix_images(tmp_path):
    images = make_images(tmp_path / "imgs", 12)
    mllm = create_mllm("scripted", {"max_batch_size": 16})
    calls = []
    original = mllm.generate

    def spy(requests):
        calls.append({r.image_key for r in requests})
        return original(requests)

    mllm.generate = spy
    store = MemoryStore()
    summary = RecursiveAnnotator(AnnotateConfig(), mllm, create_detector("scripted")).run(images, store)
    assert summary.done == 12
    assert max(len(keys) for keys in calls) >= 4  # one call served several images
    assert summary.backends["mllm"]["batch_size"] == 16


# ---------------------------------------------------------------------------- hand-written scene
def scene_answers(request):
    """A horse, three trees and the sky; the tree crops name a 'horse' again (a duplicate)."""
    ctx = request.context
    if request.kind == "image":
        return format_image_answer(
            "A brown horse stands in the snow before three trees under a grey sky.",
            "A [horse][single] near [trees][multiple] under the [sky][single].",
            [TaggedEntity("horse", "single"), TaggedEntity("trees", "multiple"), TaggedEntity("sky", "single")],
        )
    if request.kind == "entity":
        name = ctx["name"]
        if name == "sky":
            return format_entity_answer(None, [], present=False)
        if ctx["vertex_id"] == "trees_0":
            return format_entity_answer("A bare tree with a horse beside its trunk.",
                                        [TaggedEntity("horse", "single"), TaggedEntity("trunk", "single")])
        if name == "horse":
            return format_entity_answer("A brown horse with a black mane.", [TaggedEntity("mane", "single")])
        return format_entity_answer(f"A detailed view of the {name}.", [])
    if request.kind == "composition":
        names = ctx["member_names"]
        return format_composition_answer(f"{names[0]} stands left of " + " and ".join(names[1:]) + ".",
                                         ["Three bare trees in a row."])
    if request.kind == "relation":
        if ctx["vertex_id"] == "":
            return format_relation_answer(["The [horse] stands before the [trees].", "Snow lies under the [horse]."])
        return format_relation_answer(["The [horse] leans on the [trunk]."])
    raise AssertionError(request.kind)


SCENE_BOXES = {
    ("", "horse"): [((0.10, 0.50, 0.40, 0.90), 0.9)],
    ("", "trees"): [((0.10, 0.10, 0.45, 0.95), 0.8), ((0.55, 0.10, 0.70, 0.60), 0.7), ((0.75, 0.10, 0.90, 0.60), 0.6)],
    ("", "sky"): [((0.0, 0.0, 1.0, 0.3), 0.9)],
    ("horse", "mane"): [((0.15, 0.50, 0.25, 0.60), 0.8)],
    # the tree crop finds the same horse (mutual overlap > 0.85): merged, not a new vertex
    ("trees_0", "horse"): [((0.11, 0.50, 0.40, 0.88), 0.7)],
    ("trees_0", "trunk"): [((0.25, 0.50, 0.30, 0.95), 0.8)],
}


@pytest.fixture
def scene(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (400, 300), (200, 200, 210)).save(path)
    return [ImageSource(key="scene.png", path=str(path))]


def run_scene(scene, **overrides):
    config = AnnotateConfig().with_overrides({"detection.from_image.min_rel_area": None,
                                              "detection.from_entity.min_rel_area": None, **overrides})
    mllm, det = TableMllm(scene_answers), TableDetector(SCENE_BOXES)
    store = MemoryStore()
    summary = RecursiveAnnotator(config, mllm, det).run(scene, store)
    return summary, store, mllm, det


def edges_of(graph):
    return sorted((e.source, e.text, e.target) for v in graph.vertices for e in v.out_edges)


def test_scene_graph_follows_the_output_contract(scene):
    summary, store, mllm, det = run_scene(scene)
    assert summary.done == 1, store.records["scene.png"].reason
    g = store.graphs["scene.png"]
    ids = [v.vertex_id for v in g.vertices]
    # order: image, entities in minting order, compositions, relations; "sky" said "not present"
    assert ids == ["", "horse", "trees_0", "trees_1", "trees_2", "horse_mane", "trees_0_trunk", "trees",
                   "[horse|trees]", "[trees_0_horse|trees_0_trunk]"]
    assert edges_of(g) == sorted([
        ("", "horse", "horse"), ("", "trees", "trees"),
        ("trees", "tree 1", "trees_0"), ("trees", "tree 2", "trees_1"), ("trees", "tree 3", "trees_2"),
        ("horse", "mane", "horse_mane"),
        ("trees_0", "horse", "horse"), ("trees_0", "trunk", "trees_0_trunk"),
        ("", "horse", "[horse|trees]"), ("", "trees", "[horse|trees]"),
        ("[horse|trees]", "horse", "horse"), ("[horse|trees]", "trees", "trees"),
        ("trees_0", "horse", "[trees_0_horse|trees_0_trunk]"), ("trees_0", "trunk", "[trees_0_horse|trees_0_trunk]"),
        ("[trees_0_horse|trees_0_trunk]", "horse", "horse"), ("[trees_0_horse|trees_0_trunk]", "trunk", "trees_0_trunk"),
    ])
    horse = g.vertex("horse")
    # merged duplicate: several parents, widened box without a detector score
    assert {p.vertex_id for p, _ in g.parents("horse")} == {"", "trees_0", "[horse|trees]", "[trees_0_horse|trees_0_trunk]"}
    assert horse.bbox.confidence is None and horse.bbox.bottom == pytest.approx(0.9)
    assert g.vertex("trees_1").bbox.confidence == pytest.approx(0.7)
    comp = g.vertex("trees")
    assert [d.label for d in comp.descs][:2] == ["composition", "short"] and comp.descs[-1].label == "hardcode"
    assert comp.bbox.to_xyxy() == pytest.approx((0.1, 0.1, 0.9, 0.95))
    rel = g.vertex("[horse|trees]")
    assert [d.text for d in rel.descs] == ["The horse stands before the trees."]  # the one-member sentence is dropped
    assert rel.bbox.to_xyxy() == pytest.approx((0.1, 0.1, 0.9, 0.95))
    # spans point at the phrase in the parent's captions
    e = next(e for e in g.root.out_edges if e.target == "horse")
    assert g.root.descs[e.span.desc_index].text[e.span.start:e.span.end] == "horse"
    # masks: the mane lies inside the horse
    assert "horse_mane" in horse.sub_masks and "horse" in g.vertex("horse_mane").super_masks
    # context contract of the requests
    entity_ctx = [r.context for call in mllm.calls for r in call if r.kind == "entity"]
    tree0 = next(c for c in entity_ctx if c["vertex_id"] == "trees_0")
    assert tree0["parent_id"] == "" and tree0["name"] == "trees" and tree0["label"] == "multiple"
    assert len(tree0["crop_box"]) == 4
    comp_ctx = next(r.context for call in mllm.calls for r in call if r.kind == "composition")
    assert comp_ctx["member_ids"] == ["trees_0", "trees_1", "trees_2"]
    assert comp_ctx["member_names"] == ["tree 1", "tree 2", "tree 3"] and comp_ctx["parent_id"] == ""
    det_ctx = [r.context for call in det.calls for r in call]
    assert det_ctx[0] == {"vertex_id": "", "crop_box": [0.0, 0.0, 1.0, 1.0],
                          "labels": {"horse": "single", "trees": "multiple", "sky": "single"}}
    # the duplicate horse was never queried a second time
    assert sum(1 for c in entity_ctx if c["name"] == "horse") == 1


@pytest.mark.parametrize(
    "overrides,expected_labels,max_level",
    [
        ({"queries.include_composition": False}, {"image", "entity", "relation"}, None),
        ({"queries.include_relation": False}, {"image", "entity", "composition"}, None),
        ({"queries.include_entity": False}, {"image"}, None),
        ({"limits.max_depth": 1}, {"image", "entity", "composition", "relation"}, 1),
        ({"limits.max_depth": 0}, {"image"}, 0),
    ],
)
def test_switches_and_depth(scene, overrides, expected_labels, max_level):
    summary, store, _, _ = run_scene(scene, **overrides)
    g = store.graphs["scene.png"]
    assert g.validate() == []
    assert {v.label for v in g.vertices} == expected_labels
    if max_level is not None:
        assert all(v.vertex_id.count("_") <= max_level or v.label != "entity" for v in g.vertices
                   if not v.vertex_id.startswith("trees_"))
        assert "horse_mane" not in g
    if overrides == {"queries.include_composition": False}:
        # without a composition vertex, the phrase points at every box
        assert sorted(t.vertex_id for t, text in g.children("") if text == "trees") == [
            "[horse|trees]", "trees_0", "trees_1", "trees_2"]


def test_vertex_budget(scene):
    _, store, _, _ = run_scene(scene, **{"limits.max_vertices_per_image": 4})
    g = store.graphs["scene.png"]
    assert g.n_vertices <= 4 and g.validate() == []
    assert "budget" in " ".join(store.provenance["scene.png"]["notes"])


def test_tiny_crops_scaled_up_and_large_images_scaled_down(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1200, 600), (10, 120, 10)).save(path)
    sizes = {}

    def answer(request):
        sizes.setdefault(request.kind, []).append(request.image.size)
        return scene_answers(request)

    config = AnnotateConfig().with_overrides({"limits.max_image_side": 512, "limits.min_crop_side": 100})
    store = MemoryStore()
    RecursiveAnnotator(config, TableMllm(answer), TableDetector(SCENE_BOXES)).run(
        [ImageSource("big.png", str(path))], store)
    assert sizes["image"] == [(512, 256)]
    # the longest-side cap wins over the upscaling of thin crops (the sky is 1200 x 198 px)
    assert all(max(s) <= 512 and (min(s) >= 100 or max(s) == 512) for s in sizes["entity"])
    assert any(max(s) < 512 and min(s) == 100 for s in sizes["entity"])
    assert store.graphs["big.png"].img_size == (1200, 600)


def test_absent_members_are_left_out_of_compositions_and_relations(scene):
    def answers(request):
        if request.kind == "entity" and request.context["vertex_id"] == "trees_1":
            return format_entity_answer(None, [], present=False)
        return scene_answers(request)

    config = AnnotateConfig().with_overrides({"detection.from_image.min_rel_area": None,
                                              "detection.from_entity.min_rel_area": None})
    mllm = TableMllm(answers)
    store = MemoryStore()
    RecursiveAnnotator(config, mllm, TableDetector(SCENE_BOXES)).run(scene, store)
    assert store.records["scene.png"].status == "done", store.records["scene.png"].reason
    g = store.graphs["scene.png"]
    comp_ctx = next(r.context for call in mllm.calls for r in call if r.kind == "composition")
    # numbering counts only the trees that the model confirmed
    assert comp_ctx["member_ids"] == ["trees_0", "trees_2"] and comp_ctx["member_names"] == ["tree 1", "tree 2"]
    assert sorted((e.text, e.target) for e in g.vertex("trees").out_edges) == [("tree 1", "trees_0"), ("tree 2", "trees_2")]
    # "sky" said it is not there: the relation query of the image does not offer it
    rel_ctx = next(r.context for call in mllm.calls for r in call if r.kind == "relation" and r.context["vertex_id"] == "")
    assert rel_ctx["member_names"] == ["horse", "trees"] and rel_ctx["member_ids"] == ["horse", "trees"]
    assert "trees_1" not in g and g.validate() == []


def test_semantic_same_object_merges_synonyms(tmp_path):
    path = tmp_path / "room.png"
    Image.new("RGB", (400, 300), (180, 150, 120)).save(path)

    def answers(request):
        if request.kind == "image":
            return format_image_answer("A sofa with a lamp beside it.", "A [sofa][single] and a [lamp][single].",
                                       [TaggedEntity("sofa", "single"), TaggedEntity("lamp", "single")])
        if request.kind == "entity" and request.context["vertex_id"] == "lamp":
            return format_entity_answer("A lamp next to a couch.", [TaggedEntity("couch", "single")])
        return format_entity_answer(f"A {request.context.get('name', 'thing')}.", [])

    boxes = {("", "sofa"): [((0.1, 0.5, 0.6, 0.9), 0.9)], ("", "lamp"): [((0.05, 0.1, 0.7, 0.95), 0.8)],
             ("lamp", "couch"): [((0.1, 0.5, 0.6, 0.88), 0.7)]}
    graphs = {}
    for mode in ("rule", "semantic"):
        store = MemoryStore()
        config = AnnotateConfig().with_overrides({"queries.same_object": mode, "queries.include_relation": False})
        RecursiveAnnotator(config, TableMllm(answers), TableDetector(boxes)).run([ImageSource("room.png", str(path))], store)
        graphs[mode] = store.graphs["room.png"]
    assert "lamp_couch" in graphs["rule"]  # names differ: a second vertex for the same object
    semantic = graphs["semantic"]
    assert "lamp_couch" not in semantic
    assert sorted(p.vertex_id for p, _ in semantic.parents("sofa")) == ["", "lamp"]
    assert ("couch", "sofa") in [(e.text, e.target) for e in semantic.vertex("lamp").out_edges]


def test_concurrent_calls_for_servers(tmp_path):
    import threading
    import time

    images = make_images(tmp_path / "imgs", 6)
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    inner = create_mllm("scripted", {"max_batch_size": 4})

    class Server:
        name = "server"
        max_batch_size = 4

        def generate(self, requests):
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.03)
            with lock:
                state["now"] -= 1
            return inner.generate(requests)

    store = MemoryStore()
    config = AnnotateConfig().with_overrides({"mllm.concurrency": 3})
    summary = RecursiveAnnotator(config, Server(), create_detector("scripted")).run(images, store)
    assert summary.done == 6 and state["max"] >= 2
    _, reference = scripted_run(images, AnnotateConfig(), mllm_options={"max_batch_size": 4})
    for key, graph in store.graphs.items():
        assert graph.to_dict("full") == reference.graphs[key].to_dict("full")



def test_graph_does_not_depend_on_the_order_stage2_queries_were_sent(tmp_path, monkeypatch):
    # composition and relation queries start when children have answered, i.e. in an order
    # set by timing when calls overlap; assembling the same job with that order reversed
    # must give the same graph
    real = RecursiveAnnotator._assemble
    seen = []

    def assemble(self, job):
        graph = real(self, job)
        job.compositions.reverse()
        job.relations.reverse()
        seen.append((graph.to_json(), real(self, job).to_json(), len(job.compositions) + len(job.relations)))
        return graph

    monkeypatch.setattr(RecursiveAnnotator, "_assemble", assemble)
    scripted_run(make_images(tmp_path / "imgs", 4, seed=2))
    assert len(seen) == 4 and all(n >= 2 for _, _, n in seen)
    for forward, backward, _ in seen:
        assert forward == backward
