"""Write and read N synthetic GBC10M-sized graphs through the LMDB store, JSONL and Parquet.

Prints graphs/s for writing and for reading (into pydantic-validated ``GbcGraph`` objects, and
as read-only ``GraphView``s),
bytes per graph on disk, and the store's ratios against JSONL measured in the same run.

    python bench/bench_store.py            # 100,000 graphs
    python bench/bench_store.py --quick    # 5,000 graphs
    python bench/bench_store.py --n 20000 --keep /tmp/bench
    python bench/bench_store.py --quick --workers 2   # + gbc convert with 2 worker processes
    python bench/bench_store.py --scale 100000 1000000 10000000   # GBC10M scale (bench/store_scale.py)

Time spent producing the input graphs (generating them, or reading them back from the
JSONL file) is measured and subtracted from the write figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore, read_graphs, write_graphs

#: Aims for the store on GBC10M-sized graphs.
AIM_READ_PER_S = 20_000
AIM_WRITE_PER_S = 10_000
AIM_BYTES_PER_GRAPH = 3_000


#: The clock of the figures: CPU time of this process, so that other programs running on a
#: shared machine slow the figures down less than wall time would (LMDB commits once per
#: 1,000 graphs, so time spent waiting for the disk is small). ``--wall`` uses wall time.
CLOCK = time.process_time


class TimedSource:
    """Wraps an iterator and adds up the time spent producing its items."""

    def __init__(self, iterable):
        self._it = iter(iterable)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = CLOCK()
        try:
            return next(self._it)
        finally:
            self.seconds += CLOCK() - t


def gbc10m_graphs(n: int):
    # to_dict("gbc10m") + validation sets every field, as in a graph read from GBC10M.
    for i in range(n):
        yield GbcGraph.model_validate(synthetic_graph(i).to_dict("gbc10m"))


def disk_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.name != "lock.mdb")
    return path.stat().st_size


def timed_write(path: Path, source) -> float:
    src = TimedSource(source)
    t = CLOCK()
    n = write_graphs(path, src)
    total = CLOCK() - t
    return n / max(total - src.seconds, 1e-9)


def timed_read(iterable) -> tuple[int, float]:
    t = CLOCK()
    n = 0
    for _ in iterable:
        n += 1
    return n, n / max(CLOCK() - t, 1e-9)


def stage_costs(lines) -> dict:
    """CPU microseconds per graph of each stage of the store's write and read paths.

    Stages run in the order and grouping of the store's own paths (serialising on a graph just
    parsed from its JSON line, then compression of all payloads in one loop; decompression of
    all values, then parsing), timed one call at a time; the cost of the timer is subtracted.
    """
    from gbc.store.codec import IN_EDGES_EXPLICIT, ValueCodec, _restore_in_edges, in_edges_mode, serialise_payload
    from gbc.store.payload_json import EXCLUDE_IN_EDGES

    codec = ValueCodec()
    sample = []
    for line in lines[:1000]:
        g = GbcGraph.model_validate_json(line).mark_filled_fields()
        sample.append(g.model_dump_json(exclude_unset=True, exclude=EXCLUDE_IN_EDGES).encode())
    codec.add_dictionary(1, codec.train_dictionary(sample, 32 * 1024))
    codec.use_dictionary(1)
    names = ("timer", "mark_filled_fields", "in-edge check", "serialise (pydantic)", "free the input graph",
             "compress (zstd+dict)", "decompress", "validate (pydantic)", "rebuild in-edges")
    acc = dict.fromkeys(names, 0.0)
    clock = CLOCK

    def timed(name, fn, *args, **kwargs):
        t = clock()
        out = fn(*args, **kwargs)
        acc[name] += clock() - t
        return out

    # Like put_many: each graph is serialised as it arrives, a batch is compressed in one loop.
    payloads = []
    for line in lines:
        g = GbcGraph.model_validate_json(line)
        timed("timer", int)
        timed("mark_filled_fields", g.mark_filled_fields)
        mode = timed("in-edge check", in_edges_mode, g)
        payload = timed("serialise (pydantic)", serialise_payload, g, mode)  # as ValueCodec.graph_payload
        payloads.append((payload, mode))
        # The caller's graph is freed where the writer drops the last reference to it: in the
        # write rate (the source's time to make it is subtracted, this is not).
        t = clock()
        g = None
        acc["free the input graph"] += clock() - t
    values = [timed("compress (zstd+dict)", codec.pack, payload, mode) for payload, mode in payloads]
    # Like GraphStore.values(): a chunk is decompressed in one loop, then parsed.
    unpacked = [timed("decompress", codec.unpack, value) for value in values]
    for payload, mode in unpacked:
        g2 = timed("validate (pydantic)", GbcGraph.__pydantic_validator__.validate_json, payload)
        if mode != IN_EDGES_EXPLICIT:
            timed("rebuild in-edges", _restore_in_edges, g2, mode)
    overhead = acc.pop("timer")
    return {k: max(v - overhead, 0.0) / len(lines) * 1e6 for k, v in acc.items()}


def time_converts(jsonl: Path, work: Path, n: int, workers: int) -> list:
    """``(workers, graphs/s wall, graphs/s per CPU-second of all processes, graphs/s per CPU-second
    of the writing process)`` of ``gbc convert``
    from JSONL (parse, check, serialise) into a new store, in one process and with ``workers``.

    The whole conversion counts here (parsing included, nothing subtracted): wall time is what
    workers shorten, CPU time of the parent and of its finished workers what they cost.
    """
    import resource

    from gbc.cli.files import convert_graphs

    out = []
    for count in (1, workers):
        dst = work / f"converted-{count}.lmdb"
        shutil.rmtree(dst, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, wall = time.process_time(), time.perf_counter()
        written, _ = convert_graphs(jsonl, dst, workers=count, show_progress=False)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        parent = time.process_time() - cpu
        cpu = parent + (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert written == n, (written, n)
        out.append((count, n / wall, n / cpu, n / max(parent, 1e-9)))
        shutil.rmtree(dst, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="number of graphs (default 100000)")
    ap.add_argument("--quick", action="store_true", help="5,000 graphs")
    ap.add_argument("--keep", default=None, help="write the files into this folder and keep them")
    ap.add_argument("--no-parquet", action="store_true", help="skip Parquet")
    ap.add_argument("--workers", type=int, default=0,
                    help="also time `gbc convert JSONL STORE` in one process and with this many worker processes")
    ap.add_argument("--wall", action="store_true", help="measure wall time instead of CPU time")
    ap.add_argument("--scale", type=int, nargs="+", metavar="N",
                    help="run every store operation at these sizes, one process per phase (see bench/store_scale.py)")
    ap.add_argument("--phases", nargs="+", help="with --scale: only these phases")
    args = ap.parse_args(argv)
    if args.scale:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import store_scale

        root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gbc-bench-scale-"))
        try:
            return store_scale.main(sorted(args.scale), root, args.phases or store_scale.PHASES, keep=bool(args.keep))
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    n = 5_000 if args.quick else args.n

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gbc-bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    jsonl, store_path, parquet = work / "graphs.jsonl", work / "graphs.lmdb", work / "graphs.parquet"
    for p in (jsonl, parquet):
        if p.exists():
            p.unlink()
    shutil.rmtree(store_path, ignore_errors=True)
    rows = {}
    try:
        print(f"{n} synthetic GBC10M-sized graphs (12 vertices, 22 edges, 18 captions) in {work}", file=sys.stderr)
        rows["jsonl"] = {"write": timed_write(jsonl, gbc10m_graphs(n))}
        rows["store"] = {"write": timed_write(store_path, read_graphs(jsonl, validate=False))}
        if not args.no_parquet:
            rows["parquet"] = {"write": timed_write(parquet, read_graphs(jsonl, validate=False))}

        with GraphStore(store_path) as store:
            count, rows["store"]["read"] = timed_read(store.values())
            assert count == n, (count, n)
            count, store_views = timed_read(store.values(view=True))
            assert count == n, (count, n)
        _, rows["jsonl"]["read"] = timed_read(read_graphs(jsonl, validate=False))
        if "parquet" in rows:
            _, rows["parquet"]["read"] = timed_read(read_graphs(parquet, validate=False))
        _, store_checked = timed_read(read_graphs(store_path, validate=True))
        for fmt, path in (("jsonl", jsonl), ("store", store_path), ("parquet", parquet)):
            if fmt in rows:
                rows[fmt]["bytes"] = disk_bytes(path) / n

        # Baseline: pydantic alone on the JSON lines (no I/O, no decompression).
        lines = []
        with open(jsonl, "rb") as f:
            for line in f:
                lines.append(line)
                if len(lines) >= min(n, 5_000):
                    break
        _, pydantic_only = timed_read(GbcGraph.model_validate_json(line) for line in lines)
        stages = stage_costs(lines[:2_000])
        converts = time_converts(jsonl, work, n, args.workers) if args.workers else []
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'format':<8} {'write graphs/s':>15} {'read graphs/s':>14} {'bytes/graph':>12}")
    for fmt, r in rows.items():
        print(f"{fmt:<8} {r['write']:>15,.0f} {r['read']:>14,.0f} {r['bytes']:>12,.0f}")
    s, j = rows["store"], rows["jsonl"]
    print(f"store / jsonl: write x{s['write'] / j['write']:.2f}, read x{s['read'] / j['read']:.2f}, "
          f"size x{s['bytes'] / j['bytes']:.2f}")
    print(f"baseline: GbcGraph.model_validate_json alone on in-memory JSONL lines: {pydantic_only:,.0f} graphs/s "
          f"(store read is x{s['read'] / pydantic_only:.2f} of it)")
    print(f"store read with invariant checks (read_graphs(validate=True)): {store_checked:,.0f} graphs/s")
    print(f"store read as read-only views (store.values(view=True), msgspec; checksums verified): "
          f"{store_views:,.0f} graphs/s = x{store_views / s['read']:.2f} of the pydantic read above")
    print("per-graph CPU cost of each stage (us; the floor of each path):")
    for name, us in stages.items():
        print(f"  {name:<22} {us:7.1f}")
    write_floor = sum(stages[k] for k in ("mark_filled_fields", "in-edge check", "serialise (pydantic)", "compress (zstd+dict)",
                                          "free the input graph"))
    read_floor = sum(stages[k] for k in ("decompress", "validate (pydantic)", "rebuild in-edges"))
    print(f"  write stages {write_floor:.1f} us = at most {1e6 / write_floor:,.0f} graphs/s before LMDB; "
          f"read stages {read_floor:.1f} us = at most {1e6 / read_floor:,.0f} graphs/s "
          f"(pydantic validation alone: {1e6 / stages['validate (pydantic)']:,.0f}/s)")
    for workers, wall_rate, core_rate, writer_rate in converts:
        print(f"gbc convert JSONL -> store, {workers} process(es) parsing: {wall_rate:,.0f} graphs/s (wall), "
              f"{core_rate:,.0f} graphs/s per core (CPU of all processes); x{wall_rate / converts[0][1]:.2f} of one process")
    if converts:
        print(f"  with workers, the writing process alone (reading lines, compressing, LMDB) needs CPU for "
              f"{converts[-1][3]:,.0f} graphs/s: the most any number of workers can reach on a machine with cores to spare")
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"aims: read >= {AIM_READ_PER_S:,}/s: views {store_views:,.0f} {verdict(store_views >= AIM_READ_PER_S)}, "
          f"pydantic graphs {verdict(s['read'] >= AIM_READ_PER_S)}, "
          f"write >= {AIM_WRITE_PER_S:,}/s {verdict(s['write'] >= AIM_WRITE_PER_S)}, "
          f"< {AIM_BYTES_PER_GRAPH:,} bytes/graph {verdict(s['bytes'] < AIM_BYTES_PER_GRAPH)}")
    clock = "wall" if args.wall else "CPU"
    print(f"({clock} time; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: timings on a shared machine are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
