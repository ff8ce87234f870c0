"""Caption scoring throughput: batched across graphs (``CaptionScorer``) vs one caption at a time.

The one-at-a-time baseline is the reference pipeline's shape without its batching: every
caption's crop and text are encoded alone (the image of a graph is read once). Both run in
the same process on the same graphs, so the ratio is measured, not assumed. The graphs are
synthetic (~12 vertices and ~18 captions each, the size of a GBC10M graph) over JPEG images
written to a temporary folder, so image decoding and cropping are part of the cost.

    python bench/bench_score.py --quick                    # CPU, tiny random CLIP (aim: >= 10x)
    python bench/bench_score.py --size l14-336 --device cuda --dtype bfloat16 --graphs 400
        # GPU: random weights shaped like CLIP ViT-L/14 at 336 px (aim: >= 2,000 captions/s on one H100/H200)

The scores of both ways are compared as a check (largest absolute difference printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/models.py builds the random models

#: keyword arguments of tests/models.py::make_clip
CLIP_SIZES = {
    "tiny": dict(image_size=32, patch_size=8, hidden=32, layers=2, heads=2, projection_dim=32, context_length=16),
    # CLIP ViT-L/14 at 336 px: vision 1024 x 24 layers, text 768 x 12 layers, projection 768, context 77
    "l14-336": dict(image_size=336, patch_size=14, hidden=1024, layers=24, heads=16, projection_dim=768,
                    context_length=77, text_hidden=768, text_layers=12, text_heads=12),
}


def write_images(graphs, folder: Path, side: int) -> None:
    """One JPEG per graph with some structure (so crops differ), ``side`` x 3/4 ``side`` pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, g in enumerate(graphs):
        h, w = side * 3 // 4, side
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.integers(0, 60, (h, w, 3)).astype(np.float32)
        im = Image.fromarray(np.clip(base * (0.5 + (i % 5) / 10) + noise, 0, 255).astype("uint8"))
        im.save(folder / Path(g.img_path).name, quality=90)


def one_at_a_time(model, graphs, images_root: Path):
    """Every caption alone: its crop through the image tower, its text through the text tower."""
    import numpy as np
    from PIL import Image

    from gbc.scoring.scorer import crop_region

    scores = []
    for g in graphs:
        with Image.open(images_root / Path(g.img_path).name) as im:
            image = im.convert("RGB")
        for v in g.vertices:
            for d in v.descs:
                img = model.encode_images(model.prepare_images([crop_region(image, v.bbox)]))
                txt = model.encode_texts(model.prepare_texts([d.text]))
                scores.append(float(np.dot(img[0], txt[0])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer graphs (CPU smoke run)")
    parser.add_argument("--size", choices=sorted(CLIP_SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--graphs", type=int, default=None, help="graphs scored batched (default 60, quick 24)")
    parser.add_argument("--baseline-graphs", type=int, default=None,
                        help="graphs scored one caption at a time (default: a quarter, at least 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-side", type=int, default=640)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from gbc.schemas.synthetic import synthetic_graph
    from gbc.scoring.models import ModelOptions, TransformersClip
    from gbc.scoring.scorer import CaptionScorer, ScoreSummary
    from models import make_clip, quiet_transformers

    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.graphs or (24 if args.quick else 60)
    n_base = args.baseline_graphs or max(2, n // 4)
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    with torch.device(args.device):
        model, processor = make_clip(**CLIP_SIZES[args.size])
    model = model.to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"model: random CLIP {args.size} ({params / 1e6:.0f}M parameters) on {args.device} {args.dtype}; "
          f"built in {time.perf_counter() - started:.1f} s")
    options = ModelOptions(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    clip = TransformersClip.from_loaded(model, processor, name="bench", options=options)

    tmp = Path(tempfile.mkdtemp(prefix="gbc-bench-score-"))
    try:
        graphs = [synthetic_graph(i, layout="full") for i in range(n)]
        write_images(graphs, tmp, args.image_side)
        n_captions = sum(g.n_captions for g in graphs)
        print(f"{n} graphs, {n_captions} captions ({n_captions / n:.1f} per graph), "
              f"{sum(g.n_vertices for g in graphs) / n:.1f} vertices per graph, images {args.image_side} px")

        scorer = CaptionScorer([clip], statistics=False, images_root=str(tmp))
        # warm-up (kernels, allocator, thread pools), not timed
        list(scorer.score([g.model_copy(deep=True) for g in graphs[:2]]))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        summary = ScoreSummary()
        copies = [g.model_copy(deep=True) for g in graphs]
        t, cpu = time.perf_counter(), time.process_time()
        batched = [r.graph for b in scorer.score_batches(copies, summary) for r in b]
        batched_s, batched_cpu = time.perf_counter() - t, time.process_time() - cpu
        batched_rate = n_captions / batched_s
        print(f"batched (batch {args.batch_size} regions): {batched_rate:,.0f} captions/s; "
              f"{n_captions / batched_cpu:,.0f} captions per CPU second "
              f"({batched_s:.2f} s; {summary.regions} regions encoded, {summary.truncated} texts truncated)")

        base_graphs = graphs[:n_base]
        base_captions = sum(g.n_captions for g in base_graphs)
        t, cpu = time.perf_counter(), time.process_time()
        base_scores = one_at_a_time(clip, base_graphs, tmp)
        base_s, base_cpu = time.perf_counter() - t, time.process_time() - cpu
        base_rate = base_captions / base_s
        print(f"one caption at a time: {base_rate:,.1f} captions/s; {base_captions / base_cpu:,.1f} captions per CPU second "
              f"({base_captions} captions of {n_base} graphs, {base_s:.2f} s)")
        batched_scores = [d.clip_scores.scores["bench"] for g in batched[:n_base] for v in g.vertices for d in v.descs]
        diff = max(abs(a - b) for a, b in zip(batched_scores, base_scores))
        print(f"speed-up: {batched_rate / base_rate:.1f}x wall, {(n_captions / batched_cpu) / (base_captions / base_cpu):.1f}x "
              f"CPU time (aim on CPU with the tiny model: >= 10x); "
              f"largest score difference batched vs alone: {diff:.2e}")
        if args.device.startswith("cuda"):
            print(f"GPU aim: >= 2,000 captions/s for ViT-L/14-336 on one H100/H200: "
                  f"{'met' if batched_rate >= 2000 else 'not met'} ({batched_rate:,.0f}); "
                  f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
