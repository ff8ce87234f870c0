import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import lmdb
import pytest

import gbc
from gbc.schemas import GbcGraph
from gbc.store import GraphStore, StatusRecord, StoreCorruptError, StoreError
from gbc.store import lmdb_store
from gbc.store.codec import IN_EDGES_EXPLICIT, IN_EDGES_SORTED_BY_SOURCE, IN_EDGES_SOURCE_ORDER, ValueCodec, in_edges_mode

from store_helpers import gbc10m_graph


@pytest.fixture()
def store_path(tmp_path):
    return tmp_path / "run.lmdb"


def _fill(path, n, start=0, **kwargs):
    with GraphStore(path, readonly=False, **kwargs) as store:
        store.put_many((f"img/{i:05d}.jpg", gbc10m_graph(i)) for i in range(start, start + n))


def test_mapping_api(store_path):
    graphs = {f"img/{i:05d}.jpg": gbc10m_graph(i) for i in (3, 1, 2)}
    with GraphStore(store_path, readonly=False) as store:
        for k, g in graphs.items():
            store.put(k, g)
    with gbc.open_store(store_path) as store:
        assert isinstance(store, GraphStore)
        assert len(store) == 3
        assert list(store) == sorted(graphs) == list(store.keys())
        assert "img/00001.jpg" in store and "nope" not in store and 5 not in store
        assert store["img/00002.jpg"].to_dict() == graphs["img/00002.jpg"].to_dict()
        assert [g.to_dict() for g in store.values()] == [graphs[k].to_dict() for k in sorted(graphs)]
        assert [(k, g.to_dict()) for k, g in store.items()] == [(k, graphs[k].to_dict()) for k in sorted(graphs)]
        assert store.get("nope") is None and store.get("nope", 7) == 7
        with pytest.raises(KeyError):
            store["nope"]
        with pytest.raises(StoreError, match="open read-only"):
            store.put("x", graphs["img/00001.jpg"])


def test_reference_graphs_are_lossless_and_compact(store_path, reference_records):
    with GraphStore(store_path, readonly=False) as store:
        for rec in reference_records:
            store.put(rec["img_path"], GbcGraph.from_dict(rec))
        raw = dict(store.raw_items())
    with GraphStore(store_path) as store:
        for rec in reference_records:
            assert store[rec["img_path"]].to_dict() == rec
    sizes = [len(v) for v in raw.values()]
    json_sizes = [len(json.dumps(r)) for r in reference_records]
    assert sum(sizes) * 4 < sum(json_sizes)


def test_in_edges_are_rebuilt_or_kept(reference_records):
    codec = ValueCodec()
    modes = set()
    for rec in reference_records:
        g = GbcGraph.from_dict(rec)
        modes.add(in_edges_mode(g))
        back = codec.decode_graph(codec.encode_graph(g))
        assert back.to_dict() == rec
        # rebuilt in-edges are the out-edge objects themselves: validated once
        for v in back.vertices:
            for e in v.in_edges:
                assert any(e is o for o in back.vertex(e.source).out_edges)
    assert modes == {IN_EDGES_SOURCE_ORDER, IN_EDGES_SORTED_BY_SOURCE}

    # in-edges in an order no rule explains, an edge only on one side, unset in-edges
    rec = json.loads(json.dumps(reference_records[0]))
    horse = next(v for v in rec["vertices"] if v["vertex_id"] == "horse")
    horse["in_edges"].reverse()
    odd_order = GbcGraph.from_dict(rec)
    rec2 = json.loads(json.dumps(rec))
    rec2["vertices"][1]["in_edges"].append({"source": "sky", "text": "x", "target": rec2["vertices"][1]["vertex_id"]})
    one_sided = GbcGraph.from_dict(rec2)
    unset = GbcGraph.from_dict({"vertices": [{"vertex_id": "", "bbox": {"left": 0, "top": 0, "right": 1, "bottom": 1}, "label": "image"}]})
    span_rec = json.loads(json.dumps(reference_records[1]))
    span_rec["vertices"][0]["out_edges"][0]["span"] = {"desc_index": 0, "start": 1, "end": 4}
    with_span = GbcGraph.from_dict(span_rec)  # the in-edge copy has no span: sides differ
    for g in (odd_order, one_sided, unset, with_span):
        assert in_edges_mode(g) == IN_EDGES_EXPLICIT
        assert codec.decode_graph(codec.encode_graph(g)).to_dict() == g.to_dict()


def test_new_store_is_created_with_its_meta_in_one_transaction(store_path):
    with GraphStore(store_path, readonly=False) as store:
        assert store.last_txn == 1  # sub-databases and first meta together, nothing written after
        first = store.meta
    with GraphStore(store_path, readonly=False) as store:  # opening again writes nothing
        assert store.last_txn == 1 and store.meta == first


def _two_vertex_record(out_extra, in_extra):
    box = {"left": 0.0, "top": 0.0, "right": 1.0, "bottom": 1.0}
    edge = {"source": "", "text": "dog", "target": "dog"}
    return {"vertices": [
        {"vertex_id": "", "bbox": box, "label": "image", "in_edges": [], "out_edges": [{**edge, **out_extra}]},
        {"vertex_id": "dog", "bbox": box, "label": "entity", "in_edges": [{**edge, **in_extra}], "out_edges": []},
    ]}


@pytest.mark.parametrize("out_extra, in_extra", [
    ({"w": 1}, {"w": 1.0}), ({"w": True}, {"w": 1}), ({"w": 0.0}, {"w": False}),
    ({"w": [1, {"x": 2}]}, {"w": [1, {"x": 2.0}]}), ({"w": 1, "v": 2}, {"v": 2, "w": 1}),
])
def test_in_edges_whose_extra_fields_are_written_differently_are_kept(out_extra, in_extra):
    # Python's == holds these extra fields equal (1 == 1.0 == True, dicts in any key order), but
    # they are written differently: rebuilding the in-edge from the out-edge would change the graph.
    g = GbcGraph.from_dict(_two_vertex_record(out_extra, in_extra))
    assert in_edges_mode(g) == IN_EDGES_EXPLICIT
    codec = ValueCodec()
    assert codec.decode_graph(codec.encode_graph(g)).to_json() == g.to_json()


def test_in_edges_with_the_same_extra_fields_are_rebuilt():
    g = GbcGraph.from_dict(_two_vertex_record({"w": [1, {"x": 2.5}], "v": None}, {"w": [1, {"x": 2.5}], "v": None}))
    assert in_edges_mode(g) == IN_EDGES_SOURCE_ORDER
    codec = ValueCodec()
    back = codec.decode_graph(codec.encode_graph(g))
    assert back.to_json() == g.to_json() and back.vertices[1].in_edges[0] is back.vertices[0].out_edges[0]
    # extra fields that are not JSON at all are never taken as alike
    odd = GbcGraph.from_dict(_two_vertex_record({}, {}))
    marker = object()
    odd.vertices[0].out_edges[0].__pydantic_extra__["w"] = marker
    odd.vertices[1].in_edges[0].__pydantic_extra__["w"] = marker
    assert in_edges_mode(odd) == IN_EDGES_EXPLICIT


def test_status_provenance_and_meta(store_path):
    g = gbc10m_graph(0)
    with GraphStore(store_path, readonly=False) as store:
        created = store.meta
        assert created["format_version"] == lmdb_store.STORE_FORMAT_VERSION
        assert created["gbc_version"] == gbc.__version__ and created["created"] <= time.time()
        store.commit_image("a.jpg", g, provenance={"answers": ["x" * 5000], "backend": "replay:x"})
        store.commit_image("b.jpg", g)
        store.mark_failed("c.jpg", "image cannot be decoded", error_type="UnidentifiedImageError", attempts=3,
                          provenance={"error": "boom"})
        store.put("d.jpg", g)  # an imported graph: done, origin "imported"
        store.update_meta({"run": {"backend": "replay:x", "images": 4}})
    with GraphStore(store_path) as store:
        assert len(store) == 3 and store.count() == 3
        assert store.count("done") == 3 and store.count("failed") == 1
        assert list(store.keys(status="done")) == ["a.jpg", "b.jpg", "d.jpg"]
        assert list(store.keys(status="failed")) == ["c.jpg"]
        done = store.status("a.jpg")
        assert isinstance(done, StatusRecord) and done.status == "done" and done.reason is None
        assert done.counts == {"vertices": g.n_vertices, "edges": g.n_edges, "captions": g.n_captions}
        failed = store.status("c.jpg")
        assert (failed.status, failed.reason, failed.error_type, failed.attempts) == (
            "failed", "image cannot be decoded", "UnidentifiedImageError", 3)
        imported = store.status("d.jpg")
        assert (imported.status, imported.origin, imported.attempts) == ("done", "imported", 0)
        assert done.origin is None and store.status("e.jpg") is None
        assert [k for k, _ in store.statuses()] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
        assert store.get_provenance("a.jpg") == {"answers": ["x" * 5000], "backend": "replay:x"}
        assert store.get_provenance("c.jpg") == {"error": "boom"} and store.get_provenance("b.jpg") is None
        assert store.meta["run"] == {"backend": "replay:x", "images": 4}
        assert store.meta["created"] == created["created"]
        with pytest.raises(StoreError, match="unknown status"):
            store.count("pending")


def test_mark_failed_removes_a_graph_and_delete_removes_everything(store_path):
    with GraphStore(store_path, readonly=False) as store:
        store.commit_image("a.jpg", gbc10m_graph(0), provenance={"p": 1})
        store.mark_failed("a.jpg", "retry failed")
        assert "a.jpg" not in store and store.status("a.jpg").status == "failed"
        assert store.delete("a.jpg") is True
        assert store.status("a.jpg") is None and store.get_provenance("a.jpg") is None
        assert store.delete("a.jpg") is False


def test_commit_image_is_one_transaction(store_path):
    with GraphStore(store_path, readonly=False) as store:
        with pytest.raises(TypeError):
            # the provenance cannot be encoded after the graph was put: nothing may remain
            store.commit_image("a.jpg", gbc10m_graph(0), provenance={"bad": object()})
        assert "a.jpg" not in store and store.status("a.jpg") is None
        with pytest.raises(TypeError):
            store.commit_image("b.jpg", {"vertices": []})


_KILLED_WRITER = """
import sys
from gbc.store import GraphStore
sys.path.insert(0, sys.argv[2])
from store_helpers import gbc10m_graph
g = [gbc10m_graph(i) for i in range(5)]
with GraphStore(sys.argv[1], readonly=False, map_size=64 * 1024) as store:
    i = 0
    while True:
        store.commit_image(f"{i:06d}.jpg", g[i % 5], provenance={"i": i})
        if i == 20:
            print("ready", flush=True)
        i += 1
"""


def test_a_killed_writer_leaves_only_complete_commits(store_path):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(store_path), os.path.dirname(__file__)],
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with GraphStore(store_path) as store:
        keys = list(store.keys())
        assert len(keys) > 20
        assert keys == list(store.keys(status="done"))
        assert keys == [f"{i:06d}.jpg" for i in range(len(keys))]
        for k in keys[-3:]:
            assert store.get_provenance(k) == {"i": int(k[:6])}
            assert store[k].to_dict() == gbc10m_graph(int(k[:6]) % 5).to_dict()


def test_map_grows_from_a_tiny_size(store_path):
    _fill(store_path, 300, map_size=32 * 1024, dict_train_samples=50)
    with GraphStore(store_path) as store:
        assert len(store) == 300
        assert store["img/00299.jpg"].to_dict() == gbc10m_graph(299).to_dict()
    env = lmdb.open(str(store_path), readonly=True, max_dbs=8)
    try:
        assert env.info()["map_size"] > 32 * 1024
    finally:
        env.close()


def test_dictionary_is_trained_once_and_reused(store_path):
    with GraphStore(store_path, readonly=False, dict_train_samples=40) as store:
        for i in range(10):
            store.put(f"img/{i:05d}.jpg", gbc10m_graph(i))
        store.put("img/00003.jpg", gbc10m_graph(103))  # replaced before training
        store.delete("img/00002.jpg")  # deleted before training: must stay deleted
        before = dict(store.raw_items())
        assert all(v[1] == 1 for v in before.values())  # plain zstd until the dictionary exists
        store.put_many((f"img/{i:05d}.jpg", gbc10m_graph(i)) for i in range(10, 60))
    with GraphStore(store_path, readonly=False, dict_train_samples=40) as store:  # a second session
        store.put_many((f"img/{i:05d}.jpg", gbc10m_graph(i)) for i in range(60, 90))
    with GraphStore(store_path) as store:
        raw = dict(store.raw_items())
        expected = {f"img/{i:05d}.jpg": gbc10m_graph(i).to_dict() for i in range(90) if i != 2}
        expected["img/00003.jpg"] = gbc10m_graph(103).to_dict()
        assert {k: g.to_dict() for k, g in store.items()} == expected
    # every value, the early ones re-compressed too, uses the one dictionary (id 1)
    assert {(v[1], v[7:11]) for v in raw.values()} == {(2, (1).to_bytes(4, "little"))}  # after the 3-byte header and the CRC-32
    assert len(raw["img/00000.jpg"]) < len(before["img/00000.jpg"])


def _reader(path, queue, stop_after):
    # runs in a spawned process while the parent writes
    from gbc.store import GraphStore

    seen = []
    with GraphStore(path) as store:
        deadline = time.time() + 30
        while time.time() < deadline:
            n = len(store)
            seen.append(n)
            keys = list(store.keys())
            if keys:
                store[keys[-1]]  # decodes while the writer grows the map
            if n >= stop_after:
                break
            time.sleep(0.01)
    queue.put(seen)


def test_a_reader_in_another_process_follows_a_growing_store(store_path):
    _fill(store_path, 5, map_size=64 * 1024)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_reader, args=(str(store_path), queue, 405))
    proc.start()
    time.sleep(1.5)  # let the reader start and read the small store
    with GraphStore(store_path, readonly=False, dict_train_samples=100) as store:
        for start in range(5, 400, 20):
            store.put_many((f"img/{i:05d}.jpg", gbc10m_graph(i)) for i in range(start, start + 20))
    seen = queue.get(timeout=60)
    proc.join(30)
    assert proc.exitcode == 0
    assert seen[-1] == 405 and seen == sorted(seen)
    assert len(set(seen)) > 3  # it read while the store grew


def _child_reads_and_writes(store, writable, queue):
    try:
        queue.put((len(store), store["img/00001.jpg"].img_path))
        writable.commit_image("child.jpg", gbc10m_graph(7))
        queue.put("ok")
    except BaseException as exc:  # report to the parent instead of dying silently
        queue.put(repr(exc))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_stores_survive_fork(tmp_path):
    ro_path, rw_path = tmp_path / "ro.lmdb", tmp_path / "rw.lmdb"
    _fill(ro_path, 3)
    reader = GraphStore(ro_path)
    writer = GraphStore(rw_path, readonly=False)
    assert len(reader) == 3
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads_and_writes, args=(reader, writer, queue))
    proc.start()
    assert queue.get(timeout=30) == (3, "images/00000001.jpg")
    assert queue.get(timeout=30) == "ok"
    proc.join(30)
    assert proc.exitcode == 0
    # the parent's environments still work after the child exited, and the parent's read
    # transactions still hold a reader slot (a child closing an inherited environment
    # would have released it)
    assert len(reader) == 3 and reader["img/00002.jpg"].img_path == "images/00000002.jpg"
    slots = reader._read(lambda txn: reader._shared.env.readers())
    assert str(os.getpid()) in slots
    assert writer.status("child.jpg").status == "done"
    writer.commit_image("parent.jpg", gbc10m_graph(8))
    assert sorted(writer.keys()) == ["child.jpg", "parent.jpg"]
    reader.close()
    writer.close()


def test_one_environment_per_process(store_path):
    _fill(store_path, 2)
    a = GraphStore(store_path)
    b = gbc.open_store(store_path)
    assert a._shared is b._shared
    a.close()
    assert len(b) == 2  # still open for the other user
    with pytest.raises(StoreError, match="already open read-only"):
        GraphStore(store_path, readonly=False)
    b.close()
    with GraphStore(store_path, readonly=False) as w, GraphStore(store_path) as r:
        w.put("z.jpg", gbc10m_graph(3))
        assert "z.jpg" in r
    with pytest.raises(StoreError, match="closed"):
        len(r)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no graph store at .*: the directory does not exist"),
        (lambda p: p.mkdir() or p, "is not a graph store: it has no data.mdb"),
        (lambda p: p.write_text("x") and p, "is not a graph store"),
    ],
)
def test_not_a_store(store_path, make, message):
    with pytest.raises(StoreError, match=message):
        GraphStore(make(store_path))


def test_key_limits(store_path):
    with GraphStore(store_path, readonly=False) as store:
        with pytest.raises(StoreError, match="limited to 511 bytes"):
            store.put("k" * 600, gbc10m_graph(0))
        with pytest.raises(StoreError, match="must not be empty"):
            store.put("", gbc10m_graph(0))


# ---------------------------------------------------------------------------- damage
def test_garbage_data_file(store_path):
    store_path.mkdir()
    (store_path / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreCorruptError, match="not an LMDB file"):
        GraphStore(store_path)


def test_truncated_data_file(store_path):
    _fill(store_path, 40)
    data = store_path / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreCorruptError, match="data.mdb has .* bytes but its pages need"):
        GraphStore(store_path)


def _raw_env(path):
    env = lmdb.open(str(path), max_dbs=8)
    return env, env.open_db(b"graphs"), env.open_db(b"meta")


def test_a_garbage_value_is_reported_not_returned(store_path):
    _fill(store_path, 3)
    env, graphs, _ = _raw_env(store_path)
    with env.begin(write=True) as txn:
        txn.put(b"img/00001.jpg", b"\x01\x01\x00garbage", db=graphs)
        txn.put(b"img/00002.jpg", b"\x07\x01\x00future", db=graphs)
        txn.put(b"short.jpg", b"\x01", db=graphs)
    env.close()
    with GraphStore(store_path) as store:
        assert store["img/00000.jpg"].img_path == "images/00000000.jpg"
        with pytest.raises(StoreCorruptError, match=r"graph 'img/00001.jpg' .* cannot be decoded: compressed bytes are damaged"):
            store["img/00001.jpg"]
        with pytest.raises(StoreCorruptError, match="value format version 7 is not supported"):
            store["img/00002.jpg"]
        with pytest.raises(StoreCorruptError, match="too short"):
            store["short.jpg"]
        with pytest.raises(StoreCorruptError):
            list(store.values())


def test_flipped_bytes_inside_data_file_are_detected(store_path):
    _fill(store_path, 5, dict_train_samples=0)
    with GraphStore(store_path) as store:
        value = dict(store.raw_items())["img/00003.jpg"]
    data = store_path / "data.mdb"
    blob = bytearray(data.read_bytes())
    at = blob.find(value)
    assert at > 0
    middle = at + len(value) // 2
    blob[middle:middle + 8] = bytes(b ^ 0x5A for b in blob[middle:middle + 8])
    data.write_bytes(bytes(blob))
    with GraphStore(store_path) as store:
        assert store["img/00002.jpg"].img_path == "images/00000002.jpg"
        with pytest.raises(StoreCorruptError, match="'img/00003.jpg'"):
            store["img/00003.jpg"]


def test_unknown_store_version_and_missing_meta(store_path):
    _fill(store_path, 1)
    env, _, meta = _raw_env(store_path)
    with env.begin(write=True) as txn:
        txn.put(b"format_version", b"99", db=meta)
    env.close()
    with pytest.raises(StoreCorruptError, match="format version 99; this gbc reads versions 1..1"):
        GraphStore(store_path)
    env, _, meta = _raw_env(store_path)
    with env.begin(write=True) as txn:
        txn.drop(meta, delete=False)
    env.close()
    with pytest.raises(StoreCorruptError, match="meta has no format_version"):
        GraphStore(store_path)


def test_missing_sub_database(store_path):
    env = lmdb.open(str(store_path), max_dbs=8)
    env.open_db(b"graphs")
    env.close()
    with pytest.raises(StoreCorruptError, match="sub-database 'status' is missing"):
        GraphStore(store_path)


def test_iteration_survives_writes_between_chunks(store_path, monkeypatch):
    monkeypatch.setattr(lmdb_store, "ITER_CHUNK", 4)
    _fill(store_path, 10)
    with GraphStore(store_path, readonly=False) as store:
        seen = []
        for i, key in enumerate(store.keys()):
            seen.append(key)
            if i == 5:
                store.put("img/00007a.jpg", gbc10m_graph(99))  # lands after the cursor
                store.delete("img/00001.jpg")  # already passed
        assert seen == [f"img/{i:05d}.jpg" for i in range(8)] + ["img/00007a.jpg", "img/00008.jpg", "img/00009.jpg"]


def test_copy_from_merges_shards(tmp_path):
    shards = []
    for s in range(2):
        path = tmp_path / f"shard{s}.lmdb"
        with GraphStore(path, readonly=False, dict_train_samples=20) as shard:
            for i in range(s, 60, 2):
                shard.commit_image(f"img/{i:05d}.jpg", gbc10m_graph(i), provenance={"shard": s})
            shard.mark_failed(f"bad{s}.jpg", "unreadable")
        shards.append(path)
    merged_path = tmp_path / "merged.lmdb"
    with GraphStore(merged_path, readonly=False, dict_train_samples=25) as merged:
        merged.commit_image("img/00000.jpg", gbc10m_graph(500))  # kept with overwrite=False
        for path in shards:
            with GraphStore(path) as shard:
                merged.copy_from(shard, overwrite=False, batch_size=7)
        merged.sync()
    with GraphStore(merged_path) as merged:
        assert len(merged) == 60 and merged.count("done") == 60 and merged.count("failed") == 2
        assert merged["img/00000.jpg"].to_dict() == gbc10m_graph(500).to_dict()
        assert merged["img/00031.jpg"].to_dict() == gbc10m_graph(31).to_dict()
        assert merged.get_provenance("img/00031.jpg") == {"shard": 1}
        assert merged.status("bad0.jpg").reason == "unreadable"
        raw = dict(merged.raw_items())
    assert {v[1] for v in raw.values()} == {2}  # all use the merged store's own dictionary


def test_threads_share_one_store(store_path):
    import threading

    graphs = [gbc10m_graph(i) for i in range(4)]
    seen, errors = [], []
    with GraphStore(store_path, readonly=False) as store:

        def write(offset):
            try:
                for i in range(offset, 80, 2):
                    store.commit_image(f"{i:03d}.jpg", graphs[i % 4])
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        def read():
            try:
                while len(seen) < 200 and (not seen or seen[-1] < 80):
                    seen.append(len(store))
                    for key in list(store.keys())[-2:]:
                        store[key]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)] + [threading.Thread(target=read)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(store) == 80 and store.count("done") == 80
        assert seen == sorted(seen)


@pytest.mark.parametrize("batch_size", [3, 10])  # the repeated key in two batches / in one batch
def test_put_many_batches_keep_order_duplicates_and_provenance(store_path, batch_size):
    with GraphStore(store_path, readonly=False, dict_train_samples=0) as store:
        store.put("m.jpg", gbc10m_graph(0))
        # a batch mixing keys before and after the existing one, a repeated key and provenance
        items = [("z.jpg", gbc10m_graph(1)), ("a.jpg", gbc10m_graph(2), {"p": 2}), ("q.jpg", gbc10m_graph(3)),
                 ("a.jpg", gbc10m_graph(4), {"p": 4}), ("m.jpg", gbc10m_graph(5))]
        assert store.put_many(items, batch_size=batch_size) == 5

        def failing():
            yield "b.jpg", gbc10m_graph(6)
            yield "c.jpg", gbc10m_graph(7)  # completes the first batch of 2: committed
            yield "d.jpg", gbc10m_graph(8)
            yield "e.jpg", "not a graph"

        with pytest.raises(TypeError, match="expected a GbcGraph"):
            store.put_many(failing(), batch_size=2)
    with GraphStore(store_path) as store:
        want = {"a.jpg": 4, "b.jpg": 6, "c.jpg": 7, "m.jpg": 5, "q.jpg": 3, "z.jpg": 1}
        assert list(store.keys()) == sorted(want)
        for key, seed in want.items():
            assert store[key].to_dict() == gbc10m_graph(seed).to_dict()
        assert store.get_provenance("a.jpg") == {"p": 4} and store.get_provenance("z.jpg") is None


def test_values_written_with_empty_in_edge_lists_still_decode(reference_records):
    # Earlier values held "in_edges": [] for every vertex; values now leave the field out.
    codec = ValueCodec()
    for g in [gbc10m_graph(0)] + [GbcGraph.from_dict(r) for r in reference_records]:
        payload, mode = codec.graph_payload(g)
        assert mode != IN_EDGES_EXPLICIT and b'"in_edges"' not in payload
        older = g.model_dump_json(exclude_unset=True, exclude={"vertices": {"__all__": {"in_edges": {"__all__"}}}})
        assert older.count('"in_edges":[]') == g.n_vertices
        for value in (codec.pack(payload, mode), codec.pack(older.encode(), mode)):
            back = codec.decode_graph(value)
            assert back.to_dict() == g.to_dict() and back == g
            assert all("in_edges" in v.model_fields_set for v in back.vertices)


def test_the_one_pass_in_edge_check_agrees_with_the_full_comparison(reference_records):
    import random

    from gbc.store.codec import _in_edges_mode_slowly

    rng = random.Random(3)
    seen = set()
    for i in range(300):
        g = GbcGraph.from_dict(reference_records[i % len(reference_records)]) if i % 2 else gbc10m_graph(i)
        v = rng.choice(g.vertices)
        change = i % 6
        if change == 1 and len(v.in_edges) > 1:
            v.in_edges.reverse()
        elif change == 2 and v.in_edges:
            v.in_edges[0] = v.in_edges[0].model_copy(update={"text": v.in_edges[0].text + "!"})
        elif change == 3:
            v.in_edges = v.in_edges[1:]
        elif change == 4 and v.in_edges:
            v.in_edges[-1].__pydantic_extra__["w"] = 1
        elif change == 5:  # sorted by source id
            for u in g.vertices:
                u.in_edges = sorted(u.in_edges, key=lambda e: e.source)
        mode = in_edges_mode(g)
        seen.add(mode)
        assert mode == _in_edges_mode_slowly(g, g.vertices), (i, change)
    assert seen == {IN_EDGES_EXPLICIT, IN_EDGES_SOURCE_ORDER, IN_EDGES_SORTED_BY_SOURCE}
