"""The annotator actor of a distributed run: its shard, its slot, and what happens when it dies.

Files in the shard folder (``OUT/shards``)
------------------------------------------
``worker-NNN.lock``
    Slot ``NNN``, held with an exclusive ``flock`` for the life of the actor process. A
    process that dies releases it at once, so its restarted successor usually takes the
    same slot (and the same shard).
``worker-NNN.lmdb``
    The slot's store shard. Only the slot's owner writes it; it is created under a temporary
    name and renamed, so that nobody opens a half-created store.
``worker-NNN.inflight``
    The keys the owner is annotating right now (written before, removed after each engine
    run). Found while the slot's lock is free, it is the trace of a process that died: its
    keys are "orphans".
``deaths.log``
    One line ``key<TAB>shard`` per orphaned key: an image that was being annotated when a
    worker process died, and the shard where it may already have been committed.
``stopped.json``
    Written by the actor whose backend raised ``BackendUnavailable`` (``{"type", "message"}``):
    the run stops. Ray loses the original exception inside its wrappers, so the driver reads
    the reason here; the other actors find it before their next batch and stop too.

What a redone batch does
------------------------
Before each batch the actor adopts orphaned in-flight files (atomically: the first actor
to rename one owns it) and reads ``deaths.log``. Then, for the batch's keys:

- already committed in its own shard, or in a shard where the key was orphaned: skipped
  (commits are per image and atomic, so nothing is annotated twice);
- orphaned :data:`MAX_WORKER_DEATHS_PER_IMAGE` times or more: committed as ``failed``
  (``error_type="WorkerDied"``): an image that keeps killing its worker becomes data
  instead of restarting workers forever;
- orphaned fewer times: annotated alone, one engine run per image, so a poisonous image
  is told apart from the innocent images of its batch;
- the rest: annotated together by one engine run (cross-image batching).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import socket
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set, Tuple

__all__ = ["MAX_WORKER_DEATHS_PER_IMAGE", "STOP_FILE", "ShardAnnotator", "claim_slot", "read_stop", "write_stop"]

#: An image in flight when a worker process died this many times is committed as failed.
MAX_WORKER_DEATHS_PER_IMAGE = 2
#: File of orphaned keys, in the shard folder.
DEATHS_LOG = "deaths.log"
#: File telling why the run stopped (a backend became unavailable), in the shard folder.
STOP_FILE = "stopped.json"


def _has_store(path: Path) -> bool:
    return (path / "data.mdb").exists()


def claim_slot(folder: Path) -> Tuple[int, int]:
    """Take the lowest free ``worker-NNN`` slot of ``folder``: returns (slot, locked file descriptor)."""
    folder.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        fd = os.open(folder / f"worker-{slot:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        return slot, fd


def _slot_is_free(folder: Path, slot_name: str) -> bool:
    """True when no live process holds the lock of ``slot_name`` (e.g. ``worker-003``)."""
    fd = os.open(folder / f"{slot_name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's lock at once
    return True


def _process_is_gone(record: Dict[str, Any]) -> bool:
    """True when the in-flight record's writer ran on this host and no longer exists."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _append_lines(path: Path, lines: List[str]) -> None:
    if not lines:
        return
    # O_APPEND keeps concurrent writers' lines whole.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(line + "\n" for line in lines).encode("utf-8"))
    finally:
        os.close(fd)


def read_deaths(folder: Path) -> Tuple[Counter, Dict[str, Set[str]]]:
    """Worker deaths per key, and the shards where each orphaned key may have been committed."""
    counts: Counter = Counter()
    shards: Dict[str, Set[str]] = {}
    path = folder / DEATHS_LOG
    if not path.exists():
        return counts, shards
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, shard = line.partition("\t")
        if key:
            counts[key] += 1
            shards.setdefault(key, set()).add(shard)
    return counts, shards


def write_stop(folder: Path, run_id: str, exc: BaseException) -> None:
    """Record in ``folder`` that the run ``run_id`` stops because of ``exc`` (atomically replaced)."""
    tmp = folder / f"{STOP_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"run": run_id, "type": type(exc).__name__, "message": str(exc)}), encoding="utf-8")
    os.replace(tmp, folder / STOP_FILE)


def read_stop(folder: Path, run_id: str):
    """The ``BackendUnavailable`` recorded in ``folder`` for the run ``run_id``, or None.

    A record of another run (an actor of an earlier run that ended late) is ignored.
    """
    from gbc.annotators.backends.base import BackendUnavailable

    try:
        record = json.loads((folder / STOP_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None  # ValueError: not JSON, i.e. not written by write_stop (which replaces atomically)
    if record.get("run") != run_id:
        return None
    return BackendUnavailable(str(record.get("message", "")))


class ShardAnnotator:
    """Ray Data callable class: builds its backends once, annotates batches into its own shard.

    ``shards``: the shard folder; ``config`` names the backends (``mllm``, ``detector``) and
    the engine's settings. ``backend_modules`` are imported first so that user-registered
    backends exist here too.
    ``retry_failed``: a ``failed`` record found in a shard does not count as finished.
    ``run_id``: tells this run's ``stopped.json`` from a late one of an earlier run.
    """

    def __init__(self, shards: str, config, backend_modules: Sequence[str], retry_failed: bool = False,
                 run_id: str = ""):
        for module in backend_modules:
            importlib.import_module(module)
        from gbc.annotators.backends import create_detector, create_mllm
        from gbc.annotators.engine import RecursiveAnnotator

        self._folder = Path(shards)
        self._slot, self._lock_fd = claim_slot(self._folder)
        self._name = f"worker-{self._slot:03d}"
        self._path = self._folder / f"{self._name}.lmdb"
        self._inflight = self._folder / f"{self._name}.inflight"
        # Built once per actor and kept for its life (weights load on first use, once per actor).
        self._mllm = create_mllm(config.mllm.spec, dict(config.mllm.options or {}))
        self._detector = create_detector(config.detector.spec, dict(config.detector.options or {}))
        self._annotator = RecursiveAnnotator(config, self._mllm, self._detector)
        self._store = None  # opened on the first batch, in this process
        self._retry_failed = retry_failed
        self._run_id = run_id
        # A predecessor in this slot that died left its in-flight file: record it before any batch.
        self._adopt_orphans()

    # ------------------------------------------------------------------ store and journal
    def _own_store(self):
        if self._store is None:
            from gbc.store.lmdb_store import GraphStore

            if not _has_store(self._path):
                # Create the shard under another name and rename it: other processes (the
                # driver, actors redoing a dead worker's batch) never see a half-created store.
                tmp = self._path.with_name(f"{self._path.name}.creating-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                GraphStore(str(tmp), readonly=False).close()
                os.rename(tmp, self._path)
            self._store = GraphStore(str(self._path), readonly=False)
        return self._store

    def _adopt_orphans(self) -> None:
        """Turn the in-flight files of dead processes into ``deaths.log`` lines."""
        for path in sorted(self._folder.glob("worker-*.inflight")):
            slot_name = path.name[: -len(".inflight")]
            if slot_name != self._name and not _slot_is_free(self._folder, slot_name):
                # The slot is held: by the writer (busy), or by its restarted successor that has
                # not adopted the file yet; on this host the writer's pid tells them apart.
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except (FileNotFoundError, ValueError):
                    continue
                if not _process_is_gone(record):
                    continue
            claimed = path.with_name(f"{path.name}.{uuid.uuid4().hex}.adopted")
            try:
                os.rename(path, claimed)  # atomic: one adopter per file
            except FileNotFoundError:
                continue
            record = json.loads(claimed.read_text(encoding="utf-8"))
            _append_lines(self._folder / DEATHS_LOG, [f"{key}\t{record['shard']}" for key in record["keys"]])
            claimed.unlink()

    def _run(self, sources: List[Any], store) -> None:
        """One engine run, journaled so that a death during it is noticed by the next actor."""
        tmp = self._inflight.with_name(self._inflight.name + ".tmp")
        tmp.write_text(json.dumps({"shard": self._path.name, "keys": [s.key for s in sources],
                                   "host": socket.gethostname(), "pid": os.getpid()}),
                       encoding="utf-8")
        os.replace(tmp, self._inflight)
        try:
            self._annotator.run(sources, store)
        finally:
            # An exception (e.g. BackendUnavailable, which stops the run) is no worker death:
            # its keys must not count against the images. Only a dead process leaves the file.
            self._inflight.unlink(missing_ok=True)

    def _committed_in(self, keys: List[str], shard_names: Dict[str, Set[str]]) -> Dict[str, str]:
        """Status of orphaned keys already committed in the shards where they were in flight."""
        from gbc.store.lmdb_store import GraphStore

        by_shard: Dict[str, List[str]] = {}
        for key in keys:
            for name in shard_names.get(key, ()):
                if name != self._path.name:
                    by_shard.setdefault(name, []).append(key)
        found: Dict[str, str] = {}
        for name, wanted in sorted(by_shard.items()):
            path = self._folder / name
            if not _has_store(path):
                continue  # died before its first commit
            store = GraphStore(str(path), readonly=True)
            try:
                for key in wanted:
                    record = store.status(key)
                    if self._finished(record) and found.get(key) != "done":
                        found[key] = record.status
            finally:
                store.close()
        return found

    def _finished(self, record) -> bool:
        return record is not None and (record.status == "done" or not self._retry_failed)

    # ------------------------------------------------------------------ one batch
    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        from gbc.annotators.backends.base import BackendUnavailable

        stopped = read_stop(self._folder, self._run_id)
        if stopped is not None:
            raise stopped  # another actor's backend became unavailable: the run is over
        try:
            return self._annotate(batch)
        except BackendUnavailable as exc:
            write_stop(self._folder, self._run_id, exc)
            raise

    def _annotate(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        from gbc.annotators.images import ImageSource

        from gbc.distributed.ray_inputs import source_from_row

        keys = [str(k) for k in batch["key"]]
        paths = [str(p) for p in batch["path"]]
        # Rows read from tar shards and URL lists carry the image's bytes (or why there are none).
        rich = "data" in batch
        store = self._own_store()
        self._adopt_orphans()
        deaths, death_shards = read_deaths(self._folder)
        own = {k for k in keys if self._finished(store.status(k))}
        elsewhere = self._committed_in([k for k in keys if k not in own and deaths[k]], death_shards)
        fresh, suspects = [], []
        for i, (key, path) in enumerate(zip(keys, paths)):
            if key in own or key in elsewhere:
                continue
            if deaths[key] >= MAX_WORKER_DEATHS_PER_IMAGE:
                store.mark_failed(
                    key,
                    f"the worker process died {deaths[key]} times while this image was being annotated "
                    "(killed, out of memory, or a crash in native code)",
                    error_type="WorkerDied",
                    attempts=deaths[key],
                )
            elif deaths[key]:
                suspects.append(source_from_row(batch, i) if rich else ImageSource(key=key, path=path))
            else:
                fresh.append(source_from_row(batch, i) if rich else ImageSource(key=key, path=path))
        started_at = time.time()
        started = time.perf_counter()
        if fresh:
            self._run(fresh, store)
        for source in suspects:  # alone, so that a poisonous image takes no other image down with it
            self._run([source], store)
        elapsed = time.perf_counter() - started
        statuses = []
        for key in keys:
            record = store.status(key)
            statuses.append(record.status if record is not None else elsewhere.get(key, "missing"))
        return {
            "key": keys,
            "status": statuses,
            "shard": [self._path.name] * len(keys),
            # The engine's time for the whole batch, on its first row only (sums stay exact).
            "batch_seconds": [elapsed] + [0.0] * (len(keys) - 1),
            "batch_started": [started_at] * len(keys),
        }

    def __del__(self):
        store, self._store = getattr(self, "_store", None), None
        if store is not None:
            store.close()
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)
