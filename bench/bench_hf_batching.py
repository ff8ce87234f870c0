"""Batching in the transformers MLLM backend, on CPU, with a randomly initialised LLaVA (~200M).

Three measurements in one run, every answer forced to the same length (min_new_tokens =
max_new_tokens) so that batched and one-at-a-time runs do the same work:

1. model calls/s answering N requests (crops of different sizes) in batches vs one at a time
   (the reference pipeline's way);
2. the backend's own overhead: share of ``generate()`` wall time spent outside the model's
   ``generate`` (chat template, image preprocessing, padding, decoding);
3. the same through the engine (``RecursiveAnnotator``) on a few images: the model computes
   real answers of fixed length, but the engine receives the ``scripted`` backend's answers,
   so the workload has the shape of a GBC10M graph (~18 MLLM calls per image). Reported: the
   share of the run's wall time when the model was not computing (target < 10 %).

    python bench/bench_hf_batching.py           # 24 requests, 32 tokens each, 3 images
    python bench/bench_hf_batching.py --quick   # 8 requests, 12 tokens, 1 image

System prompts are cut to ``--prompt-chars`` characters: the shipped prompts (~700 tokens)
would make a CPU run take many minutes; a shorter prefix makes the model's share smaller,
so the overhead figure is, if anything, pessimistic.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/models.py builds the random models

#: shapes of the random LLaVA models (keyword arguments of tests/models.py::llava_configs)
LLAVA_SIZES = {
    "tiny": dict(image_size=30, patch_size=6, vision_hidden=32, vision_layers=2, text_hidden=32, text_layers=2,
                 text_intermediate=64, heads=2),
    # ~200M parameters: a small vision tower and a 14-layer, 1024-wide decoder
    "200m": dict(image_size=112, patch_size=14, vision_hidden=256, vision_layers=4, text_hidden=1024, text_layers=14,
                 text_intermediate=2816, heads=16),
    # LLaVA-1.6 Mistral-7B: CLIP ViT-L/14-336 and Mistral-7B
    "7b": dict(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=24, text_hidden=4096, text_layers=32,
               text_intermediate=14336, heads=32, kv_heads=8, max_positions=32768),
}

#: answer lengths in tokens per query kind, similar to real GBC answers (full runs)
ANSWER_TOKENS = {"image": 256, "entity": 96, "composition": 96, "relation": 64}


def prompt_corpus() -> list:
    """The shipped prompt texts, so that the random tokenizer splits them into realistic token counts."""
    folder = REPO / "gbc" / "annotators" / "prompts"
    return [p.read_text() for p in sorted(folder.glob("*.txt"))]


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


class ModelTimer:
    """Accumulates the wall time spent inside a model (its ``generate`` or its forward passes)."""

    def __init__(self, synchronize=None):
        self.seconds = 0.0
        self.calls = 0
        self._synchronize = synchronize or (lambda: None)
        self._lock = threading.Lock()
        self._starts = {}

    def wrap_generate(self, model) -> None:
        original = model.generate

        def timed(*args, **kwargs):
            self._synchronize()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._synchronize()
                with self._lock:
                    self.seconds += time.perf_counter() - start
                    self.calls += 1

        model.generate = timed  # an instance attribute: only this model object is timed

    def hook_forward(self, model) -> None:
        def before(module, args):
            self._synchronize()
            self._starts[threading.get_ident()] = time.perf_counter()

        def after(module, args, output):
            self._synchronize()
            with self._lock:
                self.seconds += time.perf_counter() - self._starts.pop(threading.get_ident())
                self.calls += 1

        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)


class ComputeWithScriptedAnswers:
    """A backend that makes a real model compute every request but answers with the ``scripted``
    backend's text, so that an engine run has GBC-sized graphs whatever the random model says.

    MLLM requests are sent with fixed answer lengths per query kind (``tokens``) and their
    system prompts cut to ``prompt_chars`` characters when given.
    """

    def __init__(self, real, scripted, tokens=None, prompt_chars=None):
        self.real = real
        self.scripted = scripted
        self.tokens = tokens or {}
        self.prompt_chars = prompt_chars
        self.name = getattr(real, "name", "real")
        self.max_batch_size = real.max_batch_size

    def generate(self, requests):
        from gbc.annotators.backends.base import GenerationOptions

        by_length = {}
        for r in requests:
            n = self.tokens.get(r.kind, r.options.max_new_tokens)
            system = r.system_prompt if self.prompt_chars is None else r.system_prompt[: self.prompt_chars]
            by_length.setdefault(n, []).append(
                dataclasses.replace(r, system_prompt=system, options=GenerationOptions(max_new_tokens=n)))
        for n, sent in by_length.items():
            # every answer exactly n tokens long, whatever the random model emits
            self.real.options.generation_kwargs["min_new_tokens"] = n
            self.real.generate(sent)
        return self.scripted.generate(requests)

    def detect(self, requests):
        self.real.detect(requests)
        return self.scripted.detect(requests)

    def close(self):
        self.real.close()


def make_requests(n: int, tokens: int, prompt_chars: int):
    from PIL import Image

    from gbc.annotators.backends.base import GenerationOptions, MllmRequest

    system = " ".join(prompt_corpus())[:prompt_chars]
    sizes = [(320, 240), (96, 200), (512, 512), (150, 90), (240, 320), (400, 130)]
    return [
        MllmRequest(image=Image.new("RGB", sizes[i % len(sizes)], ((i * 41) % 256, (i * 83) % 256, 120)),
                    system_prompt=system, user_prompt=f"Describe the object number {i} in the picture.",
                    options=GenerationOptions(max_new_tokens=tokens))
        for i in range(n)
    ]


def make_images(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = [(640, 480), (480, 640), (800, 600), (512, 512)][i % 4]
        base = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h)).save(folder / f"img{i:04d}.jpg")


def run_engine(mllm, detector, n_images: int, root: Path, batch_size=None):
    """One engine run over ``n_images`` synthetic pictures; returns (summary, wall seconds)."""
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import discover_images
    from gbc.store.lmdb_store import GraphStore

    make_images(root / "images", n_images)
    config = AnnotateConfig()
    if batch_size:
        config.mllm.batch_size = batch_size
    images = discover_images([root / "images"])
    with GraphStore(root / "bench.lmdb", readonly=False) as store:
        start = time.perf_counter()
        summary = RecursiveAnnotator(config, mllm, detector).run(images, store)
        wall = time.perf_counter() - start
    return summary, wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 requests of 12 tokens, 1 image through the engine")
    parser.add_argument("--size", choices=sorted(LLAVA_SIZES), default="200m", help="random model shape")
    parser.add_argument("--requests", type=int, default=None, help="requests per mode (default 24, quick 8)")
    parser.add_argument("--tokens", type=int, default=None, help="answer length in tokens (default 32, quick 12)")
    parser.add_argument("--batch", type=int, default=8, help="backend max_batch_size")
    parser.add_argument("--prompt-chars", type=int, default=300, help="system prompt length in characters")
    parser.add_argument("--images", type=int, default=None, help="images through the engine (default 3, quick 1; 0: skip)")
    args = parser.parse_args(argv)
    n = args.requests or (8 if args.quick else 24)
    tokens = args.tokens or (12 if args.quick else 32)
    n_images = args.images if args.images is not None else (1 if args.quick else 3)

    import torch

    from models import make_llava, quiet_transformers

    from gbc.annotators.backends.hf_mllm import TransformersMllm
    from gbc.annotators.backends.registry import create_detector, create_mllm

    quiet_transformers()
    torch.set_num_threads(os.cpu_count() or 1)
    model, processor = make_llava(tokenizer_vocab_size=4000, corpus=prompt_corpus(), **LLAVA_SIZES[args.size])
    timer = ModelTimer()
    timer.wrap_generate(model)
    options = TransformersMllm.Options(device="cpu", max_batch_size=args.batch,
                                       generation_kwargs={"min_new_tokens": tokens})
    backend = TransformersMllm.from_loaded(model, processor, options)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"random LLaVA '{args.size}' with {count_parameters(model) / 1e6:.0f}M parameters, fp32", flush=True)
    requests = make_requests(n, tokens, args.prompt_chars)
    prompt_tokens = len(processor.tokenizer(backend.build_prompt(requests[0]))["input_ids"])
    print(f"{n} requests, {tokens} new tokens each, ~{prompt_tokens} prompt tokens + image tokens", flush=True)
    backend.generate(requests[:2])  # warm-up: first-call allocations, template probe

    def measure(batch_size):
        backend.max_batch_size = batch_size
        timer.seconds = 0.0
        start = time.perf_counter()
        answers = backend.generate(requests) if batch_size > 1 else [backend.generate([r])[0] for r in requests]
        wall = time.perf_counter() - start
        assert len(answers) == n
        return wall, timer.seconds

    one_wall, one_model = measure(1)
    batch_wall, batch_model = measure(args.batch)
    print(f"one at a time : {one_wall:7.2f} s  {n / one_wall:6.2f} calls/s  {n * tokens / one_wall:7.1f} tok/s  "
          f"backend overhead {100 * (1 - one_model / one_wall):4.1f}%")
    print(f"batches of {args.batch:<3d}: {batch_wall:7.2f} s  {n / batch_wall:6.2f} calls/s  {n * tokens / batch_wall:7.1f} tok/s  "
          f"backend overhead {100 * (1 - batch_model / batch_wall):4.1f}%")
    print(f"batching speed-up: x{one_wall / batch_wall:.2f} (same requests, same run)", flush=True)

    if n_images > 0:
        backend.max_batch_size = args.batch
        per_kind = {kind: tokens for kind in ANSWER_TOKENS}
        mllm = ComputeWithScriptedAnswers(backend, create_mllm("scripted"), per_kind, args.prompt_chars)
        root = Path(tempfile.mkdtemp(prefix="gbc-bench-hf-"))
        try:
            timer.seconds = 0.0
            summary, wall = run_engine(mllm, create_detector("scripted"), n_images, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        mllm_stats = summary.backends.get("mllm", {})
        print(f"engine: {summary.done}/{summary.images} images in {wall:.2f} s, {mllm_stats.get('requests', 0)} MLLM "
              f"requests in {mllm_stats.get('calls', 0)} calls (mean batch fill "
              f"{100 * mllm_stats.get('mean_batch_fill', 0):.0f}%), {summary.vertices} vertices")
        print(f"engine: model computing {timer.seconds:.2f} s of {wall:.2f} s wall -> time outside the model "
              f"{100 * (1 - timer.seconds / wall):.1f}% (target < 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
