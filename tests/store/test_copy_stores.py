"""copy_stores: several stores copied at once in key order, as copying them one after another."""

import random
import shutil

import pytest

from gbc.store import GraphStore, StoreCorruptError
from gbc.store.copying import copy_stores

from store_helpers import gbc10m_graph


def _fill(path, rng, keys, shard):
    with GraphStore(path, readonly=False, dict_train_samples=20) as store:
        for key in keys:
            if rng.random() < 0.2:
                store.mark_failed(key, f"failed in shard {shard}", provenance={"shard": shard, "failed": True})
            else:
                store.commit_image(key, gbc10m_graph(rng.randrange(200)), provenance={"shard": shard})
    return path


def _contents(path):
    with GraphStore(path) as store:
        graphs = {k: g.to_dict() for k, g in store.items()}
        statuses = dict(store.statuses())
        provenance = {k: store.get_provenance(k) for k in statuses}
    return graphs, statuses, provenance


def _seed_target(path):
    with GraphStore(path, readonly=False, dict_train_samples=20) as store:
        store.commit_image("img/00003.jpg", gbc10m_graph(999), provenance={"shard": "target"})
        store.mark_failed("img/00004.jpg", "already failed here")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target_has_keys", [False, True])
def test_same_result_as_copying_one_store_after_another(tmp_path, seed, target_has_keys):
    rng = random.Random(seed)
    keys = [f"img/{i:05d}.jpg" for i in range(120)]
    shards = []
    for s in range(4):  # overlapping key sets, each in its own random order
        mine = [k for k in keys if rng.random() < 0.45]
        rng.shuffle(mine)
        shards.append(_fill(tmp_path / f"s{s}.lmdb", rng, mine, s))
    one_by_one, together = tmp_path / "one_by_one.lmdb", tmp_path / "together.lmdb"
    if target_has_keys:  # the same records in both targets
        _seed_target(one_by_one)
        shutil.copytree(one_by_one, together)
    opened = [GraphStore(p) for p in shards]
    try:
        with GraphStore(one_by_one, readonly=False, dict_train_samples=20) as target:
            expected_count = sum(target.copy_from(store, overwrite=False, batch_size=9) for store in opened)
        batches = []
        with GraphStore(together, readonly=False, dict_train_samples=20) as target:
            count = copy_stores(target, opened, batch_size=9, progress=batches.append)
    finally:
        for store in opened:
            store.close()
    assert count == expected_count == sum(batches) and len(batches) > 3
    expected = _contents(one_by_one)
    assert _contents(together) == expected
    assert len(expected[0]) > 50 and any(s.status == "failed" for s in expected[1].values())
    if target_has_keys:
        assert expected[0]["img/00003.jpg"] == gbc10m_graph(999).to_dict()


def test_written_in_key_order_the_store_is_compact(tmp_path):
    # Copying shards one after another inserts each shard's keys between the previous ones
    # (half-full split pages); copying them together only appends.
    rng = random.Random(5)
    shards = []
    for s in range(8):
        keys = [f"img/{i:06d}.jpg" for i in range(s, 1600, 8)]
        with GraphStore(tmp_path / f"s{s}.lmdb", readonly=False, dict_train_samples=20) as store:
            store.put_many((k, gbc10m_graph(rng.randrange(50))) for k in keys)
        shards.append(tmp_path / f"s{s}.lmdb")
    opened = [GraphStore(p) for p in shards]
    try:
        with GraphStore(tmp_path / "seq.lmdb", readonly=False, dict_train_samples=20) as target:
            for store in opened:
                target.copy_from(store, overwrite=False)
        with GraphStore(tmp_path / "kway.lmdb", readonly=False, dict_train_samples=20) as target:
            copy_stores(target, opened)
    finally:
        for store in opened:
            store.close()
    sizes = {}
    for name in ("seq", "kway"):
        with GraphStore(tmp_path / f"{name}.lmdb") as store:
            assert len(store) == 1600
            sizes[name] = (tmp_path / f"{name}.lmdb" / "data.mdb").stat().st_size
    assert sizes["kway"] < 0.8 * sizes["seq"], sizes


def test_a_damaged_value_stops_the_copy_naming_key_and_store(tmp_path):
    paths = []
    for s in range(2):
        with GraphStore(tmp_path / f"s{s}.lmdb", readonly=False, dict_train_samples=5) as store:
            store.put_many((f"img/{i:03d}.jpg", gbc10m_graph(i)) for i in range(s, 20, 2))
            raw = bytearray(store._get_raw(b"graphs", b"img/007.jpg") or b"") if s == 1 else None
            if raw:
                raw[len(raw) // 2] ^= 0xFF
                store._write(lambda txn: txn.put(b"img/007.jpg", bytes(raw), db=store._db(b"graphs")))
        paths.append(tmp_path / f"s{s}.lmdb")
    opened = [GraphStore(p) for p in paths]
    try:
        with GraphStore(tmp_path / "out.lmdb", readonly=False) as target:
            with pytest.raises(StoreCorruptError, match=r"img/007\.jpg.*s1\.lmdb"):
                copy_stores(target, opened, batch_size=4)
    finally:
        for store in opened:
            store.close()


def _legacy(path):
    """A store as written before every graph had a status record: some graphs without one."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        status = env.open_db(b"status", txn=txn)
        for i in range(0, 20, 3):
            txn.delete(f"img/{i:03d}.jpg".encode(), db=status)
        txn.delete(b"statuses_complete", db=env.open_db(b"meta", txn=txn))
    env.close()
    return path


def test_graphs_of_an_older_store_get_their_done_record(tmp_path):
    with GraphStore(tmp_path / "old.lmdb", readonly=False, dict_train_samples=5) as store:
        store.put_many((f"img/{i:03d}.jpg", gbc10m_graph(i)) for i in range(20))
    old = _legacy(tmp_path / "old.lmdb")
    with GraphStore(old) as store:
        assert not store.statuses_complete
        before = {k: r.status for k, r in store.statuses()}
        with GraphStore(tmp_path / "new.lmdb", readonly=False) as target:
            assert target.statuses_complete
            assert copy_stores(target, [store]) == 20
    assert len(before) == 20 and set(before.values()) == {"done"}
    with GraphStore(tmp_path / "new.lmdb") as store:
        raw_statuses = dict(store._scan(b"status"))
        assert len(raw_statuses) == 20  # every graph now has its record
        assert {k: r.status for k, r in store.statuses()} == before
        assert list(store.keys()) == sorted(before) and store.count("done") == 20
        assert store.status("img/003.jpg").origin == "imported"


def test_a_key_is_copied_whole_from_the_first_store_that_holds_it(tmp_path):
    with GraphStore(tmp_path / "a.lmdb", readonly=False) as a:
        a.mark_failed("k1", "failed in a")  # status only
        a.commit_image("k2", gbc10m_graph(2), provenance={"from": "a"})
    with GraphStore(tmp_path / "b.lmdb", readonly=False) as b:
        b.commit_image("k1", gbc10m_graph(1), provenance={"from": "b"})
        b.commit_image("k2", gbc10m_graph(3))  # no provenance
        b.commit_image("k3", gbc10m_graph(4), provenance={"from": "b"})
    with GraphStore(tmp_path / "out.lmdb", readonly=False) as out:
        out.commit_image("k3", gbc10m_graph(5))  # kept whole: no provenance added
        with GraphStore(tmp_path / "a.lmdb") as a, GraphStore(tmp_path / "b.lmdb") as b:
            assert copy_stores(out, [a, b]) == 1
    with GraphStore(tmp_path / "out.lmdb") as out:
        assert out.status("k1").status == "failed" and "k1" not in out and out.get_provenance("k1") is None
        assert out["k2"].to_dict() == gbc10m_graph(2).to_dict() and out.get_provenance("k2") == {"from": "a"}
        assert out["k3"].to_dict() == gbc10m_graph(5).to_dict() and out.get_provenance("k3") is None
        assert list(out.keys()) == ["k2", "k3"]


def test_overwrite_replaces_a_record_whole(tmp_path):
    with GraphStore(tmp_path / "src.lmdb", readonly=False) as src:
        src.commit_image("k", gbc10m_graph(1))  # no provenance
    with GraphStore(tmp_path / "out.lmdb", readonly=False) as out:
        out.commit_image("k", gbc10m_graph(2), provenance={"old": True})
        with GraphStore(tmp_path / "src.lmdb") as src:
            out.copy_from(src)  # overwrite=True
        assert out["k"].to_dict() == gbc10m_graph(1).to_dict() and out.get_provenance("k") is None
