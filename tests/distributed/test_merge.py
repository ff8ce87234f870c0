"""Merging store shards (real LMDB stores, no Ray)."""
import pytest

import gbc
from gbc.distributed.merge import MergeConflictError, MultiStore, find_shards, merge_stores, open_multi_store
from gbc.schemas.synthetic import synthetic_graph


def make_store(path, done=(), failed=(), seed_offset=0):
    """done: keys -> graph seed (int) ; failed: keys -> reason."""
    with gbc.open_store(str(path), readonly=False) as store:
        for key, seed in dict(done).items():
            store.commit_image(key, synthetic_graph(seed + seed_offset), provenance={"shard": path.name, "key": key})
        for key, reason in dict(failed).items():
            store.mark_failed(key, reason, error_type="Boom", attempts=2, provenance={"shard": path.name})
    return path


def sg(seed):
    return synthetic_graph(seed).to_dict()


def read_all(path):
    with gbc.open_store(str(path)) as store:
        return ({k: store.status(k).status for k, _ in store.statuses()},
                {k: g.to_dict() for k, g in store.items()},
                store.meta)


def test_disjoint_shards_merge_everything_with_provenance(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"k1": 1, "k3": 3}, failed={"k5": "bad image"})
    b = make_store(tmp_path / "b.lmdb", done={"k2": 2, "k4": 4})
    summary = merge_stores([a, b], tmp_path / "out.lmdb")
    assert (summary["done"], summary["failed"], summary["copied"], summary["conflicts"]) == (4, 1, 5, 0)
    statuses, graphs, meta = read_all(tmp_path / "out.lmdb")
    assert statuses == {"k1": "done", "k2": "done", "k3": "done", "k4": "done", "k5": "failed"}
    assert graphs["k2"] == sg(2)
    assert meta["merged_from"] == [str(a), str(b)]
    with gbc.open_store(str(tmp_path / "out.lmdb")) as out:
        assert out.get_provenance("k4") == {"shard": "b.lmdb", "key": "k4"}
        record = out.status("k5")
        assert (record.reason, record.error_type, record.attempts) == ("bad image", "Boom", 2)


def test_done_beats_failed_in_either_order(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"x": 1}, failed={"y": "timeout"})
    b = make_store(tmp_path / "b.lmdb", done={"y": 2}, failed={"x": "oom"})
    summary = merge_stores([a, b], tmp_path / "out.lmdb")
    statuses, graphs, _ = read_all(tmp_path / "out.lmdb")
    assert statuses == {"x": "done", "y": "done"}
    assert graphs == {"x": sg(1), "y": sg(2)}
    assert summary["conflicts"] == 0


def test_identical_duplicates_are_fine_under_every_policy(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"same": 7, "a_only": 1})
    b = make_store(tmp_path / "b.lmdb", done={"same": 7})
    for policy in ("error", "keep-first", "keep-last", "skip-identical"):
        out = tmp_path / f"out-{policy}.lmdb"
        summary = merge_stores([a, b], out, on_conflict=policy)
        assert (summary["identical"], summary["conflicts"], summary["done"]) == (1, 0, 2)
        assert read_all(out)[1]["same"] == sg(7)


@pytest.mark.parametrize("policy,expected", [
    ("keep-first", {"c": 10, "u": 1, "v": 2}),
    ("keep-last", {"c": 20, "u": 1, "v": 2}),
    ("skip-identical", {"u": 1, "v": 2}),
])
def test_conflicts_resolved_as_told(tmp_path, policy, expected):
    a = make_store(tmp_path / "a.lmdb", done={"c": 10, "u": 1})
    b = make_store(tmp_path / "b.lmdb", done={"c": 20, "v": 2})
    summary = merge_stores([a, b], tmp_path / "out.lmdb", on_conflict=policy)
    assert summary["conflicts"] == 1 and summary["conflict_keys"] == ["c"]
    graphs = read_all(tmp_path / "out.lmdb")[1]
    assert graphs == {k: sg(s) for k, s in expected.items()}


def test_conflict_error_writes_nothing(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"c": 10, "u": 1})
    b = make_store(tmp_path / "b.lmdb", done={"c": 20})
    with pytest.raises(MergeConflictError, match="1 image.*'c'.*--on-conflict"):
        merge_stores([a, b], tmp_path / "out.lmdb")
    assert not (tmp_path / "out.lmdb").exists()


def test_existing_output_counts_as_first_source(tmp_path):
    out = make_store(tmp_path / "out.lmdb", done={"old": 1, "c": 10}, failed={"retry": "flaky"})
    s = make_store(tmp_path / "s.lmdb", done={"retry": 3, "c": 11, "new": 4})
    with pytest.raises(MergeConflictError):
        merge_stores([s], out)
    summary = merge_stores([s], out, on_conflict="keep-first")
    statuses, graphs, _ = read_all(out)
    assert statuses == {"old": "done", "c": "done", "retry": "done", "new": "done"}
    assert graphs["c"] == sg(10) and graphs["retry"] == sg(3)
    assert summary["copied"] == 2  # retry and new; c kept from the output


def test_failed_twice_keeps_the_last_unless_keep_first(tmp_path):
    a = make_store(tmp_path / "a.lmdb", failed={"f": "first"})
    b = make_store(tmp_path / "b.lmdb", failed={"f": "second"})
    merge_stores([a, b], tmp_path / "o1.lmdb")
    merge_stores([a, b], tmp_path / "o2.lmdb", on_conflict="keep-first")
    with gbc.open_store(str(tmp_path / "o1.lmdb")) as o1, gbc.open_store(str(tmp_path / "o2.lmdb")) as o2:
        assert o1.status("f").reason == "second" and o2.status("f").reason == "first"


@pytest.mark.parametrize("bad,fragment", [
    ("missing.lmdb", "not found"), ("plain_dir", "not a graph store"),
])
def test_bad_sources_are_refused(tmp_path, bad, fragment):
    (tmp_path / "plain_dir").mkdir()
    a = make_store(tmp_path / "a.lmdb", done={"x": 1})
    with pytest.raises((FileNotFoundError, ValueError), match=fragment):
        merge_stores([a, tmp_path / bad], tmp_path / "out.lmdb")


def test_bad_policy_and_self_merge(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"x": 1})
    with pytest.raises(ValueError, match="on_conflict"):
        merge_stores([a], tmp_path / "o.lmdb", on_conflict="newest")
    with pytest.raises(ValueError, match="also listed"):
        merge_stores([a], a)
    with pytest.raises(ValueError, match="twice"):
        merge_stores([a, a], tmp_path / "o.lmdb")


def test_remove_sources_after_merge(tmp_path):
    a = make_store(tmp_path / "a.lmdb", done={"x": 1})
    merge_stores([a], tmp_path / "o.lmdb", remove_sources=True)
    assert not a.exists() and read_all(tmp_path / "o.lmdb")[0] == {"x": "done"}


def test_multistore_reads_shards_as_one(tmp_path):
    out = make_store(tmp_path / "out.lmdb", done={"a": 1}, failed={"b": "oom"})
    (tmp_path / "out.lmdb" / "shards").mkdir()
    make_store(tmp_path / "out.lmdb" / "shards" / "worker-000.lmdb", done={"b": 2, "c": 3})
    make_store(tmp_path / "out.lmdb" / "shards" / "worker-001.lmdb", done={"d": 4}, failed={"e": "bad"})
    assert [p.name for p in find_shards(out)] == ["worker-000.lmdb", "worker-001.lmdb"]
    with open_multi_store(out) as view:
        assert len(view) == 4 and view.count() == 4 and view.count("failed") == 1
        assert list(view.keys()) == ["a", "b", "c", "d"]
        assert list(view.keys(status="failed")) == ["e"]
        assert view["b"].to_dict() == sg(2) and view.status("b").status == "done"
        assert "d" in view and "e" not in view and "zz" not in view
        assert view.get("zz") is None
        with pytest.raises(KeyError):
            view["e"]
        assert dict(view.items())["c"].to_dict() == sg(3)
        assert view.get_provenance("d") == {"shard": "worker-001.lmdb", "key": "d"}
        assert len(view.meta["stores"]) == 3
        assert [k for k, _ in view.statuses()] == ["a", "b", "c", "d", "e"]


def test_multistore_on_folder_of_stores(tmp_path):
    make_store(tmp_path / "s0.lmdb", done={"a": 1})
    make_store(tmp_path / "s1.lmdb", done={"b": 2})
    with open_multi_store(tmp_path) as view:
        assert sorted(view) == ["a", "b"]
    with pytest.raises(FileNotFoundError):
        open_multi_store(tmp_path / "nothing")


def test_gbc_open_store_sees_unmerged_shards(tmp_path):
    out = make_store(tmp_path / "out.lmdb", done={"a": 1})
    with gbc.open_store(str(out)) as plain:
        assert type(plain).__name__ == "GraphStore"
    (out / "shards").mkdir()
    make_store(out / "shards" / "worker-000.lmdb", done={"b": 2})
    with gbc.open_store(str(out)) as view:
        assert isinstance(view, MultiStore) and sorted(view) == ["a", "b"]
    with gbc.open_store(str(out), readonly=False) as writable:  # writing always targets the output itself
        assert sorted(writable) == ["a"]
    make_store(tmp_path / "parts" / "p0.lmdb", done={"x": 1})
    with gbc.open_store(str(tmp_path / "parts")) as view:
        assert list(view) == ["x"]


def test_merge_property_done_anywhere_is_done(tmp_path_factory):
    """Random spreads of keys over 3 shards: the result is done iff some shard has it done."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    records = st.dictionaries(st.sampled_from([f"k{i}" for i in range(12)]),
                              st.lists(st.sampled_from(["done", "failed", None]), min_size=3, max_size=3), max_size=8)

    @given(records)
    @settings(max_examples=6, deadline=None)
    def check(spread):
        root = tmp_path_factory.mktemp("prop")
        shards = []
        for s in range(3):
            done = {k: int(k[1:]) for k, states in spread.items() if states[s] == "done"}
            failed = {k: f"shard {s}" for k, states in spread.items() if states[s] == "failed"}
            shards.append(make_store(root / f"s{s}.lmdb", done=done, failed=failed))
        merge_stores(shards, root / "out.lmdb")  # same seed per key: duplicates are identical
        got = read_all(root / "out.lmdb")[0]
        expected = {k: ("done" if "done" in states else "failed") for k, states in spread.items() if any(states)}
        assert got == expected

    check()


def test_output_record_kept_whole_when_it_wins(tmp_path):
    out = tmp_path / "out.lmdb"
    with gbc.open_store(str(out), readonly=False) as store:
        store.mark_failed("f", "old failure")  # no provenance
        store.commit_image("d", synthetic_graph(1))  # no provenance
    s = make_store(tmp_path / "s.lmdb", failed={"f": "new failure", "d": "oom"})
    stages = []
    summary = merge_stores([s], out, on_conflict="keep-first", progress=lambda stage, n: stages.append((stage, n)))
    with gbc.open_store(str(out)) as store:
        assert store.status("f").reason == "old failure" and store.get_provenance("f") is None
        assert store.status("d").status == "done" and store.get_provenance("d") is None
        assert store["d"].to_dict() == sg(1)
    assert (summary["duplicates"], summary["copied"]) == (2, 0)
    assert ("plan", 2) in stages and any(stage == "copy" for stage, _ in stages)


@pytest.mark.parametrize("legacy", [False, True])
def test_imported_graphs_are_merged_as_done(tmp_path, legacy):
    a = tmp_path / "a.lmdb"
    with gbc.open_store(str(a), readonly=False) as store:
        store.put_many((f"k{i:04d}", synthetic_graph(i)) for i in range(300))
    if legacy:  # a store written before put_many recorded statuses: graphs only
        import lmdb

        env = lmdb.open(str(a), max_dbs=16)
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"status", txn=txn), delete=False)
            txn.delete(b"statuses_complete", db=env.open_db(b"meta", txn=txn))  # such stores lack it
        env.close()
    with gbc.open_store(str(a), readonly=False) as store:
        for i in range(0, 300, 100):
            store.commit_image(f"k{i:04d}", synthetic_graph(i))
    summary = merge_stores([a], tmp_path / "o.lmdb")
    with gbc.open_store(str(tmp_path / "o.lmdb")) as out:
        assert len(out) == 300 and out.count("done") == 300
        assert [k for k, r in out.statuses() if r.origin != "imported"] == ["k0000", "k0100", "k0200"]
    assert summary["keys"] == 300 and summary["done"] == 300


def test_merge_reads_its_sources_with_readahead_and_writes_without(tmp_path, monkeypatch):
    import lmdb

    from gbc.store import lmdb_env

    a = make_store(tmp_path / "a.lmdb", done={"k1": 1})
    b = make_store(tmp_path / "b.lmdb", done={"k2": 2})
    opened = {}
    real_open = lmdb.open

    def recording_open(path, **kwargs):
        opened.setdefault((str(path), kwargs["readonly"]), kwargs["readahead"])
        return real_open(path, **kwargs)

    monkeypatch.setattr(lmdb, "open", recording_open)
    merge_stores([a, b], tmp_path / "out.lmdb")
    # sources are walked whole, in order: the kernel reads ahead of each page it brings in
    assert opened[(str(a.resolve()), True)] and opened[(str(b.resolve()), True)]
    # the output is written, and later read at random: one page per miss
    assert opened[(str((tmp_path / "out.lmdb").resolve()), False)] is False
    assert not lmdb_env.REGISTRY  # every environment was released
    statuses, graphs, _ = read_all(tmp_path / "out.lmdb")
    assert graphs == {"k1": sg(1), "k2": sg(2)}
    # a store opened on its own keeps the default: no readahead (random lookups of big stores)
    with gbc.open_store(str(a)) as store:
        assert store._shared.env.flags()["readahead"] is False
