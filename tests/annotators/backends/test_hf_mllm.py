"""The transformers MLLM backend on tiny random LLaVA and LLaVA-NeXT checkpoints (CPU)."""

import pytest
from PIL import Image

from gbc.annotators.backends.base import BackendError, BackendUnavailable, GenerationOptions, MllmRequest
from gbc.annotators.backends.hf_mllm import (
    DEFAULT_CPU_MLLM,
    DEFAULT_CUDA_MLLM,
    TransformersMllm,
    default_mllm_spec,
    resolve_device,
    resolve_dtype,
    scale_image,
)
from gbc.annotators.backends.registry import create_mllm
from out_of_memory import fail_above, rows

SIZES = [(40, 20), (13, 50), (64, 64), (90, 31), (25, 25)]
COLORS = [(200, 10, 10), (0, 120, 30), (20, 20, 220), (240, 240, 0), (90, 90, 90)]


def requests(n=5, max_new_tokens=6, **options):
    return [
        MllmRequest(
            image=Image.new("RGB", SIZES[i % 5], COLORS[i % 5]),
            system_prompt="You describe pictures." if i % 2 == 0 else "",
            user_prompt=["describe this picture", "a red cat", "there is a dog", "two cups", "sky"][i % 5],
            options=GenerationOptions(max_new_tokens=max_new_tokens, **options),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def llava(tiny_llava):
    backend = create_mllm(f"transformers:{tiny_llava}", {"device": "cpu", "max_batch_size": 8})
    yield backend
    backend.close()


def test_construction_loads_nothing(tiny_llava):
    backend = create_mllm(f"transformers:{tiny_llava}")
    assert backend.model is None and backend.processor is None
    assert backend.max_batch_size == TransformersMllm.Options().max_batch_size


def test_batched_generation_one_answer_per_request_deterministic_and_equal_to_single(llava):
    batch = requests(5)
    first = llava.generate(batch)
    assert len(first) == 5 and all(isinstance(t, str) for t in first)
    assert llava.generate(batch) == first  # greedy: deterministic
    singles = [llava.generate([r])[0] for r in batch]
    assert singles == first  # left padding does not change any answer
    assert any(first)  # a random model still produces text


def test_a_backend_around_an_already_loaded_model_answers_the_same(tiny_llava, llava):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava)
    backend = TransformersMllm.from_loaded(model, AutoProcessor.from_pretrained(tiny_llava))
    assert backend.device == "cpu"
    batch = requests(3)
    assert backend.generate(batch) == llava.generate(batch)


def test_requests_with_different_options_keep_their_order(llava):
    batch = requests(4, max_new_tokens=6)
    batch[1].options = GenerationOptions(max_new_tokens=2)
    batch[3].options = GenerationOptions(max_new_tokens=2)
    mixed = llava.generate(batch)
    assert mixed == [llava.generate([r])[0] for r in batch]


def test_sampling_with_a_seed_is_reproducible(llava):
    batch = requests(3, max_new_tokens=8, temperature=1.5, seed=7)
    assert llava.generate(batch) == llava.generate(batch)
    assert llava.generate([]) == []


def test_system_turn_when_the_template_has_one(llava):
    llava.load()
    assert llava.system_mode() == "list"
    prompt = llava.build_prompt(requests(1)[0])
    assert prompt.startswith("You describe pictures.\nUSER: <image>\ndescribe this picture")
    assert prompt.endswith("ASSISTANT:")


def test_llava_next_prepends_the_system_prompt_and_batches_any_resolution(tiny_llava_next):
    backend = create_mllm(f"transformers:{tiny_llava_next}", {"device": "cpu"})
    batch = requests(5)
    answers = backend.generate(batch)
    assert backend.system_mode() == "prepend"  # the Mistral template rejects system turns
    assert backend.build_prompt(batch[0]) == "[INST] <image>\nYou describe pictures.\n\ndescribe this picture [/INST]"
    assert answers == [backend.generate([r])[0] for r in batch]
    backend.close()
    assert backend.model is None


def _out_of_memory_above(backend, limit):
    backend.load()
    backend.model.generate = fail_above(backend.model.generate, limit, rows("input_ids"))
    return backend.model.generate.sizes


def test_out_of_memory_halves_the_batch(tiny_llava, llava):
    batch = requests(5)
    expected = llava.generate(batch)
    backend = create_mllm(f"transformers:{tiny_llava}", {"device": "cpu", "max_batch_size": 5})
    sizes = _out_of_memory_above(backend, 2)
    assert backend.generate(batch) == expected
    assert sizes == [5, 2, 2, 1]  # the batch of 5 fails, then halves: 2 + 2 + the rest
    assert backend.max_batch_size == 2  # later batches start at the size that fitted


def test_production_options_carry_no_testing_aid():
    with pytest.raises(BackendError, match="simulate_oom_above: unknown option"):
        create_mllm("transformers:some/model", {"simulate_oom_above": 2})


def test_out_of_memory_on_a_single_request_is_raised(tiny_llava):
    import torch

    backend = create_mllm(f"transformers:{tiny_llava}", {"device": "cpu"})
    _out_of_memory_above(backend, 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        backend.generate(requests(3))
    assert backend.max_batch_size == 1


@pytest.mark.parametrize(
    "dtype, expected",
    [("float32", "float32"), ("bfloat16", "bfloat16"), ("auto", "float32")],
)
def test_dtype_selection(tiny_llava, dtype, expected):
    import torch

    backend = create_mllm(f"transformers:{tiny_llava}", {"device": "cpu", "dtype": dtype})
    backend.load()
    assert next(backend.model.parameters()).dtype == getattr(torch, expected)
    assert len(backend.generate(requests(2, max_new_tokens=3))) == 2


def test_device_and_dtype_resolution():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else resolve_device("auto"))
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", "mps") == torch.float16
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    assert default_mllm_spec("cuda") == f"transformers:{DEFAULT_CUDA_MLLM}"
    assert default_mllm_spec("cpu") == f"transformers:{DEFAULT_CPU_MLLM}"


@pytest.mark.parametrize(
    "size, max_side, expected",
    [((2000, 1000), 1024, (1024, 512)), ((300, 900), 300, (100, 300)), ((50, 40), 1024, (50, 40)), ((50, 40), None, (50, 40))],
)
def test_scale_image(size, max_side, expected):
    scaled = scale_image(Image.new("L", size), max_side)
    assert scaled.size == expected and scaled.mode == "RGB"


def test_missing_hub_model_gives_one_clear_error():
    backend = create_mllm("transformers:no-such-org/no-such-model-xyz")
    with pytest.raises(BackendUnavailable, match=r"`hf download no-such-org/no-such-model-xyz`"):
        backend.generate(requests(1))


def test_missing_local_folder_gives_a_clear_error(tmp_path):
    backend = create_mllm(f"transformers:{tmp_path / 'absent'}")
    with pytest.raises(BackendUnavailable, match="absent"):
        backend.generate(requests(1))


@pytest.mark.parametrize("spec, options", [("transformers:", {}), ("transformers:x", {"bogus": 1}), ("transformers:x", {"dtype": "int3"})])
def test_bad_specs_and_options(spec, options):
    with pytest.raises(BackendError):
        create_mllm(spec, options)


@pytest.mark.gpu
def test_cuda_bf16_batched_generation(tiny_llava):
    import torch

    backend = create_mllm(f"transformers:{tiny_llava}", {"device": "auto"})
    answers = backend.generate(requests(5))
    assert backend.device == "cuda" and next(backend.model.parameters()).dtype == torch.bfloat16
    assert len(answers) == 5
    backend.close()


def test_engine_runs_end_to_end_on_the_model_backends(tiny_llava, tiny_grounding_dino, tmp_path):
    from gbc.annotators.backends.registry import create_detector
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import discover_images
    from gbc.store.lmdb_store import GraphStore

    for i, size in enumerate([(120, 80), (64, 96)]):
        Image.new("RGB", size, COLORS[i]).save(tmp_path / f"img{i}.png")
    images = discover_images([tmp_path])
    config = AnnotateConfig()
    for kind in ("image", "entity", "composition", "relation"):
        getattr(config.generation, kind).max_new_tokens = 6
    detector = create_detector(f"grounding-dino:{tiny_grounding_dino}", {"device": "cpu", "threshold": 0.0})

    # a random LLaVA answers gibberish: every image ends failed with that reason, the run goes on
    annotator = RecursiveAnnotator(config, create_mllm(f"transformers:{tiny_llava}", {"device": "cpu"}), detector)
    with GraphStore(tmp_path / "random.lmdb", readonly=False) as store:
        summary = annotator.run(images, store)
    assert summary.failed == 2 and summary.failures == {"NoUsableAnswer": 2}
    assert summary.backends["mllm"]["requests"] == 2

    # well-formed answers (scripted) drive the real detector through the recursion; the random
    # detector's boxes are small and weak, so the engine's filters are opened up
    for section in (config.detection.from_image, config.detection.from_entity):
        section.score_threshold, section.min_abs_area_px, section.min_rel_area = 0.0, None, None
    annotator = RecursiveAnnotator(config, create_mllm("scripted"), detector)
    with GraphStore(tmp_path / "scripted.lmdb", readonly=False) as store:
        summary = annotator.run(images, store)
    assert summary.done == 2 and summary.backends["detector"]["requests"] >= 2
    assert summary.vertices > 2
