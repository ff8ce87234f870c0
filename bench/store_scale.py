"""The store at GBC10M scale: every operation on N synthetic graphs, each in its own process.

Run through ``python bench/bench_store.py --scale 100000 1000000 10000000``. For each N:

- ``write``: ``put_many`` of N graphs (GBC10M statistics: 12.2 vertices, 21.8 edges, 17.7
  captions; the JSON of 1,000 distinct graphs under N distinct keys, each graph parsed just
  before it is written, as a conversion reads it, and dropped after; parsing is not counted)
  -> graphs/s and bytes per graph on disk;
- ``read``: ``values(view=True)`` streamed over the whole store, as the write left it and
  again with its pages dropped from the page cache, and ``values()`` (validated
  ``GbcGraph``s) over its first ``MULTI_READ`` graphs -> graphs/s;
- ``lookup``: 10,000 random ``store[key]`` (p50 / p99 latency, wall), ``len(store)``, and
  ``keys()`` streamed -> keys/s;
- ``shards``: the same N graphs committed with a ``done`` status (``commit_images``) into
  100 shard stores (N / 100 each), as a distributed annotation run leaves them; each pool
  graph is serialised once (its rate is commit, compression and LMDB without serialisation);
- ``multi``: a ``MultiStore`` over the 100 shards: ``len``, ``keys()`` streamed, 10,000
  random lookups, ``values()`` streamed (the first ``MULTI_READ`` graphs);
- ``merge``: ``gbc merge`` of the 100 shards into one store.

Each phase runs in a fresh process, so its peak RSS (VmHWM) is its own; rates are CPU time
of that process (graph generation excluded) unless they are latencies. Rates at the largest
N are compared with the smallest ("no cliff": within 20 %). A phase prints its progress every
minute (the write and shard phases each tenth), so a run stopped early still has its pace.
With ``--phases shards merge lookup multi`` the lookups run on the merged store.

Measured (``--phases shards merge lookup multi``; 2 cores, 23 GB RAM, so the 22 GB of shards
and the 22 GB merged store of the 10M run do not fit in the page cache, and this machine also
pages out file pages left unused for a while; CPU-time rates):

======================================  =====================  ===================  ========
figure                                  100,000 graphs         10,000,000 graphs    10M/100k
======================================  =====================  ===================  ========
shards: commit into 100 stores          6,392/s, 183 MB        19,732/s, 187 MB     x3.09
shards: bytes per graph                 4,403 (no dictionary)  2,281
merge: ``gbc merge`` of the 100 shards  18,997/s, 241 MB       22,053/s, 305 MB     x1.16
merge: user / kernel us per graph       50.0 / 2.6             42.6 / 2.7
merged store: bytes per graph           2,272                  2,250
merged ``store[key]`` p50 / p99 (wall)  98 / 301 us            238 / 628 us
merged ``keys()``                       1,292,986/s, 147 MB    1,499,205/s, 154 MB  x1.16
merged ``keys()``, cold store           1,112,985/s, 0.1 s     1,160,536/s, 10.2 s  x1.04
MultiStore ``len()`` (wall)             0.22 s                 21.6 s (cold cache)
MultiStore ``keys()``                   409,574/s              487,460/s            x1.19
MultiStore ``[key]`` p50 / p99 (wall)   375 / 4,048 us         562 / 5,728 us
MultiStore ``values()`` (first 1M)      11,173/s, 248 MB       11,646/s, 245 MB     x1.04
======================================  =====================  ===================  ========

and with ``--phases write read`` (one store written by ``put_many``):

======================================  =====================  ===================  ========
write: ``put_many`` (parsed graphs)     11,155/s, 141 MB       10,172/s, 141 MB     x0.91
read: ``values(view=True)``             37,851/s, 52 MB        31,939/s, 52 MB      x0.84
read: the same, cold store              35,566/s, 1.7 us sys   29,956/s, 3.7 us sys x0.84
read: ``values()`` (first 1M)           12,904/s               13,191/s             x1.02
======================================  =====================  ===================  ========

Writes of that run went at 9,163-10,772 graphs/s per million (the last five 10,273-10,772;
2,168 bytes per graph at 10M), after payloads were serialised by the serialiser of
``gbc.store.payload_json``. The run before it (pydantic's serialiser with an ``exclude``
argument) wrote 9,709/s at 100,000 and 9,505/s at 10M. Before the write phase parsed its
graphs it cycled 1,000 graph objects kept alive, out of the CPU caches, and wrote
8,181-8,309/s; reads of earlier runs were x0.82, x0.95 and x0.77 of their 100,000 figure
(this machine's pace drifts by about 10 % over an hour).

Shards are faster at 10M because each shard trains its compression dictionary once, on its
first 1,000 graphs: at 100,000 graphs a shard holds only 1,000. Key listings read the status
table alone in stores that record every graph's status (``statuses_complete``), so they
never touch the pages of the graph values; before, ``keys()`` of the 10M store ran at 378,812
keys/s and the MultiStore's at 67,800, reading 22 GB from disk. "Cold store": the store's
pages dropped from the page cache first (its wall time and 32 major faults at 10M). The
status pages of a merged store lie among its graph pages, so a walk of them used to read
one 4 KB page from disk per fault (407,320-906,935 keys/s at 10M, 59.5 s for the MultiStore's
``len()``); table walks now ask for the pages they will meet ahead of them, found from the
table's B-tree (``gbc.store.page_prefetch``). The merge reads all shards at once in key
order, appends to its output, and opens the shards with readahead: each page missing from
the cache brings its neighbours (4.4 million major faults and 13.9 us of kernel time per
graph without it, 2,714 and 2.7 us with it; 15,198/s before, 8,227/s before the k-way merge).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARDS = 100
POOL = 1_000
LOOKUPS = 10_000
#: Graphs the ``multi`` phase reads through ``values()`` (all of them up to this many).
MULTI_READ = 1_000_000
PHASES = ("write", "read", "lookup", "shards", "multi", "merge")
#: Aims for the store.
AIM_READ_PER_S = 20_000
AIM_WRITE_PER_S = 10_000
AIM_NO_CLIFF = 0.8  # rate at the largest N / rate at the smallest


def high_water_mb() -> float:
    return _status_mb("VmHWM:")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(field)[1].split()[0]) / 1024


#: What the running phase has done so far (``stage``, ``count``), printed every PROGRESS_S seconds.
PROGRESS = {"stage": "start", "count": 0}
PROGRESS_S = 60.0


def _report_progress(started_cpu: float, extra=None) -> None:
    """Print a progress line every PROGRESS_S seconds (a daemon thread): a phase that takes
    an hour at 10M graphs shows its pace, CPU and resident memory while it runs."""
    import threading

    def tick():
        while True:
            time.sleep(PROGRESS_S)
            line = {"progress": PROGRESS["stage"], "count": PROGRESS["count"],
                    "cpu_s": round(time.process_time() - started_cpu, 1), "rss_mb": round(_status_mb("VmRSS:")),
                    "peak_mb": round(high_water_mb())}
            if extra is not None:
                line.update(extra())
            # the process's own stderr: CliRunner (the merge phase) swaps sys.stderr for a buffer
            print(json.dumps(line), file=sys.__stderr__, flush=True)

    threading.Thread(target=tick, daemon=True).start()


def _counted(stage: str, items):
    """``items`` passed through, counted into PROGRESS."""
    PROGRESS["stage"], PROGRESS["count"] = stage, 0
    for item in items:
        PROGRESS["count"] += 1
        yield item


def drop_from_page_cache(path: Path) -> bool:
    """Drop the clean cached pages of ``path`` (``posix_fadvise(DONTNEED)``; no privileges
    needed); False where that cannot be done here."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _cold_walk(path: Path, stage: str, walk, prefix: str) -> dict:
    """``walk(store)`` over the store at ``path`` with its pages dropped from the page cache
    first (after closing it, so that no page stays mapped): items/s of CPU time, wall time,
    kernel time per item and major faults, under names starting with ``prefix``."""
    from gbc.store import GraphStore

    dropped = drop_from_page_cache(path / "data.mdb")
    with GraphStore(path) as store:
        before, cpu, wall = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        count = sum(1 for _ in _counted(stage, walk(store)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
    return {prefix + "dropped": dropped, prefix + "rate": count / max(cpu, 1e-9), prefix + "wall_s": wall,
            prefix + "sys_us_per_graph": 1e6 * (after.ru_stime - before.ru_stime) / max(count, 1),
            prefix + "major_faults": after.ru_majflt - before.ru_majflt}


def key_of(i: int) -> str:
    return f"img/{i:09d}.jpg"


def graph_pool():
    from gbc.schemas import GbcGraph
    from gbc.schemas.synthetic import synthetic_graph

    # to_dict("gbc10m") + validation sets every field, as in a graph read from GBC10M
    return [GbcGraph.model_validate(synthetic_graph(i).to_dict("gbc10m")) for i in range(POOL)]


def _write(path: Path, start: int, stop: int, pool, with_status: bool = False, payloads=None) -> int:
    from gbc.store import GraphStore

    items = ((key_of(i), pool[i % POOL]) for i in range(start, stop))
    with GraphStore(path, readonly=False) as store:
        if payloads is not None:
            # each pool graph is serialised once for all shards (the write phase measures
            # serialisation): 10M shard graphs then take minutes rather than an hour
            serialise = store._codec.graph_payload

            def once(graph):
                found = payloads.get(id(graph))
                return found if found is not None else payloads.setdefault(id(graph), serialise(graph))

            store._codec.graph_payload = once
        # shards hold a done status per graph, as annotation runs leave them (MultiStore and
        # merge work from the statuses)
        return store.commit_images(items) if with_status else store.put_many(items)


def _parsed(start: int, stop: int, pool_json):
    """``(key, graph)`` for graphs ``start..stop``, each parsed from its JSON as it is written (as
    a conversion or an annotation run makes each graph just before the store writes it, and
    drops it after)."""
    from gbc.schemas import GbcGraph

    parse = GbcGraph.model_validate_json
    for i in range(start, stop):
        yield key_of(i), parse(pool_json[i % POOL])


def _write_in_tenths(path: Path, n: int, pool, cpu_start: float) -> tuple:
    """``put_many`` of N freshly parsed graphs in ten slices (one store, opened once), printing
    each slice's rate as the store grows: a long run shows whether writes slow down before it
    ends. Returns the graphs written and the CPU seconds spent parsing them (not writing)."""
    from bench_store import TimedSource  # this script's folder is on sys.path

    from gbc.store import GraphStore

    pool_json = [graph.to_json() for graph in pool]
    written, last, parsing = 0, cpu_start, 0.0
    with GraphStore(path, readonly=False) as store:
        for k in range(10):
            start, stop = n * k // 10, n * (k + 1) // 10
            source = TimedSource(_parsed(start, stop, pool_json))
            written += store.put_many(source)
            parsing += source.seconds
            now = time.process_time()
            print(json.dumps({"graphs": stop, "slice_rate": round((stop - start) / max(now - last - source.seconds, 1e-9)),
                              "bytes_per_graph": round(disk_bytes(path) / stop)}), file=sys.stderr, flush=True)
            last = now
    return written, parsing


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("data.mdb"))


def _latencies(getter, keys) -> dict:
    rng = random.Random(0)
    times = []
    for _ in range(LOOKUPS):
        key = keys(rng)
        t = time.perf_counter()
        getter(key)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"p50_us": 1e6 * times[len(times) // 2], "p99_us": 1e6 * times[int(len(times) * 0.99)]}


def run_phase(phase: str, n: int, work: Path) -> dict:
    import gbc
    from gbc.store import GraphStore

    single, shard_dir, merged = work / "single.lmdb", work / "shards", work / "merged.lmdb"
    out: dict = {}
    _report_progress(time.process_time(), (lambda: {"merged_mb": round(disk_bytes(merged) / 2**20)})
                     if phase == "merge" else None)
    if phase in ("write", "shards"):
        pool = graph_pool()
        cpu = time.process_time()
        if phase == "write":
            written, parsing = _write_in_tenths(single, n, pool, cpu)
            cpu += parsing  # the rate is of writing alone
            out["bytes_per_graph"] = disk_bytes(single) / n
        else:
            shard_dir.mkdir(exist_ok=True)
            per = -(-n // SHARDS)
            written, last, payloads = 0, cpu, {}
            PROGRESS["stage"] = "shards written"
            for s in range(SHARDS):
                written += _write(shard_dir / f"part-{s:03d}.lmdb", s * per, min(n, (s + 1) * per), pool, True,
                                  payloads)
                PROGRESS["count"] = s + 1
                if (s + 1) % (SHARDS // 10) == 0:
                    now = time.process_time()
                    print(json.dumps({"graphs": written, "slice_rate": round(n / 10 / max(now - last, 1e-9)),
                                      "bytes_per_graph": round(disk_bytes(shard_dir) / written),
                                      "rss_mb": round(_status_mb("VmRSS:"))}), file=sys.stderr, flush=True)
                    last = now
        out["rate"] = written / (time.process_time() - cpu)
    elif phase == "read":
        with GraphStore(single) as store:
            # as read-only views (the reads of the aim), all of them
            cpu = time.process_time()
            count = sum(1 for _ in _counted("views", store.values(view=True)))
            out["rate"] = count / (time.process_time() - cpu)
        # the same of the cold store: at 10M the store does not fit in the page cache, at 100k
        # it is all cached after the first read
        out.update(_cold_walk(single, "cold views", lambda store: store.values(view=True), "cold_"))
        with GraphStore(single) as store:
            # as validated GbcGraphs: the first MULTI_READ (all 10M would take a quarter hour more)
            cpu = time.process_time()
            count = sum(1 for _ in itertools.islice(_counted("graphs", store.values()), MULTI_READ))
            out["graphs_rate"] = count / (time.process_time() - cpu)
    elif phase == "lookup":
        # after the shard phases the single store is gone: look up in the merged one
        source = single if single.exists() else merged
        out["store"] = source.name
        with GraphStore(source) as store:
            t = time.perf_counter()
            out["len"] = len(store)
            out["len_ms"] = 1e3 * (time.perf_counter() - t)
            out.update(_latencies(store.__getitem__, lambda rng: key_of(rng.randrange(n))))
            cpu = time.process_time()
            count = sum(1 for _ in _counted("keys", store.keys()))
            out["keys_rate"] = count / (time.process_time() - cpu)
        # the same walk of a cold store (one not read for a while, or larger than RAM)
        out.update(_cold_walk(source, "cold keys", lambda store: store.keys(), "keys_cold_"))
    elif phase == "multi":
        with gbc.open_store(str(shard_dir)) as view:
            t = time.perf_counter()
            out["len"] = len(view)
            out["len_ms"] = 1e3 * (time.perf_counter() - t)
            cpu = time.process_time()
            count = sum(1 for _ in _counted("keys", view.keys()))
            out["keys_rate"] = count / (time.process_time() - cpu)
            PROGRESS["stage"] = "lookups"
            out.update(_latencies(view.__getitem__, lambda rng: key_of(rng.randrange(n))))
            cpu = time.process_time()
            # the first MULTI_READ graphs: a rate, without reading all 10M (an hour of CPU)
            count = sum(1 for _ in itertools.islice(_counted("values", view.values()), MULTI_READ))
            out["rate"] = count / (time.process_time() - cpu)
            out["read"] = count
    elif phase == "merge":
        from click.testing import CliRunner

        from gbc.cli.main import cli

        cpu, before = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        PROGRESS["stage"] = "merging"
        result = CliRunner().invoke(cli, ["merge", str(shard_dir), "-o", str(merged)])
        if result.exit_code != 0:
            raise SystemExit(f"gbc merge failed: {result.output[-500:]}")
        out["rate"] = n / (time.process_time() - cpu)
        # user and kernel time apart, and pages read from disk: the kernel's share grows when
        # the stores do not fit in the page cache
        after = resource.getrusage(resource.RUSAGE_SELF)
        out["user_us_per_graph"] = 1e6 * (after.ru_utime - before.ru_utime) / n
        out["sys_us_per_graph"] = 1e6 * (after.ru_stime - before.ru_stime) / n
        out["major_faults"] = after.ru_majflt - before.ru_majflt
        with GraphStore(merged) as store:
            out["merged"] = len(store)
        out["bytes_per_graph"] = disk_bytes(merged) / n
    out["peak_mb"] = high_water_mb()
    return out


#: Phases that use the single store; the others use the shards (and the merged store).
SINGLE_STORE_PHASES = ("write", "read", "lookup")


def run_size(n: int, work: Path, phases, keep: bool = False) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, phase in enumerate(phases):
        if not keep and phase not in SINGLE_STORE_PHASES and not set(phases[i:]) & set(SINGLE_STORE_PHASES):
            # At 10M graphs each store takes ~20 GB: the single store goes before the shards come.
            shutil.rmtree(work / "single.lmdb", ignore_errors=True)
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, phase, str(n), str(work)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        errors = []
        for line in proc.stderr:  # progress lines of the write phase are passed on as they come
            if line.startswith(('{"graphs"', '{"progress"')):
                print(f"  {n:>10,} {phase:<7} {line.strip()}", file=sys.stderr, flush=True)
            else:
                errors.append(line)
        stdout = proc.stdout.read()
        if proc.wait() != 0:
            raise SystemExit(f"Error: phase {phase} at {n} graphs failed: {''.join(errors).strip()[-2000:]}")
        results[phase] = json.loads(stdout.strip().splitlines()[-1])
        results[phase]["wall_s"] = time.perf_counter() - t
        print(f"  {n:>10,} {phase:<7} {json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results[phase].items()})}",
              file=sys.stderr, flush=True)
    return results


def report(sizes, all_results) -> None:
    def fmt(v, spec=",.0f"):
        return "-" if v is None else format(v, spec)

    print(f"{'graphs':>11} {'write/s':>8} {'B/graph':>8} {'read/s':>8} {'get p50 us':>10} {'get p99 us':>10} "
          f"{'len ms':>7} {'keys/s':>10} {'shards w/s':>10} {'multi get p50/p99 us':>21} {'multi read/s':>12} "
          f"{'merge/s':>8} {'peak RSS MB w/r/l/s/m/merge':>28}")
    for n in sizes:
        r = all_results[n]
        g = lambda phase, key: r.get(phase, {}).get(key)  # noqa: E731
        peaks = "/".join(fmt(g(p, "peak_mb")) for p in PHASES)
        multi = f"{fmt(g('multi', 'p50_us'))}/{fmt(g('multi', 'p99_us'))}"
        print(f"{n:>11,} {fmt(g('write', 'rate')):>8} {fmt(g('write', 'bytes_per_graph')):>8} {fmt(g('read', 'rate')):>8} "
              f"{fmt(g('lookup', 'p50_us'), ',.1f'):>10} {fmt(g('lookup', 'p99_us'), ',.1f'):>10} "
              f"{fmt(g('lookup', 'len_ms'), ',.2f'):>7} {fmt(g('lookup', 'keys_rate')):>10} {fmt(g('shards', 'rate')):>10} "
              f"{multi:>21} {fmt(g('multi', 'rate')):>12} {fmt(g('merge', 'rate')):>8} {peaks:>28}")
    for n in sizes:
        cold = all_results[n].get("lookup", {})
        if cold.get("keys_cold_rate"):
            print(f"{n:>11,} keys() of the cold store (its pages dropped from the page cache first): "
                  f"{cold['keys_cold_rate']:,.0f}/s CPU, {cold['keys_cold_wall_s']:.2f} s wall, "
                  f"{cold['keys_cold_major_faults']:,} major faults")
    big, small = all_results[sizes[-1]], all_results[sizes[0]]
    write, read = big.get("write", {}).get("rate"), big.get("read", {}).get("rate")
    if write is not None:
        print(f"aim write >= {AIM_WRITE_PER_S:,}/s: {write:,.0f}/s at {sizes[-1]:,} ({'met' if write >= AIM_WRITE_PER_S else 'NOT met'})")
    if read is not None:
        print(f"aim read >= {AIM_READ_PER_S:,}/s: {read:,.0f}/s as views at {sizes[-1]:,} "
              f"({'met' if read >= AIM_READ_PER_S else 'NOT met'}; validated GbcGraphs "
              f"{big['read'].get('graphs_rate', 0):,.0f}/s)")
    if len(sizes) > 1:
        for phase, key in (("write", "rate"), ("read", "rate"), ("read", "cold_rate"), ("read", "graphs_rate"),
                           ("lookup", "keys_rate"),
                           ("lookup", "keys_cold_rate"),
                           ("shards", "rate"),
                           ("multi", "rate"), ("merge", "rate")):
            a, b = small.get(phase, {}).get(key), big.get(phase, {}).get(key)
            if a and b:
                ratio = b / a
                print(f"{phase} {key} at {sizes[-1]:,} / at {sizes[0]:,}: x{ratio:.2f} "
                      f"({'no cliff' if ratio >= AIM_NO_CLIFF else 'CLIFF'}, aim >= x{AIM_NO_CLIFF})")
        a, b = small.get("lookup", {}).get("p99_us"), big.get("lookup", {}).get("p99_us")
        if a and b:
            print(f"random get p99 at {sizes[-1]:,} / at {sizes[0]:,}: x{b / a:.2f}")


def main(sizes, work_root: Path, phases=PHASES, keep: bool = False) -> int:
    all_results = {}
    for n in sizes:
        work = work_root / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            all_results[n] = run_size(n, work, list(phases), keep)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    report(sizes, all_results)
    print(f"(rates: CPU time of each phase's process; latencies: wall; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    phase_name, count, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(run_phase(phase_name, count, folder)))
