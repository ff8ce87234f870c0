"""Shards leave the page cache behind the writer: writeback is started a chunk at a time, and a
chunk is dropped once enough was written after it, across shards; the files are unchanged."""

import os
import sys
import tarfile

import pytest

from gbc.export import tar as tar_module
from gbc.export.tar import DropBehind, TarWriter

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range and fadvise are Linux's")


@pytest.fixture
def small_drop_behind(monkeypatch):
    """A DropBehind with 64 KB chunks and a 256 KB lag, recording what it advised."""
    dropper = DropBehind(chunk=64 << 10, lag=256 << 10)
    monkeypatch.setattr(tar_module, "DROP_BEHIND", dropper)
    advised = []
    real = os.posix_fadvise if hasattr(os, "posix_fadvise") else None

    def record(fd, offset, length, advice):
        advised.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        return real(fd, offset, length, advice)

    if real is not None:
        monkeypatch.setattr(tar_module.os, "posix_fadvise", record)
    return dropper, advised


def _write_shards(folder, n_shards, members):
    written = {}
    for s in range(n_shards):
        path = folder / f"{s:05d}.tar"
        tar = TarWriter(path)
        for i in range(members):
            name, data = f"{s:05d}{i:04d}.txt", os.urandom(3000 + 37 * i)
            tar.add(name, data)
            written[(path.name, name)] = data
        tar.close()
    return written


def _read_shards(folder):
    got = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                got[(path.name, m.name)] = tar.extractfile(m).read()
    return got


@linux_only
def test_written_shards_are_dropped_behind_the_writer_across_shards(tmp_path, small_drop_behind):
    dropper, advised = small_drop_behind
    assert dropper.active
    written = _write_shards(tmp_path, n_shards=6, members=40)  # ~120-190 KB a shard: under the lag
    assert _read_shards(tmp_path) == written  # nothing lost or changed
    total = sum(p.stat().st_size for p in tmp_path.glob("*.tar"))
    assert dropper.total == total  # every byte's writeback was started
    assert advised and all(advice == os.POSIX_FADV_DONTNEED for *_, advice in advised)
    # ranges of closed shards were dropped by later shards' writes, in the order written, and
    # nothing of the last 256 KB written
    shards_advised = [os.path.basename(path) for path, *_ in advised]
    assert shards_advised == sorted(shards_advised) and shards_advised[0] == "00000.tar"
    assert dropper.dropped == sum(length for _, _, length, _ in advised)
    assert total - 2 * dropper.lag <= dropper.dropped <= total - dropper.lag
    for path, offset, length, _ in advised:  # within the file, never past what was written
        assert 0 <= offset and offset + length <= os.path.getsize(path)


@linux_only
def test_a_file_system_that_refuses_writeback_hints_is_left_alone(tmp_path, small_drop_behind):
    dropper, advised = small_drop_behind
    dropper._start_writeback = lambda fd, offset, length, flags: -1  # e.g. EINVAL from a FUSE file system
    written = _write_shards(tmp_path, n_shards=3, members=40)
    assert _read_shards(tmp_path) == written
    assert not dropper.active and advised == [] and dropper.dropped == 0


@linux_only
def test_a_shard_moved_before_its_turn_is_skipped(tmp_path, small_drop_behind):
    dropper, advised = small_drop_behind
    first = _write_shards(tmp_path, n_shards=1, members=40)
    moved = tmp_path / "moved"
    moved.mkdir()
    os.replace(tmp_path / "00000.tar", moved / "00000.tar")  # as a staged export is renamed
    _write_shards(tmp_path, n_shards=3, members=40)  # overwrites 00000.tar with a new shard
    with tarfile.open(moved / "00000.tar") as tar:
        assert {("00000.tar", m.name): tar.extractfile(m).read() for m in tar.getmembers()} == first
    assert advised  # the later shards were dropped; the moved one was looked for by path only


def test_nothing_happens_where_the_calls_do_not_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(tar_module.sys, "platform", "darwin")
    dropper = DropBehind(chunk=1, lag=1)
    monkeypatch.setattr(tar_module, "DROP_BEHIND", dropper)
    written = _write_shards(tmp_path, n_shards=2, members=5)
    assert not dropper.active and dropper.total == 0 and dropper.dropped == 0
    assert _read_shards(tmp_path) == written
