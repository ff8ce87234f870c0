"""Export N synthetic GBC10M-sized graphs from an LMDB store, text-only and with images.

Prints graphs/s and caption rows/s for each format and strategy, and the ratio of each
export's time to plain reading of the same graphs from the same store (the baseline,
measured in the same run: ``ratio 1.5`` means the export takes 1.5 times as long as just
reading the graphs).

    python bench/bench_export.py            # 100,000 graphs (10,000 with images)
    python bench/bench_export.py --quick    # 3,000 graphs (600 with images)
    python bench/bench_export.py --n 20000 --keep /tmp/bench

The image runs use a few small JPEGs shared by all graphs (their decoding and encoding is
what is measured, not the disk).

Rates count kernel time too (printed per graph for the text-only runs): writing the output is
part of an export. A WebDataset export writes ~42 KB of tar per graph (4 GB for 100,000
graphs). On a 2-core VM the kernel's cost per MB written grew with the page cache the output
filled (plain 1 MB writes: 0.34 ms of kernel time per MB for 800 MB, 1.3-5.0 ms for 4,000
MB), and the default (100,000 graphs) WebDataset runs spent 90-220 us of kernel time per
graph. Tar shards now leave the page cache behind the writer (``gbc.export.tar.DropBehind``):
the same runs spend 14-21 us (with whole graphs 5,190/s, without 6,667/s).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import gbc
from gbc.export.captions import CaptionFilter
from gbc.export.source import open_source, reads_views
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph

#: Aim for text-only exports of GBC10M-sized graphs, in graphs per second.
AIM_TEXT_PER_S = 5_000
#: Graphs exported (untimed) before each timed run.
WARM_UP = 50
#: Distinct JPEGs shared by the graphs of the image runs, and their size.
N_IMAGES = 4
IMAGE_SIZE = (512, 384)

#: (format, caption strategy, WebDataset --graph-json): "first" (the default) puts the whole
#: graph in the first sample of each graph, "none" writes captions and their metadata only.
TEXT_RUNS = [
    ("csv", "gbc-captions", None),
    ("csv", "short", None),
    ("wds", "gbc-captions", "first"),
    ("wds", "gbc-captions", "none"),
    ("parquet", "gbc-captions", None),
    ("csv", "structured", None),
    ("csv", "concat", None),
]
IMAGE_RUNS = [
    ("csv", "gbc-captions", None),
    ("wds", "gbc-captions", None),
    ("wds", "short", 256),
    ("wds", "region", 224),
    ("parquet", "region", 224),
]


def make_store(path: Path, n: int) -> float:
    t = time.perf_counter()

    def graphs():
        for i in range(n):
            g = GbcGraph.model_validate(synthetic_graph(i).to_dict("gbc10m"))
            # unique keys; the images are found by base name under the images root
            g.img_path = f"photos/{i:08d}/img_{i % N_IMAGES}.jpg"
            yield g

    gbc.write_graphs(str(path), graphs())
    return time.perf_counter() - t


def make_images(folder: Path) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_IMAGES):
        im = Image.new("RGB", IMAGE_SIZE, (40 * i, 120, 200 - 40 * i))
        draw = ImageDraw.Draw(im)
        for k in range(12):  # some structure, so JPEG work is realistic
            draw.ellipse((k * 37 % 400, k * 53 % 300, k * 37 % 400 + 90, k * 53 % 300 + 60), fill=(20 * k, 255 - 20 * k, 90))
        im.save(folder / f"img_{i}.jpg", quality=90)


def read_baseline(store: Path, limit: int, view: bool = True) -> float:
    """CPU seconds to read ``limit`` graphs from the store (the export's own input cost; as
    read-only views, as the text and image exports below read them)."""
    t = time.process_time()
    pairs, _ = open_source(store, view=view)
    n = 0
    for _ in pairs:
        n += 1
        if n >= limit:
            break
    return time.process_time() - t


def _kernel_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


class Limit:
    """The first ``n`` pairs of a source (image runs use fewer graphs than text runs)."""

    def __init__(self, pairs, n):
        self.pairs, self.n = pairs, n

    def __iter__(self):
        try:
            for i, item in enumerate(self.pairs):
                if i >= self.n:
                    return
                yield item
        finally:
            close = getattr(self.pairs, "close", None)
            if close is not None:
                close()  # the store is closed before the next run opens it again


def run(store: Path, out: Path, n: int, fmt: str, strategy: str, baseline: float, **opts):
    options = ExportOptions(fmt=fmt, strategy=strategy, caption_filter=CaptionFilter(exact_tokens=False), **opts)
    # Untimed warm-up on a few graphs: imports (pyarrow for the shards) and the token
    # estimate's table of common words are one-off costs, not per-graph ones.
    warm = out / ("warm-up.csv" if fmt == "csv" else "warm-up")
    view = reads_views(options)  # as gbc export reads them
    export_graphs(Limit(open_source(store, view=view)[0], WARM_UP), warm, options)
    shutil.rmtree(warm, ignore_errors=True) if warm.is_dir() else warm.unlink()
    shutil.rmtree(out / "warm-up_images", ignore_errors=True)
    pairs, _ = open_source(store, view=view)
    target = out / (f"{fmt}-{strategy}.csv" if fmt == "csv" else f"{fmt}-{strategy}")
    # CPU time: the export is single-threaded, and on a shared machine wall time mostly
    # measures the neighbours (wall time is printed too).
    t, w, k = time.process_time(), time.perf_counter(), _kernel_seconds()
    summary = export_graphs(Limit(pairs, n), target, options)
    dt, wall = time.process_time() - t, time.perf_counter() - w
    kernel_us = (_kernel_seconds() - k) / n * 1e6
    assert summary.graphs_exported == n, summary.to_dict()
    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink()
    images_dir = out / f"{fmt}-{strategy}_images"
    shutil.rmtree(images_dir, ignore_errors=True)
    return summary, dt, wall, dt / baseline, kernel_us


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="graphs in the store (text-only runs)")
    parser.add_argument("--n-images", type=int, default=None, help="graphs exported with images (default n/10)")
    parser.add_argument("--quick", action="store_true", help="3,000 graphs, 600 with images")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    n = 3_000 if args.quick else args.n
    n_img = args.n_images or (600 if args.quick else max(1, n // 10))
    n_img = min(n_img, n)

    work = args.keep or Path(tempfile.mkdtemp(prefix="gbc-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store = work / "graphs.lmdb"
        if store.exists():
            shutil.rmtree(store)
        made = make_store(store, n)
        images = work / "images"
        make_images(images)
        print(f"store of {n} synthetic graphs written in {made:.1f} s ({n / made:,.0f} graphs/s)")

        base = read_baseline(store, n)
        full = read_baseline(store, n, view=False)
        print(f"baseline: reading {n} graphs from the store as views: {base:.2f} CPU s ({n / base:,.0f} graphs/s; "
              f"as pydantic graphs {n / full:,.0f} graphs/s)")
        print("rates are per CPU second (wall-clock rate in brackets); 'x read' = export time / baseline\n")
        print("text-only (estimated CLIP tokens, limit 77)")
        print(f"  {'format':<10} {'captions':<13} {'graphs/s':>8} {'(wall)':>8} {'rows/s':>10} {'rows/graph':>10} {'x read':>7} "
              f"{'kernel us/graph':>15}")
        ok = True
        for fmt, strategy, graph_json in TEXT_RUNS:
            extra = {} if graph_json is None else {"graph_json": graph_json}
            s, dt, wall, ratio, kernel_us = run(store, work, n, fmt, strategy, base, text_only=True, **extra)
            label = fmt if graph_json is None else f"{fmt}:{graph_json}"
            print(f"  {label:<10} {strategy:<13} {n / dt:>8,.0f} {f'({n / wall:,.0f})':>8} {s.rows / dt:>10,.0f} "
                  f"{s.rows / n:>10.1f} {ratio:>7.2f} {kernel_us:>15.1f}")
            if strategy == "gbc-captions" and n / dt < AIM_TEXT_PER_S:
                ok = False

        base_img = read_baseline(store, n_img)
        print(f"\nwith images ({n_img} graphs, {N_IMAGES} JPEGs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}; "
              f"baseline read {n_img / base_img:,.0f} graphs/s)")
        print(f"  {'format':<8} {'captions':<13} {'max side':>8} {'graphs/s':>10} {'(wall)':>8} {'rows/s':>10} {'x read':>7}")
        for fmt, strategy, max_side in IMAGE_RUNS:
            s, dt, wall, ratio, _ = run(store, work, n_img, fmt, strategy, base_img, images_root=str(images),
                                     max_side=max_side)
            side = str(max_side) if max_side else "-"
            print(f"  {fmt:<8} {strategy:<13} {side:>8} {n_img / dt:>10,.0f} {f'({n_img / wall:,.0f})':>8} "
                  f"{s.rows / dt:>10,.0f} {ratio:>7.2f}")
        print(f"\nworker processes (wds, region, max side 224, {n_img} graphs; wall clock, so only "
              "meaningful on an idle machine)")
        walls = {}
        for workers in (1, 2):
            _, _, wall, _, _ = run(store, work, n_img, "wds", "region", base_img, images_root=str(images), max_side=224,
                                workers=workers)
            walls[workers] = wall
            print(f"  workers {workers}: {n_img / wall:,.0f} graphs/s")
        print(f"  speed-up with 2 workers: {walls[1] / walls[2]:.2f}x")
        print(f"\naim: text-only gbc-captions >= {AIM_TEXT_PER_S:,} graphs/s in every format: "
              f"{'met' if ok else 'NOT met'}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
