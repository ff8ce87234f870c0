import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_store.py"


def test_bench_store_runs_and_prints_every_figure(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "40", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    for fmt in ("jsonl", "store", "parquet"):
        line = next(l for l in out.splitlines() if l.startswith(fmt + " "))
        write, read, size = (float(x.replace(",", "")) for x in line.split()[1:4])
        assert write > 0 and read > 0 and size > 0
    assert "store / jsonl: write x" in out and "aims:" in out
    views = re.search(r"read-only views .*?: ([\d,]+) graphs/s = x([\d.]+) of the pydantic read", out)
    assert views and int(views.group(1).replace(",", "")) > 0 and float(views.group(2)) > 0
    assert re.search(r"aims: read >= 20,000/s: views [\d,]+ (met|NOT met), pydantic graphs (met|NOT met)", out)
    assert (tmp_path / "graphs.lmdb" / "data.mdb").exists()


def test_bench_store_times_convert_with_workers(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "30", "--no-parquet", "--workers", "2", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    rows = [l for l in out.splitlines() if l.startswith("gbc convert JSONL -> store")]
    assert [r.split(", ")[1].split()[0] for r in rows] == ["1", "2"]
    assert all(float(r.split(": ")[1].split()[0].replace(",", "")) > 0 for r in rows)
