"""A long scan or a long run does not keep the whole store file in the process's resident set."""

import os
import sys

import pytest

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import mapped_pages
from gbc.store.lmdb_store import GraphStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mapped pages are trimmed on Linux only")

GRAPHS = 800


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


def scan_rss_kb(path, every: int, monkeypatch) -> int:
    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", every)
    with GraphStore(str(path)) as store:
        store._open()
        store._shared.trimmer.every = every
        assert sum(1 for _ in store.items()) == GRAPHS
        return mapped_rss_kb(str(path / "data.mdb"))


def test_a_full_scan_keeps_few_pages_mapped(big_store, monkeypatch):
    file_kb = os.path.getsize(big_store / "data.mdb") // 1024
    untrimmed = scan_rss_kb(big_store, 1 << 40, monkeypatch)
    trimmed = scan_rss_kb(big_store, 256 << 10, monkeypatch)
    # without trimming, the scan leaves (nearly) every value page resident
    assert untrimmed > file_kb // 2, (untrimmed, file_kb)
    assert trimmed < untrimmed // 3, (trimmed, untrimmed)


def test_trimming_loses_nothing(big_store, monkeypatch):
    monkeypatch.setattr(mapped_pages, "TRIM_BYTES", 4096)
    with GraphStore(str(big_store)) as store:
        store._open()
        store._shared.trimmer.every = 4096
        for i, (key, graph) in enumerate(store.items()):
            assert key == f"k{i:06d}"
            assert graph == synthetic_graph(i)
        assert store._shared.trimmer.trims >= 5


def test_a_long_write_keeps_few_pages_mapped(tmp_path):
    path = tmp_path / "grow.lmdb"
    with GraphStore(str(path), readonly=False) as store:
        store._open()
        store._shared.trimmer.every = 256 << 10
        for start in range(0, GRAPHS, 50):  # many small transactions, as a run commits them
            store.commit_images((f"k{i:06d}", synthetic_graph(i), None) for i in range(start, start + 50))
        file_kb = os.path.getsize(path / "data.mdb") // 1024
        resident = mapped_rss_kb(str(path / "data.mdb"))
        assert store._shared.trimmer.trims >= 1
        assert resident < file_kb // 2, (resident, file_kb)
        assert len(store) == GRAPHS and store["k000777"] == synthetic_graph(777)


def test_random_reads_are_counted(big_store):
    with GraphStore(str(big_store)) as store:
        store._open()
        store._shared.trimmer.every = 64 << 10
        for i in range(0, GRAPHS, 7):
            assert store[f"k{i:06d}"] == synthetic_graph(i)
        assert store._shared.trimmer.trims >= 1


def test_drop_is_harmless_without_a_mapping(tmp_path):
    assert mapped_pages.drop_mapped_pages(str(tmp_path / "none" / "data.mdb")) == 0
