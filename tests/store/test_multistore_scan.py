"""A MultiStore over many shards lists keys from status bytes and reads graphs in one walk per store."""

import pytest

import gbc
from gbc.schemas.synthetic import synthetic_graph
from gbc.store.lmdb_store import GraphStore
from gbc.store.shards import MultiStore, grouped_flags, resolved_flags


def make_shard(path, done=(), failed=(), offset=0):
    with GraphStore(str(path), readonly=False) as store:
        for key in done:
            store.commit_image(key, synthetic_graph(int(key[1:]) + offset))
        for key in failed:
            store.mark_failed(key, "boom")
    return path


@pytest.fixture
def shards(tmp_path):
    # interleaved keys, a key done in two shards with different graphs, one failed then done,
    # one failed everywhere
    return [
        make_shard(tmp_path / "s0.lmdb", done=["k00", "k03", "k06", "k09"], failed=["k01", "k10"]),
        make_shard(tmp_path / "s1.lmdb", done=["k01", "k04", "k07", "k09"], failed=["k10"], offset=100),
        make_shard(tmp_path / "s2.lmdb", done=["k02", "k05", "k08"], failed=["k11"]),
    ]


def expected(paths):
    """Resolution key by key from the decoded records: the first store holding it done wins."""
    out = {}
    stores = [GraphStore(str(p)) for p in paths]
    try:
        keys = sorted({k for s in stores for k, _ in s.statuses()})
        for key in keys:
            winner = next((s for s in stores if (r := s.status(key)) is not None and r.status == "done"), None)
            out[key] = None if winner is None else winner[key]
    finally:
        for s in stores:
            s.close()
    return out


def test_keys_and_items_resolve_as_the_records_say(shards):
    want = expected(shards)
    with MultiStore(shards) as view:
        assert list(view.keys()) == [k for k, g in want.items() if g is not None]
        assert list(view.keys(status="failed")) == [k for k, g in want.items() if g is None] == ["k10", "k11"]
        assert len(view) == view.count() == 10 and view.count("failed") == 2
        got = list(view.items())
        assert [k for k, _ in got] == list(view.keys())
        for key, graph in got:
            assert graph == want[key], key
        assert dict(got)["k09"] == synthetic_graph(9)  # the first shard's graph of a duplicated key
        assert dict(got)["k01"] == synthetic_graph(101)  # failed in the first shard, done in the second
        assert view["k09"] == synthetic_graph(9) and view["k01"] == synthetic_graph(101)  # lookups agree
        for missing in ("k10", "k11", "k99"):
            with pytest.raises(KeyError):
                view[missing]


def test_listing_keys_parses_no_record(shards, monkeypatch):
    def refuse(self, key, value):
        raise AssertionError("a status record was parsed")

    monkeypatch.setattr(GraphStore, "_decode_status", refuse)
    with MultiStore(shards) as view:
        assert len(view) == 10 and list(view.keys(status="failed")) == ["k10", "k11"]
        assert len(list(view.items())) == 10


def test_items_walk_each_store_instead_of_looking_up_each_key(shards, monkeypatch):
    def refuse(self, key):
        raise AssertionError(f"looked up {key!r}")

    with MultiStore(shards) as view:
        monkeypatch.setattr(GraphStore, "__getitem__", refuse)
        assert [k for k, _ in view.items()] == ["k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09"]


def test_a_graph_written_behind_the_walk_is_looked_up(tmp_path):
    from gbc.store.shards import _GraphWalk

    with GraphStore(str(tmp_path / "a.lmdb"), readonly=False) as store:
        store.commit_images([("k05", synthetic_graph(5)), ("k09", synthetic_graph(9))])
        walk = _GraphWalk(store)
        assert walk.graph(b"k05", "k05") == synthetic_graph(5)  # the walk has read k05 and k09
        store.commit_image("k07", synthetic_graph(7))
        assert walk.graph(b"k07", "k07") == synthetic_graph(7)
        assert walk.graph(b"k09", "k09") == synthetic_graph(9)
        store.delete("k11")
        with pytest.raises(KeyError):
            walk.graph(b"k11", "k11")


def test_grouped_flags_carry_every_record(shards):
    stores = [GraphStore(str(p)) for p in shards]
    try:
        labelled = [(i, s, str(p)) for i, (s, p) in enumerate(zip(stores, shards))]
        groups = {bytes(k).decode(): g for k, g in grouped_flags(labelled)}
        assert groups["k10"] == [(0, False), (1, False)]
        assert groups["k09"] == [(0, True), (1, True)]
        assert groups["k01"] == [(0, False), (1, True)]
        resolved = {bytes(k).decode(): i for k, i in resolved_flags(labelled)}
        assert resolved["k01"] == 1 and resolved["k10"] is None and resolved["k11"] is None
    finally:
        for s in stores:
            s.close()


def test_merge_plans_without_parsing_records(shards, tmp_path, monkeypatch):
    from gbc.distributed.merge import merge_stores

    plain = [p for p in shards if p.name != "s1.lmdb"]  # no duplicated key: nothing to rewrite
    parsed = []
    real = GraphStore._decode_status

    def counting(self, key, value):
        parsed.append(key)
        return real(self, key, value)

    monkeypatch.setattr(GraphStore, "_decode_status", counting)
    summary = merge_stores(plain, tmp_path / "out.lmdb")
    assert summary["done"] == 7 and summary["failed"] == 3 and parsed == []
    with gbc.open_store(str(tmp_path / "out.lmdb")) as out:
        assert out["k08"] == synthetic_graph(8) and out.status("k11").status == "failed"
