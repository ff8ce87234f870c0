"""``gbc view`` on a large synthetic store: first page, opening a graph, text search, index build, memory.

Builds a store of N synthetic GBC10M-sized graphs (a pool of distinct graphs under N keys, one
image in 1,000 failed), starts ``gbc view`` on it as a user would (uvicorn, a real socket), and
times HTTP requests. The same figures on a 10,000-graph store, measured in the same run, are the
baseline: the ratios show how each figure grows with the number of graphs (flat is the aim).

    python bench/bench_view.py                # 1,000,000 graphs (several minutes: the index build dominates)
    python bench/bench_view.py --n 200000
    python bench/bench_view.py --quick        # 20,000 graphs against the 10,000 baseline

Aims on this machine: first page < 300 ms, opening a graph < 100 ms, a text search after
indexing < 500 ms, server memory < 500 MB and flat in N.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore

AIM_FIRST_PAGE_MS = 300
AIM_OPEN_GRAPH_MS = 100
AIM_SEARCH_MS = 500
AIM_MEMORY_MB = 500
BASELINE_N = 10_000
POOL = 2_000
FAILED_EVERY = 1_000


def key_of(i: int) -> str:
    return f"images/{i // 1000:04d}/img_{i:08d}.jpg"


def make_store(path: Path, n: int) -> float:
    """Write ``n`` graphs (``POOL`` distinct ones, each under many keys); returns seconds."""
    t = time.perf_counter()
    pool = [synthetic_graph(i) for i in range(POOL)]

    def items():
        for i in range(n):
            if i % FAILED_EVERY == FAILED_EVERY - 1:
                continue
            graph = pool[i % POOL]
            graph.img_path = key_of(i)
            yield key_of(i), graph

    with GraphStore(path, readonly=False) as store:
        store.put_many(items())
        for i in range(FAILED_EVERY - 1, n, FAILED_EVERY):
            store.mark_failed(key_of(i), "image file is truncated", error_type="ImageDecodeError")
    return time.perf_counter() - t


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` and its children (the index builder), in MB. ``RssAnon`` leaves
    out the store's file pages that LMDB maps (the page cache, reclaimable): the heap alone."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(field + r":\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children)
        except (OSError, AttributeError):
            continue
    return total / 1024


class Viewer:
    def __init__(self, store: Path):
        t = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "gbc.cli.main", "view", str(store), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not found:
            raise SystemExit(f"gbc view did not start: {line!r} {self.proc.stderr.read()}")
        self.url = found.group(1)
        self.startup_s = time.perf_counter() - t

    def get(self, path: str, **params) -> tuple:
        url = self.url + path.lstrip("/") + ("?" + urllib.parse.urlencode(params) if params else "")
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as response:
            body = response.read()
        return (time.perf_counter() - t) * 1000, json.loads(body)

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)


def median_ms(samples):
    return statistics.median(samples), max(samples)


def measure(store: Path, n: int, rng: random.Random) -> dict:
    viewer = Viewer(store)
    out = {"n": n, "startup_s": viewer.startup_s}
    try:
        first_ms, first = viewer.get("/api/list")
        out["first_page_ms"] = first_ms
        out["rss_start_mb"] = rss_mb(viewer.proc.pid)
        pages = []
        for _ in range(20):  # pages deep into the store, from a random key
            after = key_of(rng.randrange(n))
            ms, body = viewer.get("/api/list", after=after)
            assert body["items"], after
            pages.append(ms)
        out["page_ms"] = median_ms(pages)
        opens = []
        for _ in range(30):
            i = rng.randrange(n)
            if i % FAILED_EVERY == FAILED_EVERY - 1:
                i -= 1
            ms, body = viewer.get("/api/graph", key=key_of(i))
            assert body["graph"] is not None
            opens.append(ms)
        out["open_graph_ms"] = median_ms(opens)
        # the index: built in the background from the first request on
        t = time.perf_counter()
        peak = peak_heap = 0.0
        while True:
            _, info = viewer.get("/api/info")
            peak = max(peak, rss_mb(viewer.proc.pid))
            peak_heap = max(peak_heap, rss_mb(viewer.proc.pid, "RssAnon"))
            if info["index"]["state"] == "ready":
                break
            if info["index"]["state"] == "failed":
                raise SystemExit(info["index"]["error"])
            time.sleep(0.5)
        out["index_wait_s"] = time.perf_counter() - t
        out["index_build_s"] = info["index"]["seconds"]
        out["index_graphs_per_s"] = n / info["index"]["seconds"]
        out["rss_peak_during_build_mb"] = peak
        out["heap_peak_during_build_mb"] = peak_heap
        catalog = store.parent / (store.name + ".view.sqlite")
        out["index_mb"] = catalog.stat().st_size / 1e6
        searches = {}
        rare = key_of(rng.randrange(n)).split("/")[-1].split(".")[0].split("_")[1]
        for name, params in [
            ("rare word (one key)", {"q": rare}),
            ("common word", {"q": "bridge"}),
            ("two words", {"q": "wooden bridge"}),
            ("phrase", {"q": '"stone tower"'}),
            ("word + caption label", {"q": "shadow", "caption_label": "relation"}),
            ("failed images", {"status": "failed"}),
            ("word, page 2", None),
        ]:
            if params is None:
                _, previous = viewer.get("/api/search", q="bridge")
                params = {"q": "bridge", "after": previous["items"][-1]["id"]}
            samples = []
            for _ in range(3):
                ms, body = viewer.get("/api/search", **params)
                samples.append(ms)
            searches[name] = (min(samples), body["count"], body["count_capped"])
        out["searches"] = searches
        for _ in range(20):
            viewer.get("/api/graph", key=key_of(rng.randrange(n)))
        out["rss_end_mb"] = rss_mb(viewer.proc.pid)
        out["heap_end_mb"] = rss_mb(viewer.proc.pid, "RssAnon")
    finally:
        viewer.close()
    return out


def show(result: dict, base: dict) -> None:
    n = result["n"]

    def ratio(name, index=None):
        a, b = result[name], base[name]
        if index is not None:
            a, b = a[index], b[index]
        return f"x{a / b:.2f} vs {base['n']:,}" if b else ""

    print(f"\n== {n:,} graphs ==")
    print(f"server start (until the URL is printed): {result['startup_s']:.2f} s")
    print(f"time to first page:       {result['first_page_ms']:7.1f} ms  (aim < {AIM_FIRST_PAGE_MS})  {ratio('first_page_ms')}")
    print(f"a page deep in the store: {result['page_ms'][0]:7.1f} ms median, {result['page_ms'][1]:.1f} max  {ratio('page_ms', 0)}")
    print(f"open a graph:             {result['open_graph_ms'][0]:7.1f} ms median, {result['open_graph_ms'][1]:.1f} max"
          f"  (aim < {AIM_OPEN_GRAPH_MS})  {ratio('open_graph_ms', 0)}")
    print(f"index build:              {result['index_build_s']:7.1f} s, {result['index_graphs_per_s']:,.0f} graphs/s,"
          f" {result['index_mb']:.0f} MB on disk")
    for name, (ms, count, capped) in result["searches"].items():
        b = base["searches"][name][0]
        print(f"search {name:22s} {ms:7.1f} ms  ({'>' if capped else ''}{count} matches)  (aim < {AIM_SEARCH_MS})  x{ms / b:.2f}")
    print(f"server memory: {result['rss_start_mb']:.0f} MB at start, {result['rss_end_mb']:.0f} MB after browsing and"
          f" searching, {result['heap_end_mb']:.0f} MB of it heap (aim < {AIM_MEMORY_MB}, flat: {ratio('rss_end_mb')},"
          f" heap {ratio('heap_end_mb')})")
    print(f"with the index builder: {result['rss_peak_during_build_mb']:.0f} MB peak resident (store pages mapped by LMDB"
          f" included), {result['heap_peak_during_build_mb']:.0f} MB peak heap ({ratio('heap_peak_during_build_mb')})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 graphs")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the stores in this folder")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.n
    rng = random.Random(0)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_view_"))
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in (BASELINE_N, n):
        store = root / f"s{size}.lmdb"
        if not (store / "data.mdb").exists():
            seconds = make_store(store, size)
            print(f"wrote {size:,} graphs in {seconds:.0f} s", flush=True)
        catalog = root / f"s{size}.lmdb.view.sqlite"
        catalog.unlink(missing_ok=True)
        results[size] = measure(store, size, rng)
    show(results[BASELINE_N], results[BASELINE_N])
    show(results[n], results[BASELINE_N])
    if args.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
