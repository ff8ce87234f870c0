"""Grounding DINO and OWLv2 backends on tiny random checkpoints (CPU)."""

import pytest
from PIL import Image

from gbc.annotators.backends.base import BackendError, BackendUnavailable, DetectionRequest
from gbc.annotators.backends.hf_detectors import (
    DEFAULT_DETECTOR,
    GroundingDinoDetector,
    Owlv2Detector,
    clip_box,
    default_detector_spec,
    phrase_positions,
    unique_phrases,
)
from gbc.annotators.backends.registry import create_detector
from out_of_memory import fail_above, rows

PHRASES = ["cat", "red sofa", "man", "two cups", "tree"]


def picture(size, seed):
    """A deterministic picture with some structure (random models see only pixels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def check_result(found, phrases, threshold):
    assert set(found) <= set(phrases)
    for detections in found.values():
        assert len(detections.boxes) == len(detections.scores) > 0
        assert detections.scores == sorted(detections.scores, reverse=True)
        assert all(s >= threshold for s in detections.scores)
        for left, top, right, bottom in detections.boxes:
            assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1


def flat(boxes):
    return [v for box in boxes for v in box]


def same(a, b, tol=1e-4):
    assert set(a) == set(b)
    for phrase in a:
        assert len(a[phrase].boxes) == len(b[phrase].boxes)
        for x, y in zip(a[phrase].boxes + [tuple(a[phrase].scores)], b[phrase].boxes + [tuple(b[phrase].scores)]):
            assert x == pytest.approx(y, abs=tol)


@pytest.fixture(scope="module")
def dino(tiny_grounding_dino):
    return create_detector(f"grounding-dino:{tiny_grounding_dino}", {"device": "cpu", "threshold": 0.3})


@pytest.fixture(scope="module")
def owl(tiny_owlv2):
    return create_detector(f"owlv2:{tiny_owlv2}", {"device": "cpu", "threshold": 0.0})


def test_construction_loads_nothing(tiny_grounding_dino, tiny_owlv2):
    assert create_detector(f"grounding-dino:{tiny_grounding_dino}").model is None
    assert create_detector(f"owlv2:{tiny_owlv2}").model is None
    assert default_detector_spec() == f"grounding-dino:{DEFAULT_DETECTOR}"


@pytest.mark.parametrize("fixture", ["dino", "owl"])
def test_several_images_several_phrases_in_one_batch(request, fixture):
    detector = request.getfixturevalue(fixture)
    requests = [
        DetectionRequest(image=picture((80, 40), 1), phrases=PHRASES[:3]),
        DetectionRequest(image=picture((30, 50), 2), phrases=PHRASES[2:]),
        DetectionRequest(image=picture((64, 64), 3), phrases=[]),
        DetectionRequest(image=picture((120, 45), 4), phrases=["cat", "cat", " ", "tree"]),
    ]
    results = detector.detect(requests)
    assert len(results) == 4 and results[2] == {}
    for request, found in zip(requests, results):
        check_result(found, request.phrases, detector.options.threshold)
    assert results[0] and results[1] and results[3]
    assert set(results[3]) <= {"cat", "tree"}
    assert detector.detect([]) == []


@pytest.mark.parametrize("fixture", ["dino", "owl"])
def test_batch_equals_single_requests(request, fixture):
    detector = request.getfixturevalue(fixture)
    # equal sizes: Grounding DINO pads a batch to its largest image, which shifts its features
    requests = [DetectionRequest(image=picture((60, 40), seed), phrases=PHRASES[seed:]) for seed in range(3)]
    together = detector.detect(requests)
    for req, found in zip(requests, together):
        same(found, detector.detect([req])[0])


def _out_of_memory_above(detector, limit):
    detector.load()
    detector.model.forward = fail_above(detector.model.forward, limit, rows("pixel_values"))
    return detector.model.forward.sizes


def test_out_of_memory_halves_the_batch(tiny_owlv2, owl):
    import torch

    requests = [DetectionRequest(image=picture((60, 40), seed), phrases=PHRASES[:2]) for seed in range(5)]
    halving = create_detector(f"owlv2:{tiny_owlv2}", {"device": "cpu", "threshold": 0.0})
    sizes = _out_of_memory_above(halving, 2)
    for got, expected in zip(halving.detect(requests), owl.detect(requests)):
        same(got, expected)
    assert sizes[0] == 5 and max(sizes[1:]) == 2
    assert halving.max_batch_size == 2
    always = create_detector(f"owlv2:{tiny_owlv2}", {"device": "cpu"})
    _out_of_memory_above(always, 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        always.detect(requests[:2])


@pytest.mark.parametrize("spec", ["owlv2:some/model", "grounding-dino:some/model"])
def test_production_options_carry_no_testing_aid(spec):
    with pytest.raises(BackendError, match="simulate_oom_above: unknown option"):
        create_detector(spec, {"simulate_oom_above": 2})


def test_grounding_dino_boxes_match_the_processor_post_processing(tiny_grounding_dino):
    import torch
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    image = picture((90, 40), 5)
    detector = create_detector(f"grounding-dino:{tiny_grounding_dino}", {"device": "cpu", "threshold": 0.0})
    found = detector.detect([DetectionRequest(image=image, phrases=["red sofa"])])[0]["red sofa"]
    processor = AutoProcessor.from_pretrained(tiny_grounding_dino)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_grounding_dino)
    inputs = processor(images=image, text="red sofa .", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    [post] = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(40, 90)]
    )
    expected = [clip_box(x0 / 90, y0 / 40, x1 / 90, y1 / 40) for x0, y0, x1, y1 in post["boxes"].tolist()]
    expected = sorted(b for b in expected if b[2] > b[0] and b[3] > b[1])
    assert flat(sorted(found.boxes)) == pytest.approx(flat(expected), abs=1e-5)
    # the phrase score is the best of the phrase's own tokens (never above the any-token score)
    assert max(found.scores) <= float(post["scores"].max()) + 1e-6


def test_owlv2_unpads_the_square(tiny_owlv2):
    import torch
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    image = picture((90, 40), 6)  # wide: padded at the bottom to 90 x 90
    detector = create_detector(f"owlv2:{tiny_owlv2}", {"device": "cpu", "threshold": 0.0})
    found = detector.detect([DetectionRequest(image=image, phrases=["cat"])])[0]["cat"]
    processor = AutoProcessor.from_pretrained(tiny_owlv2)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_owlv2)
    inputs = processor(text=[["cat"]], images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    [post] = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[(90, 90)])
    expected = [clip_box(x0 / 90, y0 / 40, x1 / 90, y1 / 40) for x0, y0, x1, y1 in post["boxes"].tolist()]
    expected = sorted(b for b in expected if b[2] > b[0] and b[3] > b[1])  # boxes only in the padding vanish
    assert flat(sorted(found.boxes)) == pytest.approx(flat(expected), abs=1e-5)
    assert len(found.boxes) <= len(post["boxes"])


def test_long_phrase_lists_are_split_to_fit_the_text_limit(tiny_grounding_dino_short):
    detector = GroundingDinoDetector(str(tiny_grounding_dino_short), GroundingDinoDetector.Options(device="cpu", threshold=0.0))
    detector.load()
    phrases = ["red sofa", "two cups", "a man with a dog", "tree", "cat", "blue car in the sky"]
    chunks = detector.split_phrases(phrases)
    assert len(chunks) > 1 and [p for c in chunks for p in c] == phrases
    tokenizer = detector.processor.tokenizer
    for chunk in chunks:
        prompt = " . ".join(chunk) + " ."
        assert len(tokenizer(prompt)["input_ids"]) <= 12
    [found] = detector.detect([DetectionRequest(image=picture((50, 50), 7), phrases=phrases)])
    assert set(found) == set(phrases)  # threshold 0: every phrase gets its boxes back


def test_max_phrases_per_pass(tiny_grounding_dino):
    detector = GroundingDinoDetector(str(tiny_grounding_dino), GroundingDinoDetector.Options(device="cpu", max_phrases_per_pass=2))
    detector.load()
    assert detector.split_phrases(PHRASES) == [PHRASES[:2], PHRASES[2:4], PHRASES[4:]]
    owl = Owlv2Detector("x", Owlv2Detector.Options(max_queries_per_pass=3))
    assert owl.split_phrases(PHRASES) == [PHRASES[:3], PHRASES[3:]]


def test_phrase_positions_from_offsets(tiny_grounding_dino):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_grounding_dino).tokenizer
    prompt = "red sofa . cat . two cups ."
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    # [CLS] red sofa . cat . two cups . [SEP]
    assert phrase_positions(offsets, [(0, 8), (11, 14), (17, 25)]) == [[1, 2], [4], [6, 7]]


def test_unique_phrases_and_clip():
    assert unique_phrases(["a", "b", "a", "", "  ", "c"]) == ["a", "b", "c"]
    assert clip_box(-0.2, 0.5, 1.3, 0.9) == (0.0, 0.5, 1.0, 0.9)


def test_missing_model_and_bad_options():
    detector = create_detector("owlv2:no-such-org/no-such-owl")
    with pytest.raises(BackendUnavailable, match="`hf download no-such-org/no-such-owl`"):
        detector.detect([DetectionRequest(image=picture((20, 20), 0), phrases=["cat"])])
    with pytest.raises(BackendError):
        create_detector("grounding-dino:x", {"box_threshold": 0.3})
    with pytest.raises(BackendError):
        create_detector("grounding-dino:")


@pytest.mark.gpu
def test_cuda_detection(tiny_grounding_dino):
    detector = create_detector(f"grounding-dino:{tiny_grounding_dino}", {"threshold": 0.0})
    [found] = detector.detect([DetectionRequest(image=picture((64, 48), 8), phrases=PHRASES)])
    assert detector.device == "cuda" and set(found) == set(PHRASES)
