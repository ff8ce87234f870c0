"""CPU cost and memory of the annotation engine itself, with zero-latency backends.

The ``scripted`` backends answer at once (no model), so everything measured is the engine:
image decoding and scaling, crops, prompt filling, parsing, detection post-processing, graph
assembly, validation and LMDB commits. Images are ~1024 px JPEGs; graphs have about the size
of GBC10M records (12-20 vertices, ~18 model calls per image).

Each size runs in a fresh process so that peak memory (RSS high-water mark) is its own:
memory must stay flat from 21 to 210 images because only a window of images is in flight.
The baseline, measured in the same run, is decoding and scaling the same images alone.

    python bench/bench_engine.py            # 21 and 210 images
    python bench/bench_engine.py --quick    # 21 and 63 images
    python bench/bench_engine.py --repeat 3 # each size three times: median row, spread of engine CPU

On a shared machine CPU times move with the load; the backend column is fixed work, so
``engine / backend`` is the steadier figure when comparing runs made at different times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, n: int, side: int = 1024) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h = side * 3 // 4
    base = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(n):
        colour = rng.integers(30, 230, 3)
        arr = np.empty((h, side, 3), dtype=np.float32)
        for c in range(3):
            arr[:, :, c] = (base[None, :] * 0.3 + colour[c] * 0.7)
        arr += rng.normal(0, 12, (h, side, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(folder: str, n: int, out: str, in_flight: int) -> dict:
    import gbc
    from gbc.annotators.backends.registry import create_detector, create_mllm
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import discover_images

    sources = discover_images([folder])[:n]
    config = AnnotateConfig().with_overrides({"limits.images_in_flight": in_flight})
    mllm, detector = create_mllm("scripted"), create_detector("scripted")
    backend_cpu = [0.0]

    def timed(fn):
        # CPU time of the backend's own work, measured in the thread that runs the call
        def wrapper(requests):
            t = time.thread_time()
            try:
                return fn(requests)
            finally:
                backend_cpu[0] += time.thread_time() - t
        return wrapper

    mllm.generate, detector.detect = timed(mllm.generate), timed(detector.detect)
    annotator = RecursiveAnnotator(config, mllm, detector)
    rss_before = peak_rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with gbc.open_store(out, readonly=False) as store:
        summary = annotator.run(sources, store)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    backend_s = backend_cpu[0]
    requests = sum(b["requests"] for b in summary.backends.values())
    return {
        "images": n,
        "done": summary.done,
        "failed": summary.failed,
        "vertices_per_image": summary.vertices / max(summary.done, 1),
        "model_requests_per_image": requests / max(n, 1),
        "wall_s": wall,
        "images_per_s": n / wall,
        "cpu_ms_per_image": 1000 * cpu / n,
        "engine_cpu_ms_per_image": 1000 * (cpu - backend_s) / n,
        "engine_cpu_ms_per_request": 1000 * (cpu - backend_s) / max(requests, 1),
        "backend_ms_per_image": 1000 * backend_s / n,
        "peak_rss_mb": peak_rss_mb(),
        "rss_at_start_mb": rss_before,
        "mllm_fill": summary.backends["mllm"]["mean_batch_fill"],
    }


def load_baseline(folder: str, n: int, max_side: int = 1024) -> dict:
    from gbc.annotators.images import discover_images, load_image, scale_to_fit

    sources = discover_images([folder])[:n]
    cpu0 = time.process_time()
    for s in sources:
        scale_to_fit(load_image(s.path), max_side)
    return {"cpu_ms_per_image": 1000 * (time.process_time() - cpu0) / n}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="21 and 63 images")
    parser.add_argument("--sizes", type=int, nargs="*", help="image counts to run (default 21 210)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (the median run is shown)")
    parser.add_argument("--in-flight", type=int, default=16,
                        help="limits.images_in_flight (zero-latency backends need no deep window)")
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        folder, n, out = args.child
        print(json.dumps(child(folder, int(n), out, args.in_flight)))
        return 0

    sizes = args.sizes or ([21, 63] if args.quick else [21, 210])
    with tempfile.TemporaryDirectory(prefix="gbc-bench-engine-") as tmp:
        folder = Path(tmp) / "images"
        t0 = time.perf_counter()
        make_images(folder, max(sizes))
        print(f"made {max(sizes)} images of 1024x768 in {time.perf_counter() - t0:.1f} s; cores: {os.cpu_count()}")
        base = load_baseline(str(folder), min(21, max(sizes)))
        print(f"baseline: decode + scale one image: {base['cpu_ms_per_image']:.1f} ms CPU")
        rows, spreads = [], []
        for n in sizes:
            runs = []
            for i in range(max(1, args.repeat)):
                out = Path(tmp) / f"out{n}-{i}.lmdb"
                cmd = [sys.executable, __file__, "--in-flight", str(args.in_flight), "--child", str(folder), str(n), str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda r: r["engine_cpu_ms_per_image"])
            rows.append(runs[len(runs) // 2])
            spreads.append((n, [r["engine_cpu_ms_per_image"] for r in runs]))
        print("CPU = whole process; engine = process minus the scripted backends' own work; "
              "x decode = engine CPU / (decode + scale)")
        header = (f"{'images':>6} {'done':>5} {'vert/img':>8} {'req/img':>7} {'img/s':>7} {'CPU ms/img':>10} "
                  f"{'engine ms/img':>13} {'engine ms/req':>13} {'backend ms/img':>14} {'engine/backend':>14} "
                  f"{'x decode':>8} {'peak RSS MB':>11}")
        print(header)
        for r in rows:
            print(f"{r['images']:>6} {r['done']:>5} {r['vertices_per_image']:>8.1f} {r['model_requests_per_image']:>7.1f} "
                  f"{r['images_per_s']:>7.2f} {r['cpu_ms_per_image']:>10.1f} {r['engine_cpu_ms_per_image']:>13.1f} "
                  f"{r['engine_cpu_ms_per_request']:>13.2f} {r['backend_ms_per_image']:>14.1f} "
                  f"{r['engine_cpu_ms_per_image'] / max(r['backend_ms_per_image'], 1e-9):>14.2f} "
                  f"{r['engine_cpu_ms_per_image'] / base['cpu_ms_per_image']:>8.1f} {r['peak_rss_mb']:>11.0f}")
        if args.repeat > 1:
            for n, values in spreads:
                print(f"engine ms/img over {len(values)} runs of {n} images: "
                      f"min {min(values):.1f}, median {values[len(values) // 2]:.1f}, max {max(values):.1f}")
        small, large = rows[0], rows[-1]
        growth = large["peak_rss_mb"] / small["peak_rss_mb"]
        print(f"peak RSS {large['images']} vs {small['images']} images (window {args.in_flight}): x{growth:.2f} "
              f"({'flat' if growth < 1.25 else 'GROWS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
