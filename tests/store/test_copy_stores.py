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
