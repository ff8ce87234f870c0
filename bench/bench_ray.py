"""Throughput of annotation on Ray (1, 2, 4 workers) against the in-process engine.

The backends are ``scripted`` with a simulated model latency (a sleep per call and per
request), so the numbers measure the pipeline, not a model. Every figure comes from the same
run: the in-process engine on the same images is the baseline, and Ray's overhead per image
is (Ray time with 1 worker - in-process time) / images.

    python bench/bench_ray.py            # 160 images
    python bench/bench_ray.py --quick    # 40 images, 1 and 2 workers

The machine's core count is printed: with simulated latency, workers overlap their sleeps, so
more workers help until the CPUs (scripted answers, parsing, graph assembly, LMDB commits,
plus Ray's own processes) are saturated; on a 2-core machine that comes early.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)
        Image.new("RGB", (320, 240), colour).save(folder / f"img{i:05d}.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 images, 1 and 2 workers")
    parser.add_argument("--images", type=int, default=None, help="number of images (default 160, quick 40)")
    parser.add_argument("--workers", type=str, default=None, help="comma-separated worker counts (default 1,2,4; quick 1,2)")
    parser.add_argument("--latency", type=float, default=0.02, help="simulated seconds per backend call")
    parser.add_argument("--latency-per-item", type=float, default=0.004, help="simulated extra seconds per request in a call")
    args = parser.parse_args(argv)
    n = args.images or (40 if args.quick else 160)
    worker_counts = [int(w) for w in (args.workers or ("1,2" if args.quick else "1,2,4")).split(",")]

    import ray

    from gbc.annotators.backends import create_detector, create_mllm
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import discover_images
    from gbc.distributed.ray_runner import annotate_on_ray
    from gbc.store.lmdb_store import GraphStore

    options = {"latency_s": args.latency, "latency_per_item_s": args.latency_per_item}
    config = AnnotateConfig()
    ray_config = config.with_overrides({"mllm.spec": "scripted", "mllm.options": options,
                                        "detector.spec": "scripted", "detector.options": options})
    root = Path(tempfile.mkdtemp(prefix="gbc-bench-ray-"))
    try:
        make_images(root / "images", n)
        images = discover_images([root / "images"])
        print(f"machine: {os.cpu_count()} CPU cores; {n} images; scripted backends, "
              f"latency {args.latency * 1000:.0f} ms/call + {args.latency_per_item * 1000:.0f} ms/request", flush=True)

        # Baseline: the in-process engine, same images, same backends.
        started = time.perf_counter()
        annotator = RecursiveAnnotator(config, create_mllm("scripted", options), create_detector("scripted", options))
        with GraphStore(root / "inproc.lmdb", readonly=False) as store:
            annotator.run(images, store)
            done = store.count("done")
        inproc_s = time.perf_counter() - started
        print(f"in-process engine : {inproc_s:7.2f} s  {n / inproc_s:7.2f} img/s  (done {done}/{n})", flush=True)

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, configure_logging=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        print(f"ray.init          : {init_s:7.2f} s  (once, not counted below)", flush=True)
        rows = []
        for workers in worker_counts:
            out = root / f"ray-{workers}.lmdb"
            started = time.perf_counter()
            result = annotate_on_ray(images, out, config=ray_config, workers=workers)
            seconds = time.perf_counter() - started
            with GraphStore(out) as store:
                assert store.count("done") + store.count("failed") == n, "lost images"
            merge_s = result.get("merge", {}).get("seconds", 0.0)
            rows.append((workers, seconds, merge_s, result))
            print(f"ray, {workers} worker(s)  : {seconds:7.2f} s  {n / seconds:7.2f} img/s  "
                  f"x{inproc_s / seconds:4.2f} vs in-process  (start-up {result.get('startup_seconds', 0):.2f} s, "
                  f"engine {result.get('engine_seconds', 0):.2f} s summed over workers, merge {merge_s:.2f} s, "
                  f"done {result['done']}/{n})", flush=True)
        ray.shutdown()
        one = next((r for r in rows if r[0] == 1), None)
        if one is not None:
            _, wall, merge_s, result = one
            engine_s, startup_s = result.get("engine_seconds", 0.0), result.get("startup_seconds", 0.0)
            total_ms = (wall - inproc_s) / n * 1000
            steady_ms = (wall - startup_s - merge_s - engine_s) / n * 1000
            print(f"Ray overhead per image, 1 worker vs in-process: {total_ms:+.1f} ms in all "
                  f"(actor start-up {startup_s:.2f} s and merge {merge_s:.2f} s included)")
            print(f"  once running, Ray's cost per image (1 worker: wall - start-up - merge - engine): {steady_ms:+.1f} ms")
            print(f"  engine time inside the actor vs in-process engine: x{engine_s / inproc_s:.2f} "
                  f""
                  "(above 1: cutting the work into Ray batches costs cross-image batching; timings are noisy here)")
        if len(rows) > 1 and one is not None:
            for workers, seconds, _, _ in rows[1:]:
                print(f"scaling {workers} workers vs 1: x{one[1] / seconds:.2f} (ideal x{workers}; {os.cpu_count()} cores)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
