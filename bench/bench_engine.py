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
    python bench/bench_engine.py --whole-process            # `gbc annotate` with replay: backends
    python bench/bench_engine.py --whole-process --against ../old-checkout   # before / after
    python bench/bench_engine.py --long 10000 100000       # RSS after 10,000 and 100,000 images
    python bench/bench_engine.py --huge 8 13000             # peak RSS on 8 PNGs of 13000 x 13000

``--whole-process`` runs `gbc annotate` in a subprocess, as a user would, with ``replay:``
backends (zero latency, answers recorded in the shared reference graphs) and the reproduction
settings of ``bench/replay_reference.py``, on the 21 shared reference images repeated to 210
(and 21 for the memory comparison). CPU is user + sys of the child from its rusage, so the
figure is comparable to the reference orchestration's 535 ms per image measured the same way
(on its own, larger graphs). ``--against DIR`` runs the same command with another checkout of
the project first (``PYTHONPATH=DIR``): the before / after ratio comes from one run.

On a shared machine CPU times move with the load; the backend column is fixed work, so
``engine / backend`` is the steadier figure when comparing runs made at different times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional


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


#: Whole-process CPU per image that the reference orchestration takes on the same kind of
#: workload (its own recording, 48.2 s user + 64.2 s sys for 210 images).
REFERENCE_WHOLE_PROCESS_MS = 535.0
#: Aim on the shared reference graphs (~12 vertices, ~11 model requests per image).
WHOLE_PROCESS_AIM_MS = 13.0
REFERENCE_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "gbc-reference" / "wiki"


def replay_folder(folder: Path, n: int, images_dir: Path, graphs: Path) -> None:
    """``n`` images: the reference images that have a recorded graph, repeated in sub-folders
    ``rep00/``, ``rep01/``, ... (symbolic links: keys differ, the replay backend finds each
    record by its file name)."""
    from gbc.annotators.backends.replay import ReplayIndex

    recorded = {(r.graph.img_path or r.graph.img_url or "").rsplit("/", 1)[-1]
                for r in ReplayIndex.for_file(graphs).images}
    names = sorted(p.name for p in images_dir.iterdir() if p.name in recorded)
    for i in range(n):
        sub = folder / f"rep{i // len(names):02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / names[i % len(names)]).symlink_to(images_dir / names[i % len(names)])


def run_annotate(folder: Path, graphs: Path, config_file: Path, out: Path, source_dir: Optional[str] = None) -> dict:
    """`gbc annotate` in a child process; CPU and peak RSS from the child's own rusage."""
    env = dict(os.environ)
    if source_dir:
        env["PYTHONPATH"] = source_dir
    spec = f"replay:{graphs}"
    cmd = [sys.executable, "-c", _HIGH_WATER_WRAPPER, "annotate", str(folder), "-o", str(out),
           "--config", str(config_file), "--mllm", spec, "--detector", spec]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=source_dir or None)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"Error: gbc annotate failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    done = re.search(r"(\d+) done", stdout)
    high_water = re.search(r"^VmHWM (\d+)$", stderr, re.M)
    return {"user_s": usage.ru_utime, "sys_s": usage.ru_stime, "wall_s": wall, "done": int(done.group(1)) if done else -1,
            "peak_rss_mb": int(high_water.group(1)) / 1024.0 if high_water else usage.ru_maxrss / 1024.0}


# `gbc annotate` as the console script runs it, printing its peak RSS at exit: the kernel's
# VmHWM starts afresh at exec, while ru_maxrss would include this process's memory at fork.
_HIGH_WATER_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def hwm():\n"
    "    with open('/proc/self/status') as f:\n"
    "        print('VmHWM', f.read().split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['gbc'] + sys.argv[1:]\n"
    "runpy.run_module('gbc.cli.main', run_name='__main__')\n"
)


def whole_process(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import yaml
    from replay_reference import reproduction_config

    images_dir, graphs = args.reference / "images", args.reference / "wiki_gbc_graphs.jsonl"
    if not graphs.exists():
        print(f"Error: reference graphs not found under {args.reference}", file=sys.stderr)
        return 1
    sizes = args.sizes or [21, 210]
    sources = [("before", args.against), ("after", None)] if args.against else [("this tree", None)]
    with tempfile.TemporaryDirectory(prefix="gbc-bench-whole-") as tmp:
        config_file = Path(tmp) / "reproduction.yaml"
        # only the settings that differ from the defaults: an older checkout (--against) reads them too
        config_file.write_text(yaml.safe_dump(reproduction_config().model_dump(mode="json", exclude_defaults=True)))
        print(f"`gbc annotate` with replay: backends on the shared reference images; cores: {os.cpu_count()}; "
              f"CPU = child's user + sys")
        print(f"{'tree':>10} {'images':>6} {'done':>5} {'CPU ms/img':>10} {'user s':>7} {'sys s':>6} {'wall s':>7} "
              f"{'img/s':>6} {'peak RSS MB':>11} {'aim ms/img':>10}")
        results: dict = {}
        for n in sizes:
            folder = Path(tmp) / f"images{n}"
            replay_folder(folder, n, images_dir, graphs)
            for label, src in sources:
                runs = []
                for i in range(max(1, args.repeat)):
                    out = Path(tmp) / f"out-{label.replace(' ', '')}-{n}-{i}.lmdb"
                    runs.append(run_annotate(folder, graphs, config_file, out, src))
                runs.sort(key=lambda r: r["user_s"] + r["sys_s"])
                r = runs[len(runs) // 2]
                cpu_ms = 1000 * (r["user_s"] + r["sys_s"]) / n
                results[(label, n)] = dict(r, cpu_ms=cpu_ms)
                print(f"{label:>10} {n:>6} {r['done']:>5} {cpu_ms:>10.1f} {r['user_s']:>7.2f} {r['sys_s']:>6.2f} "
                      f"{r['wall_s']:>7.2f} {n / r['wall_s']:>6.1f} {r['peak_rss_mb']:>11.0f} {WHOLE_PROCESS_AIM_MS:>10.0f}")
        big, small = max(sizes), min(sizes)
        for label, _ in sources:
            r = results[(label, big)]
            growth = r["peak_rss_mb"] / results[(label, small)]["peak_rss_mb"]
            verdict = "meets" if r["cpu_ms"] <= WHOLE_PROCESS_AIM_MS else "misses"
            print(f"{label}: {r['cpu_ms']:.1f} ms CPU per image at {big} images, aim <= {WHOLE_PROCESS_AIM_MS:.0f} ms "
                  f"({verdict}); x{REFERENCE_WHOLE_PROCESS_MS / r['cpu_ms']:.1f} less than the reference "
                  f"orchestration's {REFERENCE_WHOLE_PROCESS_MS:.0f} ms; peak RSS {big} vs {small} images x{growth:.2f} "
                  f"({'flat' if growth < 1.25 else 'GROWS'})")
        if args.against:
            b, a = results[("before", big)], results[("after", big)]
            print(f"after / before at {big} images: CPU x{a['cpu_ms'] / b['cpu_ms']:.2f}, "
                  f"wall x{a['wall_s'] / b['wall_s']:.2f}, peak RSS x{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}")
    return 0


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0]) / 1024


def long_run(args) -> int:
    """RSS of one engine process after ``first`` and after ``last`` scripted images (a real
    LMDB store): memory must not creep with the number of images (aim: within 10 %)."""
    import gbc
    from gbc.annotators.backends.registry import create_detector, create_mllm
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import ImageSource, discover_images

    first, last = sorted(args.long)
    with tempfile.TemporaryDirectory(prefix="gbc-bench-long-") as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, 32, side=640)
        base = discover_images([folder])
        # distinct keys over a few files: every image gets its own graph, decoding stays cheap
        sources = (ImageSource(key=f"{i // len(base):06d}/{base[i % len(base)].key}", path=base[i % len(base)].path)
                   for i in range(last))
        config = AnnotateConfig().with_overrides({"limits.images_in_flight": args.in_flight})
        annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
        marks: dict = {}
        checkpoints = sorted({first, last} | {last * k // 10 for k in range(1, 10)})

        def on_progress(summary, engine):
            finished = summary.done + summary.failed
            while checkpoints and finished >= checkpoints[0]:
                marks[checkpoints.pop(0)] = (_status_mb("VmRSS"), _status_mb("RssAnon"), time.process_time())

        cpu0 = time.process_time()
        with gbc.open_store(str(Path(tmp) / "out.lmdb"), readonly=False) as store:
            summary = annotator.run(sources, store, on_progress=on_progress)
        print(f"{summary.done} done, {summary.failed} failed, {1000 * (time.process_time() - cpu0) / last:.1f} ms CPU per image")
        print(f"{'images':>8} {'RSS MB':>8} {'anon RSS MB':>11}")
        for n, (rss, anon, _) in sorted(marks.items()):
            print(f"{n:>8} {rss:>8.1f} {anon:>11.1f}")
        if first in marks and last in marks:
            growth = marks[last][0] / marks[first][0]
            anon_growth = marks[last][1] / marks[first][1]
            print(f"RSS after {last} / after {first} images: x{growth:.3f} (anonymous memory x{anon_growth:.3f}); "
                  f"aim within 10 %: {'met' if growth <= 1.10 else 'NOT met'}")
    return 0


_HUGE_CHILD = """
import json, sys, time
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import discover_images
import gbc
cpu = time.process_time()
with gbc.open_store(sys.argv[2], readonly=False) as store:
    summary = RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(
        discover_images([sys.argv[1]]), store)
with open("/proc/self/status") as f:
    peak = int(f.read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"done": summary.done, "failed": summary.failed, "cpu_s": time.process_time() - cpu, "peak_mb": peak}))
"""


def huge_images(args) -> int:
    """Issue 10 item 6: N PNGs of SIDE x SIDE with the scripted backends and default settings
    (64 images in flight by count): peak RSS must stay under 2 GB (8 x 13000^2 took 5.8 GB)."""
    import numpy as np
    from PIL import Image

    count, side = args.huge
    with tempfile.TemporaryDirectory(prefix="gbc-bench-huge-") as tmp:
        folder = Path(tmp) / "huge"
        folder.mkdir()
        t = time.perf_counter()
        row = np.linspace(0, 255, side, dtype=np.uint8)
        for i in range(count):
            arr = np.empty((side, side, 3), dtype=np.uint8)
            arr[:, :, 0], arr[:, :, 1], arr[:, :, 2] = row[None, :], row[:, None], (30 * i) % 256
            Image.fromarray(arr).save(folder / f"huge{i}.png", compress_level=1)
            del arr
        print(f"made {count} PNGs of {side}x{side} ({side * side * 3 / 2 ** 20:.0f} MB each decoded) "
              f"in {time.perf_counter() - t:.0f} s")
        trees = [("before", args.against), ("after", None)] if args.against else [("this tree", None)]
        for label, src in trees:
            env = dict(os.environ, **({"PYTHONPATH": src} if src else {}))
            wall = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _HUGE_CHILD, str(folder), str(Path(tmp) / f"{label[:5]}.lmdb")],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{label}: failed: {proc.stderr.strip()[-1000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{label}: {r['done']} done, {r['failed']} failed, peak RSS {r['peak_mb']:.0f} MB "
                  f"(aim < 2048 MB: {'met' if r['peak_mb'] < 2048 else 'NOT met'}), CPU {r['cpu_s']:.1f} s, "
                  f"wall {time.perf_counter() - wall:.0f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="21 and 63 images")
    parser.add_argument("--sizes", type=int, nargs="*", help="image counts to run (default 21 210)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (the median run is shown)")
    parser.add_argument("--in-flight", type=int, default=16,
                        help="limits.images_in_flight (zero-latency backends need no deep window)")
    parser.add_argument("--whole-process", action="store_true",
                        help="`gbc annotate` in a subprocess with replay: backends on the reference images")
    parser.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                        help="folder with wiki_gbc_graphs.jsonl and images/ (whole-process mode)")
    parser.add_argument("--against", metavar="DIR",
                        help="another checkout of the project to run first (whole-process mode: before / after)")
    parser.add_argument("--long", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="one process, scripted backends, a real store: RSS after FIRST and after LAST images "
                             "(aim: 10000 and 100000)")
    parser.add_argument("--huge", type=int, nargs=2, metavar=("COUNT", "SIDE"),
                        help="COUNT PNGs of SIDE x SIDE with scripted backends: peak RSS (aim: 8 13000)")
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.whole_process:
        return whole_process(args)
    if args.long:
        return long_run(args)
    if args.huge:
        return huge_images(args)
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
