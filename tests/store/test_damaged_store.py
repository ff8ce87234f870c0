"""A damaged store never kills a command by a signal; `gbc salvage` copies what can be read.

The damage is real: pages of an LMDB file written by the store are overwritten (node offsets
of leaf pages pointed past the end of the file, which made LMDB die by SIGBUS; the last pages
zeroed, which tripped an LMDB assertion), and every command runs in its own process.
"""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import health
from gbc.store.lmdb_store import GraphStore
from gbc.store.salvage import salvage_store

N_GRAPHS = 300
P_LEAF = 0x02


def _key(i):
    return f"img/{i:05d}.jpg"


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("damage") / "base.lmdb"
    with GraphStore(path, readonly=False) as store:
        for i in range(N_GRAPHS):
            store.commit_image(_key(i), synthetic_graph(i), provenance={"i": i})
        store.mark_failed("img/failed.jpg", "the model said nothing", error_type="EmptyAnswer")
    return path


def _copy(src, dst):
    shutil.copytree(src, dst)
    lock = dst / "lock.mdb"
    if lock.exists():
        lock.unlink()
    return dst


def _pages(data_file):
    data = data_file.read_bytes()
    psize = struct.unpack_from("<I", data, 40)[0]
    found = []
    for pg in range(2, len(data) // psize):
        pgno, _, flags = struct.unpack_from("<QHH", data, pg * psize)
        if pgno == pg:
            found.append((pg, flags))
    return psize, len(data) // psize, found


def damage_pointers(src, dst):
    """Point the first node of every leaf page among the last 16 past the end of the file."""
    _copy(src, dst)
    data_file = dst / "data.mdb"
    psize, n_pages, pages = _pages(data_file)
    with open(data_file, "r+b") as fh:
        for pg, flags in pages:
            if flags & P_LEAF and pg >= n_pages - 16:
                fh.seek(pg * psize + 16)
                fh.write(struct.pack("<H", 0xFFFE))
    return dst


def zero_last_pages(src, dst, fraction):
    """Zero the last ``fraction`` of the file's pages (where LMDB writes its newest pages)."""
    _copy(src, dst)
    data_file = dst / "data.mdb"
    n_pages = data_file.stat().st_size // 4096
    count = max(1, int(n_pages * fraction))
    with open(data_file, "r+b") as fh:
        fh.seek((n_pages - count) * 4096)
        fh.write(b"\0" * count * 4096)
    return dst


def empty_file(src, dst):
    _copy(src, dst)
    (dst / "data.mdb").write_bytes(b"")
    return dst


def garbage_file(src, dst):
    _copy(src, dst)
    (dst / "data.mdb").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return dst


DAMAGES = {
    "pointers": damage_pointers,
    "zero-eighth": lambda s, d: zero_last_pages(s, d, 1 / 8),
    "zero-quarter": lambda s, d: zero_last_pages(s, d, 1 / 4),
    "empty": empty_file,
    "garbage": garbage_file,
}


def _gbc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gbc.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _assert_one_line_error(proc, store):
    # A signal shows as a negative code (or 128+N through a shell): never either.
    assert 0 < proc.returncode < 128, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert store.name in lines[0]


def _commands(store, tmp_path):
    images = tmp_path / "images"
    if not images.exists():
        images.mkdir()
        Image.new("RGB", (32, 24)).save(images / "new.png")
    return {
        "ls": ["ls", store],
        "stats": ["stats", store],
        "validate": ["validate", store],
        "show": ["show", store, _key(1)],
        "export": ["export", store, "-o", tmp_path / "out.csv", "--text-only"],
        "convert": ["convert", store, tmp_path / "out.jsonl"],
        "merge": ["merge", store, "-o", tmp_path / "merged.lmdb"],
        "render": ["render", store, _key(1), "-o", tmp_path / "pic.png"],
        "annotate": ["annotate", images, "-o", store, "--mllm", "scripted", "--detector", "scripted"],
    }


@pytest.mark.parametrize("damage", ["pointers", "zero-eighth"])
def test_every_command_reports_a_damaged_store_in_one_line(base_store, tmp_path, damage):
    store = DAMAGES[damage](base_store, tmp_path / f"{damage}.lmdb")
    for name, args in _commands(store, tmp_path).items():
        proc = _gbc(*args)
        _assert_one_line_error(proc, store)
        assert "damaged" in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize("damage", ["zero-quarter", "empty", "garbage"])
def test_other_damage_is_one_line_too(base_store, tmp_path, damage):
    store = DAMAGES[damage](base_store, tmp_path / f"{damage}.lmdb")
    for name in ("ls", "validate", "export"):
        _assert_one_line_error(_gbc(*_commands(store, tmp_path)[name]), store)


def test_a_sound_store_passes_the_check_once_and_is_cached(base_store, tmp_path):
    store = _copy(base_store, tmp_path / "sound.lmdb")
    assert not (store / health.CHECK_CACHE_NAME).exists()
    proc = _gbc("ls", store)
    assert proc.returncode == 0, proc.stderr
    cached = json.loads((store / health.CHECK_CACHE_NAME).read_text())
    assert cached["damage"] is None
    # A changed file is walked again: damage after a sound verdict is still found.
    damage_pointers(base_store, tmp_path / "later.lmdb")
    shutil.copy(tmp_path / "later.lmdb" / "data.mdb", store / "data.mdb")
    _assert_one_line_error(_gbc("ls", store), store)


@pytest.mark.parametrize("damage", ["pointers", "zero-eighth", "zero-quarter"])
def test_salvage_copies_every_readable_graph(base_store, tmp_path, damage):
    store = DAMAGES[damage](base_store, tmp_path / f"{damage}.lmdb")
    out = tmp_path / "rescued.lmdb"
    proc = _gbc("salvage", store, "-o", out, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert report["graphs_copied"] + report["graphs_lost"] == N_GRAPHS
    assert report["graphs_copied"] > N_GRAPHS // 2
    assert (proc.returncode == 1) == (report["graphs_lost"] > 0)
    with GraphStore(base_store) as original, GraphStore(out) as rescued:
        assert len(rescued) == report["graphs_copied"]
        for key, graph in rescued.items():
            assert graph == original[key]
            assert rescued.status(key).status == "done"
        assert set(report["lost_keys"]).isdisjoint(rescued.keys())
        failed = rescued.status("img/failed.jpg")  # lost when its status page was zeroed
        assert (failed is not None or damage != "pointers") and (failed is None or failed.reason == "the model said nothing")
    assert _gbc("validate", out).returncode == 0


def test_salvage_loses_exactly_the_damaged_range(base_store, tmp_path):
    store = zero_last_pages(base_store, tmp_path / "z.lmdb", 1 / 4)
    report = salvage_store(store, tmp_path / "out.lmdb")
    assert report.graphs_lost > 0 and report.crashes > 0
    assert report.graphs_copied + report.graphs_lost == N_GRAPHS


def _value_damaged_store(base_store, dst, keys):
    import lmdb

    _copy(base_store, dst)
    env = lmdb.open(str(dst), max_dbs=8)
    graphs = env.open_db(b"graphs", create=False)
    with env.begin(write=True) as txn:
        for key in keys:
            txn.put(key.encode(), b"\x01not a graph value", db=graphs)
    env.close()
    return dst


def test_validate_stats_and_export_list_every_damaged_graph(base_store, tmp_path):
    bad = [_key(3), _key(150), _key(299)]
    store = _value_damaged_store(base_store, tmp_path / "values.lmdb", bad)
    proc = _gbc("validate", store)
    assert proc.returncode == 1
    for key in bad:
        assert f"{key}: damaged" in proc.stdout
    assert f"{N_GRAPHS - 3} valid, 0 invalid, 3 damaged" in proc.stdout
    proc = _gbc("stats", store, "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["graphs"] == N_GRAPHS - 3
    assert all(key in proc.stderr for key in bad)
    out = tmp_path / "t.csv"
    proc = _gbc("export", store, "-o", out, "--text-only", "--json")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout[:proc.stdout.rindex("}") + 1])
    assert summary["graphs_read"] == N_GRAPHS - 3 and summary["damaged"] == bad
    assert all(key in proc.stderr for key in bad)
    # salvage leaves them out and names them
    report = salvage_store(store, tmp_path / "r.lmdb")
    assert report.graphs_lost == 3 and sorted(report.lost_keys) == bad
