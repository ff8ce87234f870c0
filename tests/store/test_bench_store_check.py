import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_store_check.py"


def test_bench_store_check_prints_every_figure(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--n", "50", "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    for label in ("read every graph (baseline)", "meta page check", "tree walk (first open)", "cached verdict"):
        line = next(l for l in out.splitlines() if l.startswith(label))
        assert float(line.split(":")[1].split()[0]) > 0
    assert (tmp_path / "graphs.lmdb" / "gbc-check.json").exists()
