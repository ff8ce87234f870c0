"""Leaf pages of a table are found from the LMDB file itself and asked for ahead of a scan."""

import os
import shutil
import sys

import lmdb
import pytest

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import lmdb_store, page_prefetch
from gbc.store.lmdb_store import GraphStore
from gbc.store.page_prefetch import LeafPrefetcher

KEYS = 8000

needs_fadvise = pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not sys.platform.startswith("linux"),
                                   reason="page prefetching uses posix_fadvise and mincore (Linux)")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("prefetch") / "s.lmdb"
    graph = synthetic_graph(0)
    with GraphStore(str(path), readonly=False) as store:
        store.put_many((f"img/{i:06d}.jpg", graph) for i in range(KEYS))
    return path


def lmdb_truth(path, name: bytes):
    """(stat, keys in order) of a table, through LMDB itself."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
    try:
        with env.begin() as txn:
            db = env.open_db(name, txn=txn, create=False)
            return txn.stat(db), [bytes(k) for k in txn.cursor(db).iternext(values=False)]
    finally:
        env.close()


def walked(path, name: bytes):
    """(leaf page numbers, keys read from those pages) by the module's own walk."""
    fd = os.open(os.path.join(path, "data.mdb"), os.O_RDONLY)
    with page_prefetch._File(fd) as f:
        f.psize, f.last_page, main_db = page_prefetch._meta(fd)
        root, depth, leaves, entries = page_prefetch._table_root(f, main_db[7], name)
        pages = [p for batch in page_prefetch._leaves(f, root, depth) for p in batch]
        keys = []
        for pgno in pages:
            page = f.page(pgno)
            assert page_prefetch._flags(page) & page_prefetch._P_LEAF
            keys += [key for _, _, _, key, _ in page_prefetch._nodes(page, f.psize)]
        return (root, depth, leaves, entries), pages, keys


@pytest.mark.parametrize("name", [b"status", b"graphs", b"dicts"])
def test_walk_finds_every_leaf_page_in_key_order(store_path, name):
    stat, keys = lmdb_truth(store_path, name)
    (_, depth, leaves, entries), pages, walked_keys = walked(store_path, name)
    assert (depth, leaves, entries) == (stat["depth"], stat["leaf_pages"], stat["entries"])
    assert len(pages) == len(set(pages)) == stat["leaf_pages"]
    assert walked_keys == keys  # leaves in key order, every key on one of them
    if name == b"status":
        assert depth >= 3  # branch pages of two levels were walked


def test_overflow_pages_of_the_values_are_found(store_path):
    stat, _ = lmdb_truth(store_path, b"graphs")
    assert stat["overflow_pages"] > 0  # the values written before the dictionary was trained are big
    _, pages, _ = walked(store_path, b"graphs")
    fd = os.open(os.path.join(store_path, "data.mdb"), os.O_RDONLY)
    with page_prefetch._File(fd) as f:
        f.psize, f.last_page, _ = page_prefetch._meta(fd)
        overflow = page_prefetch._overflow(f, pages)
        assert len(overflow) == len(set(overflow)) == stat["overflow_pages"]
        assert not set(overflow) & set(pages)
        for pgno in overflow[:50]:
            f.page(pgno)  # each names itself: a page of the file, not a guess
        assert page_prefetch._overflow(f, [pages[0], 1]) == page_prefetch._overflow(f, [pages[0]])  # a meta page ends it


def test_unknown_table_is_a_layout_error(store_path):
    with pytest.raises(page_prefetch.LayoutError):
        walked(store_path, b"no-such-table")


def evict(path) -> bool:
    """Drop the file's pages from the page cache; False where the file system keeps them."""
    data = os.path.join(path, "data.mdb")
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages (a fresh copy) are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        residency = page_prefetch._Residency(fd, 4096)
        try:
            size = os.fstat(fd).st_size // 4096
            return bool(residency.missing(list(range(2, size))))
        finally:
            residency.close()
    finally:
        os.close(fd)


def scan_with(prefetcher: LeafPrefetcher, rows: int, step: int = 256) -> None:
    for _ in range(0, rows, step):
        prefetcher.advance(step)


def cold_then_warm(store_path, tmp_path, name: bytes, values: bool = False):
    """(LMDB's stat of the table, pages a prefetcher asked for over a whole scan of a copy of
    the store whose pages were dropped from the page cache, the same once they are cached)."""
    copy = tmp_path / "copy.lmdb"
    shutil.copytree(store_path, copy)
    stat, _ = lmdb_truth(copy, name)
    if not evict(copy):
        pytest.skip("this file system keeps files in memory: nothing to prefetch")
    requested = []
    for _ in range(2):
        prefetcher = LeafPrefetcher(copy / "data.mdb", name, ahead=64 * 4096, values=values)
        assert prefetcher.active
        scan_with(prefetcher, KEYS)
        assert not prefetcher.active  # the walk is over and nothing is left to ask for
        prefetcher.close()
        requested.append(prefetcher.requested_pages)
        with GraphStore(str(copy)) as store:  # now the pages are cached
            assert sum(1 for _ in (store.values(view=True) if values else store.keys())) == KEYS
    return stat, requested[0], requested[1]


@needs_fadvise
def test_a_cold_table_is_requested_and_a_warm_one_is_not(store_path, tmp_path):
    stat, cold, warm = cold_then_warm(store_path, tmp_path, b"status")
    assert cold == stat["leaf_pages"]  # every leaf page was asked for, once, and nothing else
    assert warm == 0


@needs_fadvise
def test_a_cold_value_scan_asks_for_leaves_and_overflow_pages(store_path, tmp_path):
    stat, cold, warm = cold_then_warm(store_path, tmp_path, b"graphs", values=True)
    assert cold == stat["leaf_pages"] + stat["overflow_pages"]
    assert warm == 0


@needs_fadvise
def test_requests_stay_a_window_ahead_of_the_scan(store_path, tmp_path):
    copy = tmp_path / "copy.lmdb"
    shutil.copytree(store_path, copy)
    if not evict(copy):
        pytest.skip("this file system keeps files in memory: nothing to prefetch")
    prefetcher = LeafPrefetcher(copy / "data.mdb", b"status", ahead=32 * 4096)
    first = prefetcher.requested_pages
    assert first == 32  # one window at the start
    prefetcher.advance(256)  # about 6 leaves: still more than half a window ahead
    assert prefetcher.requested_pages == first
    prefetcher.advance(1200)  # past half the window: the next pages are asked for
    assert first < prefetcher.requested_pages <= 32 + (256 + 1200) // 40 + 1
    prefetcher.close()


def test_small_tables_and_damaged_files_are_left_alone(store_path, tmp_path):
    assert not LeafPrefetcher(store_path / "data.mdb", b"dicts").active  # one leaf page
    assert not LeafPrefetcher(store_path / "data.mdb", b"missing").active
    garbage = tmp_path / "garbage.mdb"
    garbage.write_bytes(os.urandom(64 * 4096))
    assert not LeafPrefetcher(garbage, b"status").active
    assert not LeafPrefetcher(tmp_path / "absent.mdb", b"status").active
    short = tmp_path / "short.mdb"
    short.write_bytes((store_path / "data.mdb").read_bytes()[:3 * 4096])
    assert not LeafPrefetcher(short, b"status").active  # the root lies past the end


@needs_fadvise
def test_a_damaged_branch_page_ends_prefetching_quietly(store_path, tmp_path):
    copy = tmp_path / "copy.lmdb"
    shutil.copytree(store_path, copy)
    (root, depth, _, _), _, _ = walked(copy, b"status")
    assert depth >= 3
    data = bytearray((copy / "data.mdb").read_bytes())
    # the root names its children; point them all at page 1 (a meta page, never a branch)
    fd = os.open(copy / "data.mdb", os.O_RDONLY)
    with page_prefetch._File(fd) as f:
        f.psize, f.last_page, _ = page_prefetch._meta(fd)
        page = f.page(root)
        offsets = [int.from_bytes(page[16 + 2 * i:18 + 2 * i], sys.byteorder)
                   for i in range((int.from_bytes(page[12:14], sys.byteorder) - 16) // 2)]
    for offset in offsets:
        at = root * 4096 + offset
        data[at:at + 6] = (1).to_bytes(2, sys.byteorder) + bytes(4)
    (copy / "data.mdb").write_bytes(bytes(data))
    prefetcher = LeafPrefetcher(copy / "data.mdb", b"status", ahead=32 * 4096)
    scan_with(prefetcher, KEYS)
    assert not prefetcher.active and prefetcher.requested_pages == 0


@needs_fadvise
def test_prefetchers_hold_no_file_descriptor(store_path):
    before = len(os.listdir("/proc/self/fd"))
    prefetchers = [LeafPrefetcher(store_path / "data.mdb", b"status", ahead=32 * 4096) for _ in range(50)]
    assert all(p.active for p in prefetchers)
    assert len(os.listdir("/proc/self/fd")) == before
    for p in prefetchers:
        p.close()


class Recorder:
    made = []

    def __init__(self, path, name, ahead=None, values=False):
        self.path, self.name, self.rows, self.values = path, name, 0, values
        Recorder.made.append(self)

    def advance(self, rows):
        self.rows += rows

    def close(self):
        self.closed = True


@pytest.fixture()
def recorder(monkeypatch):
    Recorder.made = []
    monkeypatch.setattr(lmdb_store, "LeafPrefetcher", Recorder)
    return Recorder


def test_key_scans_prefetch_the_status_table(store_path, recorder):
    with GraphStore(str(store_path)) as store:
        keys = list(store.keys())
        assert len(keys) == KEYS and keys == sorted(keys)
        assert [(r.name, r.rows, r.closed) for r in recorder.made] == [(b"status", KEYS, True)]
        recorder.made.clear()
        assert store.count("done") == KEYS
        assert [r.name for r in recorder.made] == [b"status"]
        recorder.made.clear()
        first = next(iter(store.keys()))  # a scan that stops in its first chunk: no prefetch
        assert first == keys[0] and recorder.made == []


def test_value_scans_prefetch_the_graphs_and_their_overflow_pages(store_path, recorder):
    with GraphStore(str(store_path)) as store:
        assert sum(1 for _ in store.values(view=True)) == KEYS
    assert [(r.name, r.values, r.rows) for r in recorder.made] == [(b"graphs", True, KEYS)]


def test_stores_opened_for_readahead_do_not_prefetch(store_path, recorder):
    with GraphStore(str(store_path), readahead=True) as store:
        assert sum(1 for _ in store.keys()) == KEYS
    assert recorder.made == []


WRITER = """
import sys
from gbc.schemas.synthetic import synthetic_graph
from gbc.store.lmdb_store import GraphStore
graph = synthetic_graph(1)
with GraphStore(sys.argv[1], readonly=False) as writer:
    for round_ in range(6):
        # new keys among the old ones (pages split and move), and old ones deleted
        writer.put_many(((f"k{i:06d}x{round_}", graph) for i in range(0, 4000, 3)), batch_size=200)
        for i in range(round_, 4000, 7):
            writer.delete(f"k{i:06d}")
"""


def test_scans_while_a_writer_grows_and_rewrites_the_store(tmp_path):
    # Pages the prefetcher found may be freed and reused by the writer before it reads them:
    # whatever it reads then, the scans return what LMDB gives them and raise nothing.
    import subprocess

    path = tmp_path / "busy.lmdb"
    graph = synthetic_graph(1)
    with GraphStore(str(path), readonly=False) as store:
        store.put_many((f"k{i:06d}", graph) for i in range(4000))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stderr=subprocess.PIPE, text=True)
    scans = 0
    with GraphStore(str(path)) as reader:
        while writer.poll() is None or scans < 2:
            done_before = writer.poll() is not None
            keys = list(reader.keys())
            assert keys == sorted(keys) and len(keys) >= 4000 - 4000 // 7 * 6 - 6
            graphs = sum(1 for _ in reader.values(view=True))
            assert graphs > 0 and (graphs == len(keys) or not done_before)
            scans += 1
    assert writer.wait() == 0, writer.stderr.read()
    with GraphStore(str(path)) as reader:
        keys = list(reader.keys())
        assert keys == sorted(keys) and sum(1 for _ in reader.values(view=True)) == len(keys)


def test_the_newer_valid_meta_page_is_used(store_path, tmp_path):
    data = (store_path / "data.mdb").read_bytes()
    txnids = [int.from_bytes(data[o + 144:o + 152], sys.byteorder) for o in (0, 4096)]
    assert txnids[0] != txnids[1]  # LMDB writes the two meta pages in turn
    newer = 0 if txnids[0] > txnids[1] else 4096
    for damaged, still_readable in ((newer, True), (4096 - newer, True), (None, False)):
        copy = bytearray(data)
        for offset in (0, 4096) if damaged is None else (damaged,):
            copy[offset + 16:offset + 20] = bytes(4)  # the magic number
        path = tmp_path / f"meta-{damaged}.mdb"
        path.write_bytes(bytes(copy))
        assert LeafPrefetcher(path, b"status", ahead=32 * 4096).active is still_readable
