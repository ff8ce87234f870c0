"""The annotator actor's journal, without Ray: the class is plain Python and runs in-process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from gbc.annotators.config import AnnotateConfig
from gbc.distributed.worker import DEATHS_LOG, ShardAnnotator, claim_slot, read_deaths
from gbc.store.lmdb_store import GraphStore
from gbc.schemas.synthetic import synthetic_graph

SCRIPTED = AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png", "x.png"]):
        Image.new("RGB", (64, 48), (40 * i, 200 - 30 * i, 90)).save(folder / name)
    return folder


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def actor(shards):
    return ShardAnnotator(str(shards), SCRIPTED, [])


def batch(folder, names):
    return {"key": np.array(names, dtype=object), "path": np.array([str(folder / n) for n in names], dtype=object)}


def test_slots_are_exclusive_and_freed_with_their_descriptor(tmp_path):
    first, fd0 = claim_slot(tmp_path)
    second, fd1 = claim_slot(tmp_path)
    assert (first, second) == (0, 1)
    os.close(fd0)
    again, fd2 = claim_slot(tmp_path)
    assert again == 0
    os.close(fd1), os.close(fd2)


def test_a_dead_workers_batch_is_adopted_and_redone_without_duplicates(tmp_path, images):
    shards = tmp_path / "shards"
    shards.mkdir()
    # Worker 5 committed a.png, then died while annotating a, b (its in-flight file remains).
    with GraphStore(str(shards / "worker-005.lmdb"), readonly=False) as dead:
        dead.commit_image("a.png", synthetic_graph(1))
    record = {"shard": "worker-005.lmdb", "keys": ["a.png", "b.png"], "host": socket.gethostname(), "pid": dead_pid()}
    (shards / "worker-005.inflight").write_text(json.dumps(record))

    worker = actor(shards)
    assert not (shards / "worker-005.inflight").exists()
    deaths, where = read_deaths(shards)
    assert deaths == {"a.png": 1, "b.png": 1} and where["a.png"] == {"worker-005.lmdb"}

    out = worker(batch(images, ["a.png", "b.png", "c.png"]))
    assert list(out["status"]) == ["done", "done", "done"]
    assert sum(out["batch_seconds"]) > 0
    del worker
    with GraphStore(str(shards / "worker-000.lmdb")) as own:
        assert sorted(own.keys()) == ["b.png", "c.png"]  # a.png stays where it was committed
    assert not list(shards.glob("*.inflight"))


def test_a_busy_workers_inflight_file_is_left_alone(tmp_path, images):
    shards = tmp_path / "shards"
    shards.mkdir()
    record = {"shard": "worker-007.lmdb", "keys": ["c.png"], "host": socket.gethostname(), "pid": os.getpid()}
    (shards / "worker-007.inflight").write_text(json.dumps(record))
    import fcntl

    fd = os.open(shards / "worker-007.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # slot 7 is held, and its file names a live process
    worker = actor(shards)
    assert (shards / "worker-007.inflight").exists() and not (shards / DEATHS_LOG).exists()
    os.close(fd)  # the holder dies: the next batch adopts its file
    worker(batch(images, ["a.png"]))
    assert not (shards / "worker-007.inflight").exists()
    assert read_deaths(shards)[0] == {"c.png": 1}


def test_an_image_orphaned_twice_is_committed_as_failed(tmp_path, images):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / DEATHS_LOG).write_text("x.png\tworker-003.lmdb\nx.png\tworker-001.lmdb\n")
    worker = actor(shards)
    out = worker(batch(images, ["x.png", "c.png"]))
    assert list(out["status"]) == ["failed", "done"]
    with GraphStore(str(worker._path)) as own:
        record = own.status("x.png")
    assert (record.error_type, record.attempts) == ("WorkerDied", 2)
    assert "died 2 times" in record.reason


def test_retry_failed_redoes_failed_records_in_the_own_shard(tmp_path, images):
    shards = tmp_path / "shards"
    shards.mkdir()
    with GraphStore(str(shards / "worker-000.lmdb"), readonly=False) as store:
        store.mark_failed("c.png", "flaky")
    plain = actor(shards)
    assert list(plain(batch(images, ["c.png"]))["status"]) == ["failed"]
    del plain
    retrying = ShardAnnotator(str(shards), SCRIPTED, [], retry_failed=True)
    assert list(retrying(batch(images, ["c.png"]))["status"]) == ["done"]
