"""The scripted backends: deterministic, batch-independent, valid formats, validated options."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from gbc.annotators.backends.base import BackendError, DetectionRequest, MllmRequest
from gbc.annotators.backends.registry import create_detector, create_mllm, registered_backends
from gbc.annotators.backends.scripted import ScriptedDetector, ScriptedFailure, ScriptedMllm, image_statistics

COLOURS = [(200, 40, 30), (30, 160, 60), (40, 90, 220), (20, 20, 25), (230, 230, 225)]


def _image(colour=(40, 90, 220), size=(64, 48)):
    return Image.new("RGB", size, colour)


def _req(kind="image", key="photos/a.jpg", colour=(40, 90, 220), **context):
    context.setdefault("vertex_id", "")
    return MllmRequest(image=_image(colour), system_prompt="s", user_prompt="u", kind=kind, image_key=key, context=context)


def _requests():
    return [
        _req("image", "a.jpg"),
        _req("image", "b.jpg", (200, 40, 30)),
        _req("entity", "a.jpg", vertex_id="house", name="house", label="single"),
        _req("entity", "a.jpg", vertex_id="trees_1", name="trees", label="multiple"),
        _req("entity", "a.jpg", vertex_id="house_roof", name="roof", label="single"),
        _req("composition", "a.jpg", vertex_id="trees", name="trees", member_names=["tree 1", "tree 2", "tree 3"]),
        _req("relation", "a.jpg", vertex_id="", member_names=["sky", "trees", "house"]),
    ]


def test_registered_under_scripted():
    table = registered_backends()
    assert table["mllm"]["scripted"] is ScriptedMllm
    assert table["detector"]["scripted"] is ScriptedDetector
    assert create_mllm("scripted:7").seed == 7
    assert create_detector("scripted").seed == 0


@pytest.mark.parametrize(
    "factory, spec, options, message",
    [
        (create_mllm, "scripted:seven", None, "integer seed"),
        (create_mllm, "scripted", {"no_such_option": 1}, "no_such_option"),
        (create_mllm, "scripted", {"fail_rate": 1.5}, "fail_rate"),
        (create_mllm, "scripted", {"latency_s": -1}, "latency_s"),
        (create_detector, "scripted", {"odd_rate": 0.1}, "odd_rate"),  # an MLLM-only option
        (create_detector, "scripted", {"max_boxes": 1}, "max_boxes"),
    ],
)
def test_bad_spec_or_options_are_errors(factory, spec, options, message):
    with pytest.raises(BackendError, match=message):
        factory(spec, options)


def test_same_request_same_answer_whatever_the_batch():
    reqs = _requests()
    a = create_mllm("scripted:1", {"max_batch_size": 3})
    b = create_mllm("scripted:1")
    together = a.generate(reqs)
    alone = [b.generate([r])[0] for r in reqs]
    reversed_ = list(reversed(b.generate(list(reversed(reqs)))))
    assert together == alone == reversed_
    assert a.max_batch_size == 3 and a.calls == 1 and b.calls == len(reqs) + 1


def test_seed_key_and_image_change_the_answers():
    base = create_mllm("scripted:1").generate([_req("image", "a.jpg")])[0]
    other_seed = create_mllm("scripted:2").generate([_req("image", "a.jpg")])[0]
    answers = {create_mllm("scripted:1").generate([_req("image", f"img{i}.jpg", c)])[0]
               for i, c in enumerate(COLOURS)}
    assert base != other_seed
    assert len(answers) == len(COLOURS)


def test_image_statistics_reads_the_colour():
    assert image_statistics(_image((255, 0, 0))) == (240, 0, 0)
    assert image_statistics(None) == (0, 0, 0)


def test_answers_parse_back_with_the_engine_parsers():
    from gbc.annotators import parsers
    mllm = create_mllm("scripted:3")
    for i, colour in enumerate(COLOURS):
        image_text, entity_text, deep_text, comp_text, rel_text = mllm.generate([
            _req("image", f"x{i}.jpg", colour),
            _req("entity", f"x{i}.jpg", colour, vertex_id="dog", name="dog", label="single"),
            _req("entity", f"x{i}.jpg", colour, vertex_id="dog_ears_0", name="ears", label="multiple"),
            _req("composition", f"x{i}.jpg", colour, vertex_id="cups", name="cups", member_names=["cup 1", "cup 2"]),
            _req("relation", f"x{i}.jpg", colour, vertex_id="", member_names=["table", "cups", "lamp"]),
        ])
        image = parsers.parse_image_answer(image_text)
        assert image.detail and image.short and "[" not in image.short
        assert 3 <= len(image.entities) <= 5
        assert all(e.label in ("single", "multiple") for e in image.entities)
        entity = parsers.parse_entity_answer(entity_text, "dog")
        if entity.present:
            assert entity.detail and len(entity.entities) <= 3
        deep = parsers.parse_entity_answer(deep_text, "ears")
        assert deep.entities == []  # depth 2: no further parts, recursion ends
        comp = parsers.parse_composition_answer(comp_text, ["cup 1", "cup 2"])
        assert "cup 2" in comp.composition.lower() and len(comp.descriptions) == 2
        rel = parsers.parse_relation_answer(rel_text, ["table", "cups", "lamp"])
        assert rel.relations and all(len(members) >= 2 for _, members in rel.relations)


def test_odd_answers_do_not_break_the_parsers():
    from gbc.annotators import parsers
    normal = create_mllm("scripted:4")
    odd = create_mllm("scripted:4", {"odd_rate": 1.0})
    reqs = [_req("image", f"k{i}.jpg", c) for i, c in enumerate(COLOURS)] + _requests()
    odd_answers = odd.generate(reqs)
    assert all(o != n for o, n in zip(odd_answers, normal.generate(reqs)))
    for req, text in zip(reqs, odd_answers):
        if req.kind == "image":
            parsers.parse_image_answer(text)
        elif req.kind == "entity":
            parsers.parse_entity_answer(text, req.context["name"])
        elif req.kind == "composition":
            parsers.parse_composition_answer(text, req.context["member_names"])
        else:
            parsers.parse_relation_answer(text, req.context["member_names"])


def test_detector_boxes_are_valid_deterministic_and_batch_independent():
    det = create_detector("scripted:2")
    phrases = ["sky", "trees", "house", "people", "dog", "clouds"]
    labels = {"trees": "multiple", "people": "multiple", "clouds": "multiple"}
    reqs = [
        DetectionRequest(_image(c), phrases, f"img{i}.jpg", {"vertex_id": "", "crop_box": [0, 0, 1, 1], "labels": labels})
        for i, c in enumerate(COLOURS)
    ] + [DetectionRequest(_image(), ["roof", "windows"], "img0.jpg",
                          {"vertex_id": "house", "crop_box": [0.2, 0.2, 0.6, 0.7], "labels": {"windows": "multiple"}})]
    together = det.detect(reqs)
    alone = [create_detector("scripted:2").detect([r])[0] for r in reqs]
    assert together == alone
    counts = {"single": [], "multiple": []}
    for req, result in zip(reqs, together):
        assert set(result) <= set(req.phrases)
        for phrase, found in result.items():
            label = req.context["labels"].get(phrase, "single")
            counts[label].append(len(found.boxes))
            assert len(found.boxes) == len(found.scores) >= 1
            assert found.scores == sorted(found.scores, reverse=True) and all(0 < s < 1 for s in found.scores)
            for left, top, right, bottom in found.boxes:
                assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1
                if req.context["vertex_id"]:  # parts lie inside the entity, well below its size
                    assert 0.1 <= left and right <= 0.9 and (right - left) * (bottom - top) < 0.8
            # boxes of one phrase are side by side: the engine must not merge them
            for i in range(len(found.boxes)):
                for j in range(i + 1, len(found.boxes)):
                    assert found.boxes[i][2] <= found.boxes[j][0]
    assert set(counts["single"]) == {1}
    assert counts["multiple"] and all(2 <= n <= 4 for n in counts["multiple"])
    missing = sum(len(r.phrases) - len(res) for r, res in zip(reqs, together))
    assert 0 < missing < sum(len(r.phrases) for r in reqs) / 2


def test_fail_on_fail_times_and_fail_rate():
    mllm = create_mllm("scripted", {"fail_on": ["broken"], "fail_times": 1})
    good = _req("image", "ok.jpg")
    assert mllm.generate([good])
    with pytest.raises(ScriptedFailure, match="broken/1.jpg"):
        mllm.generate([good, _req("image", "broken/1.jpg")])
    assert len(mllm.generate([good, _req("image", "broken/1.jpg")])) == 2  # failed once, then succeeds
    always = create_detector("scripted", {"fail_rate": 1.0})
    for _ in range(3):
        with pytest.raises(ScriptedFailure):
            always.detect([DetectionRequest(_image(), ["sky"], "a.jpg", {"vertex_id": ""})])
    some = create_mllm("scripted", {"fail_rate": 0.5})
    outcomes = []
    for i in range(40):
        try:
            some.generate([_req("image", f"r{i}.jpg")])
            outcomes.append(True)
        except ScriptedFailure:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35


def test_options_from_the_command_line_and_pickling():
    import pickle

    mllm = create_mllm("scripted:3", {"fail_on": "a.jpg, b.jpg", "fail_times": 1})
    assert mllm.options.fail_on == ["a.jpg", "b.jpg"]
    copy = pickle.loads(pickle.dumps(mllm))
    assert copy.seed == 3 and copy.generate([_req("image", "c.jpg")]) == mllm.generate([_req("image", "c.jpg")])
    with pytest.raises(ScriptedFailure):
        copy.generate([_req("image", "a.jpg")])


def test_latency_options_sleep():
    mllm = create_mllm("scripted", {"latency_s": 0.05, "latency_per_item_s": 0.01})
    start = time.perf_counter()
    mllm.generate([_req("image", "a.jpg"), _req("image", "b.jpg")])
    assert time.perf_counter() - start >= 0.07


def test_unknown_kind_is_an_error():
    with pytest.raises(BackendError, match="unknown query kind"):
        create_mllm("scripted").generate([_req("poem", "a.jpg")])


class _Store:
    """The two calls the engine makes on a store, kept in memory."""

    def __init__(self):
        self.graphs, self.failed = {}, {}

    def commit_image(self, key, graph, provenance=None, **_):
        self.graphs[key] = graph

    def mark_failed(self, key, reason, **_):
        self.failed[key] = reason


def _engine_sources(tmp_path, n):
    from gbc.annotators.images import ImageSource

    sources = []
    for i in range(n):
        colour = ((i * 67) % 256, (i * 131 + 40) % 256, (i * 29 + 90) % 256)
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (320, 240), colour).save(path)
        sources.append(ImageSource(key=path.name, path=str(path)))
    return sources


def test_engine_makes_gbc10m_sized_graphs(tmp_path):
    """Through the real engine with its default settings: valid graphs of GBC10M size."""
    sources = _engine_sources(tmp_path, 12)
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator

    Store = _Store
    store = Store()
    summary = RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(sources, store)
    assert store.failed == {} and len(store.graphs) == 12
    sizes = [g.n_vertices for g in store.graphs.values()]
    assert all(g.validate() == [] for g in store.graphs.values())
    assert 10 <= sum(sizes) / len(sizes) <= 20 and max(sizes) <= 40
    labels = {v.label for g in store.graphs.values() for v in g.vertices}
    assert labels == {"image", "entity", "composition", "relation"}
    calls = (summary.backends["mllm"]["requests"] + summary.backends["detector"]["requests"]) / len(sources)
    assert 10 <= calls <= 26
    # deterministic: a second run gives the same graphs
    again = Store()
    RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(sources, again)
    assert {k: g.to_dict() for k, g in again.graphs.items()} == {k: g.to_dict() for k, g in store.graphs.items()}


def test_engine_survives_odd_answers_and_failing_requests(tmp_path):
    """Malformed answers and failing requests end as failed images with a reason, never a crash;
    a request that fails once is retried and its image is done."""
    sources = _engine_sources(tmp_path, 12)
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator

    config = AnnotateConfig.from_mapping({"mllm": {"retries": 1, "backoff_s": 0}, "detector": {"retries": 1, "backoff_s": 0}})
    store = _Store()
    mllm = create_mllm("scripted", {"odd_rate": 0.3, "fail_on": ["img3.png"]})
    RecursiveAnnotator(config, mllm, create_detector("scripted", {"fail_on": ["img5.png"], "fail_times": 1})).run(sources, store)
    assert set(store.graphs) | set(store.failed) == {s.key for s in sources}
    assert "img3.png" in store.failed and "scripted failure" in store.failed["img3.png"]
    assert "img5.png" in store.graphs or "img5.png" in store.failed and "scripted failure" not in store.failed["img5.png"]
    assert len(store.graphs) >= 6  # most images still get a graph
    reasons = " ".join(store.failed.values())
    assert "no usable caption" in reasons  # an odd image answer with no caption fails its image
    assert all(g.validate() == [] for g in store.graphs.values())
