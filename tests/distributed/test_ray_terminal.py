"""`gbc annotate --ray` keeps Ray's own lines (INFO lines of Ray Data, native notices such as
"Actor ... max_restarts > 0") out of the terminal; --verbose lets them through."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from gbc.distributed.ray_session import ray_output_aside

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_a_ray_run_prints_only_its_own_lines(tmp_path):
    pytest.importorskip("ray")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 90, 160)).save(images / f"img{i}.png")
    env = dict(os.environ, RAY_AUTH_MODE="disabled",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "gbc.cli.main", "annotate", str(images), "-o", str(tmp_path / "o.lmdb"),
                           "--mllm", "scripted", "--detector", "scripted", "--ray", "local"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["3 images found, 3 considered; annotating on Ray with 1 worker(s)"], lines
    assert "3 done, 0 failed" in proc.stdout


def test_other_output_goes_to_a_file_removed_after_success(capfd):
    # (Python's sys.stderr writes to file descriptor 2 as well; pytest replaces it here, so the
    # Ray run above checks that path.)
    before = set(Path(tempfile.gettempdir()).glob("gbc-ray-*.log"))
    with ray_output_aside(verbose=False) as terminal:
        os.write(2, b"[2026-12-03 16:45:01 E 1 1] core_worker.cc: Actor ... max_restarts > 0\n")
        os.write(2, b"INFO streaming_executor.py -- Starting execution\n")
        print("our progress", file=terminal)
    err = capfd.readouterr().err
    assert "our progress" in err and "max_restarts" not in err and "INFO" not in err
    assert set(Path(tempfile.gettempdir()).glob("gbc-ray-*.log")) <= before  # removed
    os.write(2, b"after\n")  # the terminal is back
    assert capfd.readouterr().err == "after\n"


def test_the_file_is_kept_and_named_when_the_run_fails(capfd):
    with pytest.raises(RuntimeError) as info:
        with ray_output_aside(verbose=False):
            os.write(2, b"native detail\n")
            raise RuntimeError("run failed")
    note = [n for n in getattr(info.value, "__notes__", []) if n.startswith("Ray's output during the run: ")]
    assert len(note) == 1
    path = Path(note[0].split(": ", 1)[1])
    assert path.read_text() == "native detail\n"
    path.unlink()
    assert "native detail" not in capfd.readouterr().err


def test_verbose_lets_everything_through(capfd):
    with ray_output_aside(verbose=True) as terminal:
        os.write(2, b"Actor ... max_restarts > 0\n")
        assert terminal is sys.stderr
    assert "max_restarts" in capfd.readouterr().err
