"""Images/s per GPU through the engine with LLaVA-1.6-7B-sized and Grounding-DINO-tiny-sized models.

Runs offline: both models are randomly initialised from their configurations (no download).
The MLLM is LLaVA-NeXT with the shapes of llava-v1.6-mistral-7b (CLIP ViT-L/14-336 + Mistral-7B,
anyres tiles, bf16); the detector has grounding-dino-tiny's shapes (Swin-T + BERT-base, fp32,
800-1333 px preprocessing). The models compute every request of the engine at full cost with
answers of fixed length per query kind, while the engine receives the ``scripted`` backend's
answers, so that each image yields a graph of GBC10M size (about 18 MLLM and 5 detector
requests). Reported: images/s, requests per call (batch fill), model busy time and peak memory.

    python bench/gpu_throughput.py            # 64 images, full answer lengths
    python bench/gpu_throughput.py --quick    # 12 images, half answer lengths
    python bench/gpu_throughput.py --size tiny --device cpu --quick   # smoke test without a GPU

The baseline in the same run is the engine with batches of one request (``--no-baseline`` to
skip), i.e. the one-request-at-a-time regime of the reference pipeline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_hf_batching import (  # noqa: E402
    ANSWER_TOKENS,
    LLAVA_SIZES,
    ComputeWithScriptedAnswers,
    ModelTimer,
    count_parameters,
    prompt_corpus,
    run_engine,
)


def build_backends(size: str, device: str, mllm_batch: int, det_batch: int, root: Path):
    import torch

    from models import make_grounding_dino, make_llava

    from gbc.annotators.backends.hf_detectors import GroundingDinoDetector
    from gbc.annotators.backends.hf_mllm import TransformersMllm

    cuda = device.startswith("cuda")
    start = time.perf_counter()
    model, processor = make_llava(
        next_version=True, tokenizer_vocab_size=8000, corpus=prompt_corpus(),
        vocab_size=32064 if size == "7b" else None, device=device,
        dtype=torch.bfloat16 if cuda else torch.float32, **LLAVA_SIZES[size],
    )
    mllm = TransformersMllm.from_loaded(model, processor, TransformersMllm.Options(device=device, max_batch_size=mllm_batch))
    det_model, det_processor = make_grounding_dino(root / "vocab", full_size=size != "tiny", device=device)
    detector = GroundingDinoDetector.from_loaded(
        det_model, det_processor, GroundingDinoDetector.Options(device=device, max_batch_size=det_batch))
    sync = torch.cuda.synchronize if cuda else None
    mllm_timer, det_timer = ModelTimer(sync), ModelTimer(sync)
    mllm_timer.wrap_generate(model)
    det_timer.hook_forward(det_model)
    print(f"models built in {time.perf_counter() - start:.1f} s: LLaVA-NeXT '{size}' "
          f"{count_parameters(model) / 1e9:.2f}B parameters ({next(model.parameters()).dtype}), "
          f"Grounding DINO {count_parameters(det_model) / 1e6:.0f}M parameters", flush=True)
    return mllm, detector, mllm_timer, det_timer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 images, half answer lengths")
    parser.add_argument("--size", choices=["tiny", "7b"], default="7b", help="model shapes (tiny: smoke test)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu only with --size tiny)")
    parser.add_argument("--images", type=int, default=None, help="images (default 64, quick 12)")
    parser.add_argument("--mllm-batch", type=int, default=32, help="MLLM max_batch_size")
    parser.add_argument("--det-batch", type=int, default=16, help="detector max_batch_size")
    parser.add_argument("--no-baseline", action="store_true", help="skip the batch-of-one baseline run")
    args = parser.parse_args(argv)
    n_images = args.images or (12 if args.quick else 64)
    scale = 0.5 if args.quick else 1.0
    tokens = {kind: max(4, int(n * scale)) for kind, n in ANSWER_TOKENS.items()}

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from models import quiet_transformers

    from gbc.annotators.backends.registry import create_detector, create_mllm

    quiet_transformers()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --size tiny --device cpu for a smoke test", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU x{os.cpu_count()}"
    print(f"device: {name}; torch {torch.__version__}; {n_images} images; answer tokens {tokens}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="gbc-gpu-bench-"))
    try:
        real_mllm, real_det, mllm_timer, det_timer = build_backends(args.size, args.device, args.mllm_batch, args.det_batch, root)
        mllm = ComputeWithScriptedAnswers(real_mllm, create_mllm("scripted"), tokens)
        detector = ComputeWithScriptedAnswers(real_det, create_detector("scripted"))
        run_engine(mllm, detector, 1, root / "warmup")  # allocations, kernels, template probe
        runs = [("batched", None)] + ([] if args.no_baseline else [("one request per call", 1)])
        results = {}
        for label, batch in runs:
            mllm_timer.seconds = det_timer.seconds = 0.0
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(args.device)
            count = n_images if batch is None else max(2, n_images // 4)  # the slow baseline on fewer images
            summary, wall = run_engine(mllm, detector, count, root / label.replace(" ", "-"), batch_size=batch)
            m, d = summary.backends.get("mllm", {}), summary.backends.get("detector", {})
            results[label] = count / wall
            peak = (f", peak GPU memory {torch.cuda.max_memory_allocated(args.device) / 2**30:.1f} GiB"
                    if args.device.startswith("cuda") else "")
            print(f"[{label}] {summary.done}/{summary.images} images in {wall:.1f} s = {count / wall:.3f} images/s; "
                  f"MLLM {m.get('requests', 0)} requests in {m.get('calls', 0)} calls "
                  f"({m.get('requests', 0) / max(1, m.get('calls', 1)):.1f}/call), detector {d.get('requests', 0)} "
                  f"in {d.get('calls', 0)} calls; MLLM busy {100 * mllm_timer.seconds / wall:.0f}%, detector busy "
                  f"{100 * det_timer.seconds / wall:.0f}% of wall{peak}", flush=True)
        if len(results) == 2:
            print(f"speed-up of batching across images: x{results['batched'] / results['one request per call']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
