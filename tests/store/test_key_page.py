"""Cursor paging over a store's keys (``GraphStore.key_page``) and its change marker (``last_txn``)."""

import pytest

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore


@pytest.fixture()
def store(tmp_path):
    with GraphStore(tmp_path / "s.lmdb", readonly=False) as s:
        for i in range(7):
            s.commit_image(f"k{i}", synthetic_graph(i))
        s.mark_failed("k35", "bad")
        yield s


def test_key_page_forward_and_backward(store):
    assert store.key_page(limit=3) == ["k0", "k1", "k2"]
    assert store.key_page(after="k2", limit=3) == ["k3", "k4", "k5"]
    assert store.key_page(after="k6", limit=3) == []
    assert store.key_page(after="k30", limit=2) == ["k4", "k5"]  # a key that is not there
    assert store.key_page(before="k3", limit=2) == ["k1", "k2"]
    assert store.key_page(before="k1", limit=5) == ["k0"]
    assert store.key_page(before="zzz", limit=2) == ["k5", "k6"]
    assert store.key_page(before="a", limit=2) == []
    assert store.key_page("status", after="k3", limit=2) == ["k35", "k4"]


def test_last_txn_moves_with_each_write(store):
    before = store.last_txn
    store.commit_image("k9", synthetic_graph(9))
    assert store.last_txn > before
