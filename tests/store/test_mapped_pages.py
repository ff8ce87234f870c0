"""A long scan or a long run does not keep the whole store file in the process's resident set."""

import os
import sys

import pytest

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import mapped_pages
from gbc.store.lmdb_store import GraphStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mapped pages are trimmed on Linux only")

GRAPHS = 2400
#: Graphs of the long-write test (committed 50 per transaction).
WRITTEN = 800


def mapped_rss_kb(data_file: str) -> int:
    """Resident kB of this process's mappings of ``data_file`` (from /proc/self/smaps)."""
    target, total, inside = os.path.realpath(data_file), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                inside = line.rstrip("\n").endswith(" " + target)
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapped") / "big.lmdb"
    with GraphStore(str(path), readonly=False) as store:
        store.put_many((f"k{i:06d}", synthetic_graph(i)) for i in range(GRAPHS))
    return path


def as_legacy(path):
    """Make the store at ``path`` look like one created before every graph had a status record
    (its meta lacks ``statuses_complete``): its key scans walk the graphs table too."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.delete(b"statuses_complete", db=env.open_db(b"meta", txn=txn))
    env.close()
    return path


@pytest.fixture(scope="module")
def legacy_store(big_store, tmp_path_factory):
    import shutil

    path = tmp_path_factory.mktemp("legacy") / "big.lmdb"
    shutil.copytree(big_store, path)
    return as_legacy(path)


KEY_SCANS = [
    lambda store: store.keys(),                  # a cursor over keys still maps every leaf page
    lambda store: store.keys(status="done"),     # status records and graph keys side by side
    lambda store: store.statuses(),
]
KEY_SCAN_IDS = ["keys", "keys-done", "statuses"]


def scan_rss_kb(path, every: int, monkeypatch, scan=lambda store: store.items()) -> int:
    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", every)
    with GraphStore(str(path)) as store:
        store._shared.trimmer.every = every
        assert sum(1 for _ in scan(store)) == GRAPHS
        return mapped_rss_kb(str(path / "data.mdb"))


def test_a_full_scan_keeps_few_pages_mapped(big_store, monkeypatch):
    file_kb = os.path.getsize(big_store / "data.mdb") // 1024
    untrimmed = scan_rss_kb(big_store, 1 << 40, monkeypatch)
    trimmed = scan_rss_kb(big_store, 256 << 10, monkeypatch)
    # without trimming, the scan leaves (nearly) every value page resident
    assert untrimmed > file_kb // 2, (untrimmed, file_kb)
    assert trimmed < untrimmed // 3, (trimmed, untrimmed)


@pytest.mark.parametrize("scan", KEY_SCANS, ids=KEY_SCAN_IDS)
def test_a_key_only_scan_keeps_few_pages_mapped(legacy_store, monkeypatch, scan):
    file_kb = os.path.getsize(legacy_store / "data.mdb") // 1024
    untrimmed = scan_rss_kb(legacy_store, 1 << 40, monkeypatch, scan)
    trimmed = scan_rss_kb(legacy_store, 256 << 10, monkeypatch, scan)
    assert untrimmed > file_kb // 2, (untrimmed, file_kb)
    assert trimmed < untrimmed // 3, (trimmed, untrimmed)


@pytest.mark.parametrize("scan", KEY_SCANS + [lambda store: store.status_flags()], ids=KEY_SCAN_IDS + ["flags"])
@pytest.mark.parametrize("legacy", [False, True])
def test_key_scans_of_a_store_whose_graphs_all_have_statuses_read_no_graph_page(big_store, legacy_store, monkeypatch,
                                                                                  scan, legacy):
    # the status table alone answers (the graphs table holds the values: most of the file)
    walked = []
    real = GraphStore._scan_chunks

    def scan_chunks(self, dbname, *args, **kwargs):
        walked.append(dbname)
        return real(self, dbname, *args, **kwargs)

    monkeypatch.setattr(GraphStore, "_scan_chunks", scan_chunks)
    with GraphStore(str(legacy_store if legacy else big_store)) as store:
        assert sum(1 for _ in scan(store)) == GRAPHS
    assert (b"graphs" in walked) == legacy and set(walked) <= {b"status", b"graphs"}


@pytest.mark.parametrize("legacy", [True, False])
def test_key_scan_counts_the_pages_it_walks(big_store, legacy_store, legacy):
    path = legacy_store if legacy else big_store
    with GraphStore(str(path)) as store:
        trimmer = store._shared.trimmer
        trimmer.every = 1 << 40
        before = trimmer.pending
        assert sum(1 for _ in store.keys()) == GRAPHS
        walked = trimmer.pending - before
    if legacy:  # the whole graph table: every page of it, within one page per chunk of rounding
        assert abs(walked - store_pages_bytes(path, b"graphs")) < 4096 * (GRAPHS // 256 + 1), walked
    else:  # the status records alone
        assert 0 < walked <= store_pages_bytes(path, b"status") < store_pages_bytes(path, b"graphs") // 10, walked


def store_pages_bytes(path, table: bytes) -> int:
    with GraphStore(str(path)) as store:
        stat = store._read(lambda txn: txn.stat(store._db(table)))
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


def test_trimming_loses_nothing(big_store, monkeypatch):
    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", 4096)
    with GraphStore(str(big_store)) as store:
        store._shared.trimmer.every = 4096
        for i, (key, graph) in enumerate(store.items()):
            assert key == f"k{i:06d}"
            assert graph == synthetic_graph(i)
        assert store._shared.trimmer.trims >= 5


def test_a_long_write_keeps_few_pages_mapped(tmp_path):
    path = tmp_path / "grow.lmdb"
    with GraphStore(str(path), readonly=False) as store:
        store._shared.trimmer.every = 256 << 10
        for start in range(0, WRITTEN, 50):  # many small transactions, as a run commits them
            store.commit_images((f"k{i:06d}", synthetic_graph(i), None) for i in range(start, start + 50))
        file_kb = os.path.getsize(path / "data.mdb") // 1024
        resident = mapped_rss_kb(str(path / "data.mdb"))
        assert store._shared.trimmer.trims >= 1
        assert resident < file_kb // 2, (resident, file_kb)
        assert len(store) == WRITTEN and store["k000777"] == synthetic_graph(777)


def test_random_reads_are_counted(big_store):
    with GraphStore(str(big_store)) as store:
        store._shared.trimmer.every = 64 << 10
        for i in range(0, GRAPHS, 7):
            assert store[f"k{i:06d}"] == synthetic_graph(i)
        assert store._shared.trimmer.trims >= 1


def test_drop_is_harmless_without_a_mapping(tmp_path):
    assert mapped_pages.drop_mapped_pages(str(tmp_path / "none" / "data.mdb")) == 0


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    for s in range(4):
        with GraphStore(str(folder / f"part-{s}.lmdb"), readonly=False) as store:
            store.commit_images((f"k{i:06d}", synthetic_graph(i)) for i in range(s, GRAPHS, 4))
    return folder


def multi_scan_rss_kb(folder, budget: int, monkeypatch, scan) -> int:
    """Resident kB of all the shards' maps after ``scan`` of a MultiStore over them, when each
    store alone would never trim and the process-wide budget is ``budget``."""
    from gbc.store.shards import open_multi_store

    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", budget)
    with open_multi_store(folder) as view:
        for store in view.stores:
            store._shared.trimmer.every = 1 << 40
        assert sum(1 for _ in scan(view)) == GRAPHS
        return sum(mapped_rss_kb(str(p / "data.mdb")) for p in view.paths)


@pytest.fixture(scope="module")
def legacy_shard_folder(shard_folder, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("legacy-shards")
    for path in shard_folder.glob("*.lmdb"):
        shutil.copytree(path, folder / path.name)
        as_legacy(folder / path.name)
    return folder


@pytest.mark.parametrize("scan", [lambda view: view.keys(), lambda view: view.values()], ids=["keys", "values"])
def test_a_multistore_scan_trims_across_its_stores(legacy_shard_folder, monkeypatch, scan):
    # each shard alone stays under the budget; together they pass it many times
    shard_folder = legacy_shard_folder  # keys of these stores are listed from their graph tables too
    files_kb = sum(os.path.getsize(p / "data.mdb") for p in shard_folder.glob("*.lmdb")) // 1024
    untrimmed = multi_scan_rss_kb(shard_folder, 1 << 40, monkeypatch, scan)
    trimmed = multi_scan_rss_kb(shard_folder, 256 << 10, monkeypatch, scan)
    assert untrimmed > files_kb // 2, (untrimmed, files_kb)
    assert trimmed < untrimmed // 3, (trimmed, untrimmed)


def test_merge_trims_the_maps_of_its_sources(shard_folder, tmp_path, monkeypatch):
    from gbc.distributed.merge import merge_stores

    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", 256 << 10)
    trimmed = []
    real = mapped_pages.drop_many_mapped_pages

    def recording(files):
        trimmed.extend(files)
        return real(files)

    monkeypatch.setattr(mapped_pages, "drop_many_mapped_pages", recording)
    sources = sorted(shard_folder.glob("*.lmdb"))
    summary = merge_stores(sources, tmp_path / "merged.lmdb")
    assert summary["done"] == GRAPHS
    for source in sources:  # the planning pass and the copy both read every source
        assert trimmed.count(str(source / "data.mdb")) >= 2, (source, len(trimmed))
    with GraphStore(str(tmp_path / "merged.lmdb")) as merged:
        assert merged["k000777"] == synthetic_graph(777)


def test_a_closed_store_leaves_the_budget(big_store, monkeypatch):
    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", 1 << 40)
    with GraphStore(str(big_store)) as store:
        trimmer = store._shared.trimmer
        trimmer.every = 1 << 40
        sum(1 for _ in store.keys())
        assert trimmer.pending > 0
    assert trimmer.pending == 0 and trimmer not in set(mapped_pages._TRIMMERS)


def test_random_lookups_keep_few_pages_mapped(big_store, monkeypatch):
    # a lookup maps more than its value (a leaf page and the pages mapped around a fault)
    import random

    keys = [f"k{i:06d}" for i in range(GRAPHS)]
    random.Random(0).shuffle(keys)
    resident = {}
    for every in (1 << 40, 256 << 10):
        monkeypatch.setattr(mapped_pages, "TRIM_BYTES", every)
        with GraphStore(str(big_store)) as store:
            store._shared.trimmer.every = every
            for key in keys:
                store[key]
            resident[every] = mapped_rss_kb(str(big_store / "data.mdb"))
    assert resident[256 << 10] < resident[1 << 40] // 3, resident


def test_status_lookups_are_counted(big_store):
    with GraphStore(str(big_store)) as store:
        trimmer = store._shared.trimmer
        trimmer.every = 1 << 40
        before = trimmer.pending
        for i in range(0, GRAPHS, 10):
            assert store.status(f"k{i:06d}").status == "done"
        assert trimmer.pending - before == (GRAPHS // 10) * mapped_pages.STATUS_READ_BYTES
