"""A full disk: one line, committed work intact, no partial outputs, never a signal.

The disk is a small tmpfs mounted for the test (root only: skipped with the reason otherwise).
"""

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image

from gbc.schemas.synthetic import synthetic_graph
from gbc.store.lmdb_store import GraphStore

SCRIPTED = ["--mllm", "scripted", "--detector", "scripted", "--no-progress"]


def _mount(path, size):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"gbc-test-{uuid.uuid4().hex[:6]}", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'mount failed'}); needs root")


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / "small"
    _mount(mnt, "400k")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt):
    """Leave the file system with 0 bytes free."""
    with open(mnt / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def _gbc(*args):
    return subprocess.run([sys.executable, "-m", "gbc.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _one_line_no_space(proc, mnt):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert errors[0].startswith(f"Error: no space left on {mnt}"), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(250):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def source_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "s.lmdb"
    with GraphStore(path, readonly=False) as store:
        for i in range(300):
            store.commit_image(f"img/{i:04d}.jpg", synthetic_graph(i))
    return path


def test_annotate_stops_in_one_line_and_resumes(small_disk, images):
    store = small_disk / "run.lmdb"
    proc = _gbc("annotate", images, "-o", store, *SCRIPTED)
    line = _one_line_no_space(proc, small_disk)
    committed = int(line.split(": ")[2].split()[0])
    assert 0 < committed < 250 and line.endswith("images committed, rerun to resume")
    listing = _gbc("ls", store)
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == committed
    assert _gbc("validate", store).returncode == 0
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    rerun = _gbc("annotate", images, "-o", store, *SCRIPTED, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{committed} skipped" in rerun.stderr
    with GraphStore(store) as s:
        assert s.count("done") == 250


def test_nothing_fits_on_a_full_disk(small_disk, images, source_store):
    _fill(small_disk)
    runs = {
        "annotate": ["annotate", images, "-o", small_disk / "new.lmdb", *SCRIPTED],
        "convert-store": ["convert", source_store, small_disk / "c.lmdb"],
        "convert-jsonl": ["convert", source_store, small_disk / "c.jsonl"],
        "export-csv": ["export", source_store, "-o", small_disk / "t.csv", "--text-only"],
        "export-wds": ["export", source_store, "-o", small_disk / "shards", "--format", "wds", "--text-only"],
    }
    for name, args in runs.items():
        _one_line_no_space(_gbc(*args), small_disk)
        left = sorted(p.name for p in small_disk.iterdir() if p.name not in ("filler", "new.lmdb"))
        assert left == [], (name, left)


def test_export_removes_its_partial_files(small_disk, source_store):
    # Room for part of the export only: it fails midway and takes its files away.
    with open(small_disk / "filler", "wb") as fh:
        fh.write(b"\0" * (300 << 10))
    failed = 0
    for fmt, out in (("csv", small_disk / "t.csv"), ("wds", small_disk / "shards"), ("parquet", small_disk / "pq")):
        proc = _gbc("export", source_store, "-o", out, "--format", fmt, "--text-only", "--captions", "concat")
        if proc.returncode == 0:  # this format's output fitted: nothing partial to check
            _gbc_clean = [p for p in small_disk.iterdir() if p.name != "filler"]
            for p in _gbc_clean:
                subprocess.run(["rm", "-rf", str(p)], check=True)
            continue
        failed += 1
        _one_line_no_space(proc, small_disk)
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler"], fmt
    assert failed >= 2  # csv and wds outputs of 300 graphs never fit in 100 KB
