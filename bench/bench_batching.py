"""How well the engine keeps a batching GPU busy, with a simulated GPU backend.

The simulated MLLM costs ``a + b * n`` seconds per batch of ``n`` requests (sleep-based;
a = 150 ms, b = 8 ms, at most 32 requests per batch): a GPU whose fixed cost per forward pass
dominates, as with continuous batching on vLLM or batched ``generate``. Answers come from the
``scripted`` backend (GBC10M-sized graphs, ~18 MLLM requests per image); the detector is the
zero-latency ``scripted`` one. For this workload the ideal rate is every MLLM request in a
full batch of 32, back to back:

    ideal images/s = images / (ceil(requests / 32) * (a + 32 b))

The run reports the achieved rate as a share of that ideal, the mean batch fill in steady
state (calls started between 10 % and 90 % of the run) and the ratio against sending one
request at a time (batch size 1, one image in flight, as the reference pipeline does),
measured in the same run. The reference reached 0.32 images/s under this cost model.

    python bench/bench_batching.py            # 320 images batched, 4 one at a time
    python bench/bench_batching.py --quick    # 96 images batched, 2 one at a time
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path


class SimulatedGpuMllm:
    """Wraps the scripted MLLM: same answers, but each call sleeps ``a + b * n`` seconds."""

    name = "simulated-gpu"

    def __init__(self, a: float, b: float, max_batch_size: int):
        from gbc.annotators.backends.registry import create_mllm

        self.inner = create_mllm("scripted", {"max_batch_size": max_batch_size})
        self.a, self.b = a, b
        self.max_batch_size = max_batch_size
        self.calls: list = []  # (start time, batch size)
        self._lock = threading.Lock()  # one GPU: calls never overlap

    def generate(self, requests):
        with self._lock:
            start = time.perf_counter()
            answers = self.inner.generate(requests)
            remaining = self.a + self.b * len(requests) - (time.perf_counter() - start)
            if remaining > 0:
                time.sleep(remaining)
            self.calls.append((start, len(requests)))
            return answers

    def close(self):
        pass


class _NullStore:
    """Accepts commits without writing (the disk is not what this benchmark measures)."""

    def __init__(self):
        self.done = 0

    def commit_image(self, key, graph, provenance=None, attempts=1):
        self.done += 1

    def mark_failed(self, key, reason, error_type=None, attempts=1, provenance=None):
        raise RuntimeError(f"{key} failed: {reason}")


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)
        Image.new("RGB", (640, 480), colour).save(folder / f"img{i:05d}.png")


def run(sources, batch: int, in_flight: int, a: float, b: float) -> dict:
    from gbc.annotators.backends.registry import create_detector
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator

    mllm = SimulatedGpuMllm(a, b, batch)
    config = AnnotateConfig().with_overrides({"limits.images_in_flight": in_flight, "mllm.batch_size": batch,
                                              "detector.batch_size": 32})
    annotator = RecursiveAnnotator(config, mllm, create_detector("scripted", {"max_batch_size": 32}))
    store = _NullStore()
    start = time.perf_counter()
    summary = annotator.run(sources, store)
    wall = time.perf_counter() - start
    requests = summary.backends["mllm"]["requests"]
    ideal_s = math.ceil(requests / batch) * (a + b * batch)
    t0, t1 = start + 0.1 * wall, start + 0.9 * wall
    steady = [n for t, n in mllm.calls if t0 <= t <= t1] or [n for _, n in mllm.calls]
    return {
        "images": len(sources),
        "done": store.done,
        "requests_per_image": requests / len(sources),
        "calls": summary.backends["mllm"]["calls"],
        "wall_s": wall,
        "images_per_s": len(sources) / wall,
        "ideal_images_per_s": len(sources) / ideal_s,
        "steady_fill": sum(steady) / (len(steady) * batch),
        "overall_fill": summary.backends["mllm"]["mean_batch_fill"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 images batched, 2 one at a time")
    parser.add_argument("--images", type=int, help="images for the batched run (default 320)")
    parser.add_argument("--serial-images", type=int, help="images for the one-at-a-time run (default 4)")
    parser.add_argument("--in-flight", type=int, default=64, help="limits.images_in_flight of the batched run")
    parser.add_argument("--a", type=float, default=0.150, help="fixed cost of a batch, seconds")
    parser.add_argument("--b", type=float, default=0.008, help="cost per request in a batch, seconds")
    parser.add_argument("--batch", type=int, default=32, help="batch limit of the simulated GPU")
    args = parser.parse_args(argv)
    n = args.images or (96 if args.quick else 320)
    n_serial = args.serial_images or (2 if args.quick else 4)

    from gbc.annotators.images import discover_images

    with tempfile.TemporaryDirectory(prefix="gbc-bench-batching-") as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, n)
        sources = discover_images([folder])
        print(f"cost model: {1000 * args.a:.0f} ms + {1000 * args.b:.0f} ms x n per batch, batch limit {args.batch}")
        serial = run(sources[:n_serial], 1, 1, args.a, args.b)
        print(f"one at a time : {serial['images']:>4} images, {serial['images_per_s']:.3f} images/s "
              f"({serial['requests_per_image']:.1f} MLLM requests/image)")
        batched = run(sources, args.batch, args.in_flight, args.a, args.b)
        share = batched["images_per_s"] / batched["ideal_images_per_s"]
        print(f"batched       : {batched['images']:>4} images, {batched['images_per_s']:.3f} images/s "
              f"in {batched['wall_s']:.1f} s, {batched['calls']} calls, window {args.in_flight}")
        print(f"ideal         : {batched['ideal_images_per_s']:.3f} images/s for this workload")
        print(f"share of ideal: {100 * share:.1f}%   (target >= 85%)")
        print(f"batch fill    : {100 * batched['steady_fill']:.1f}% steady state, "
              f"{100 * batched['overall_fill']:.1f}% overall   (target >= 90%)")
        print(f"vs one at a time: x{batched['images_per_s'] / serial['images_per_s']:.1f}   (target >= 10x; "
              f"the reference reached 0.32 images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
