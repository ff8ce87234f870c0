"""What the damage check costs when a ``gbc`` command opens a store of N graphs.

Prints, for a store of N synthetic GBC10M-sized graphs:

- reading every graph once (``store.items()``): the baseline, measured in the same run;
- the structural check of the meta pages (every open);
- the first open by a command: the tree walk in a child process (once per change of the file);
- a later open of the unchanged store: the cached verdict;

and the ratios of the walk and of the cached open to the baseline.

    python bench/bench_store_check.py            # 100,000 graphs
    python bench/bench_store_check.py --quick    # 10,000 graphs
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore, health


def build(path: Path, n: int) -> None:
    with GraphStore(path, readonly=False) as store:
        store.put_many((f"images/{i:08d}.jpg", synthetic_graph(i % 1000)) for i in range(n))


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 graphs")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    args = parser.parse_args()
    n = 10_000 if args.quick else args.n
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_check_"))
    path = root / "graphs.lmdb"
    try:
        if not path.exists():
            t = time.perf_counter()
            build(path, n)
            print(f"built {n:,} graphs in {time.perf_counter() - t:.1f} s "
                  f"({(path / 'data.mdb').stat().st_size / 1e6:.0f} MB)")

        def read_all():
            with GraphStore(path) as store:
                for _ in store.items():
                    pass

        def walk():
            (path / health.CHECK_CACHE_NAME).unlink(missing_ok=True)
            health.verify_trees(path)

        baseline = timed(read_all)
        structural = timed(lambda: health.check_file(path), repeat=20)
        first = timed(walk)
        cached = timed(lambda: health.verify_trees(path), repeat=20)
        print(f"read every graph (baseline): {baseline:8.3f} s")
        print(f"meta page check (each open):  {structural * 1e3:8.3f} ms")
        print(f"tree walk (first open):       {first:8.3f} s   = x{first / baseline:.2f} of reading every graph")
        print(f"cached verdict (later opens): {cached * 1e3:8.3f} ms  = x{cached / baseline:.1e} of reading every graph")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
