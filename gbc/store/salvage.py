"""``salvage``: copy every graph that can still be read out of a damaged store.

A damaged page can kill the reading process (see ``gbc.store.treewalk``), so every read of the
damaged file happens in a forked child that streams its records to this process one at a time.
When a child dies, the records it sent are kept and the read goes on in a new child from the
next key: a lookup that crashed loses that key only; a scan that crashed resumes at the next
key known from another tree (status, graphs and provenance each list the keys, in separate
pages). This process never opens the damaged file itself; it writes the new store.

    report = salvage_store("damaged.lmdb", "rescued.lmdb")
    print(report.graphs_copied, report.graphs_lost)
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from gbc.store import treewalk
from gbc.store.codec import ValueCodec, ValueDecodeError
from gbc.store.lmdb_env import StoreError
from gbc.store.lmdb_store import GraphStore, StatusRecord

#: Keys looked up per child (and written to the new store per transaction).
LOOKUP_CHUNK = 2000
#: Keys named in the report (all are counted).
MAX_KEYS_LISTED = 50
#: Sub-databases whose keys name images.
_KEYED = (b"status", b"graphs", b"provenance")


@dataclass
class SalvageReport:
    graphs_copied: int = 0
    failed_copied: int = 0  # images recorded as failed (no graph), copied as such
    graphs_lost: int = 0  # graphs the damaged store records that could not be read
    lost_keys: List[str] = field(default_factory=list)  # the first MAX_KEYS_LISTED known by name
    crashes: int = 0  # child processes killed by the damage
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Child:
    """Runs ``fn(*args, fd=...)`` in a forked child; iterating yields the records it sends.

    After iteration ``outcome`` is ``"ok"``, or says how the child failed (signal or error).
    """

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args
        self.outcome = "not run"

    def __iter__(self) -> Iterator[Tuple[bytes, Optional[bytes]]]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 3
            try:
                os.close(r)
                _quiet_child()
                self.fn(*self.args, fd=w)
                code = 0
            except BaseException as exc:  # reported through the stream, never raised here
                try:
                    treewalk.write_record(w, b"", f"{type(exc).__name__}: {exc}".encode(), treewalk.TAG_ERROR)
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        ended, error = False, None
        try:
            with os.fdopen(r, "rb") as stream:
                for tag, key, value in treewalk.read_records(stream):
                    if tag == treewalk.TAG_END:
                        ended = True
                    elif tag == treewalk.TAG_ERROR:
                        error = (value or b"").decode("utf-8", "replace")
                    else:
                        yield key, value
        finally:
            _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            try:
                name = signal.Signals(os.WTERMSIG(status)).name
            except ValueError:
                name = f"signal {os.WTERMSIG(status)}"
            self.outcome = f"crashed ({name})"
        elif error is not None or not ended:
            self.outcome = f"failed ({error or 'no end of stream'})"
        else:
            self.outcome = "ok"


def _quiet_child() -> None:
    """LMDB's assertion messages and core dumps of children killed by the damage are noise:
    the parent reports the damage itself."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _scan_all(src: str, dbname: bytes, probes: List[bytes], report: SalvageReport,
              keys_only: bool = False) -> Tuple[Dict[bytes, Optional[bytes]], bool]:
    """Every record of ``dbname`` that can be read, resuming after a crash at a known key
    (``probes``, sorted) past what was read. Returns the records and whether the scan reached
    the end. Probes that die at once are skipped in growing steps (1, 2, 4, ...), so a tree
    that is unreadable throughout costs a few children, not one per key."""
    records: Dict[bytes, Optional[bytes]] = {}
    start: Optional[bytes] = None
    step = 1
    while True:
        child = _Child(treewalk.scan, src, dbname, start, keys_only)
        last = None
        for key, value in child:
            records[key] = value
            last = key
        if child.outcome == "ok":
            return records, True
        report.crashes += child.outcome.startswith("crashed")
        if last is not None:
            floor, step = last, 1
        else:  # died before its first record: jump further each time
            floor, step = start, step * 2
        i = bisect.bisect_right(probes, floor) + (step - 1 if last is None else 0) if floor is not None else 0
        while i < len(probes) and probes[i] in records:
            i += 1
        if i >= len(probes):
            return records, False
        start = probes[i]


def _lookup(src: str, dbname: bytes, keys: List[bytes], report: SalvageReport,
            exact: bool) -> Tuple[Dict[bytes, Optional[bytes]], Set[bytes]]:
    """The value of each key in ``dbname`` (None: absent) and the keys whose read killed a child.

    ``exact``: after a crash the next child starts at the very next key, so exactly the keys
    whose pages are damaged are lost. Otherwise keys are skipped in growing steps while
    children die at once (a value we can do without, such as provenance)."""
    values: Dict[bytes, Optional[bytes]] = {}
    lost: Set[bytes] = set()
    index, step = 0, 1
    while index < len(keys):
        child = _Child(treewalk.lookup, src, [dbname], keys[index:])
        got = 0
        for key, value in child:
            values[key] = value
            got += 1
        index += got
        if child.outcome == "ok":
            break
        report.crashes += child.outcome.startswith("crashed")
        step = 1 if got or exact else step * 2
        lost.update(keys[index:index + step])
        index += step
    return values, lost


def salvage_store(src, dst, on_progress: Optional[Callable[[int, int], None]] = None) -> SalvageReport:
    """Copy every readable graph, status and provenance of the store ``src`` into a new store
    ``dst`` (which must not exist). Graphs the damaged store records but that cannot be read
    are counted in ``graphs_lost`` (named when their key is known)."""
    src_path, dst_path = Path(src), Path(dst)
    if not (src_path / "data.mdb").is_file():
        raise StoreError(f"{str(src_path)!r} is not a graph store: it has no data.mdb")
    if dst_path.exists():
        raise StoreError(f"{str(dst_path)!r} exists; salvage writes a new store (choose another -o)")
    src_s = os.fspath(src_path)
    report = SalvageReport()

    child = _Child(treewalk.list_sub_databases, src_s)
    listing = {key: value for key, value in child}
    if child.outcome != "ok":
        raise StoreError(f"nothing can be salvaged from {str(src_path)!r}: its main tree is unreadable ({child.outcome})")
    recorded_graphs = int(listing.get(b"graphs") or b"0")

    small: Dict[bytes, Dict[bytes, Optional[bytes]]] = {}
    for name in (b"meta", b"dicts"):
        if name in listing:
            small[name], complete = _scan_all(src_s, name, [], report)
            if not complete:
                report.notes.append(f"part of the {name.decode()} table was unreadable")

    keys: Set[bytes] = set()
    incomplete = []
    for name in _KEYED:
        if name in listing:
            records, complete = _scan_all(src_s, name, sorted(keys), report, keys_only=True)
            keys.update(records)
            if not complete:
                incomplete.append(name)
    for name in incomplete:  # again, now that the other trees have named more keys
        records, _ = _scan_all(src_s, name, sorted(keys), report, keys_only=True)
        keys.update(records)

    dictionaries = small.get(b"dicts", {})
    codec = ValueCodec(load_dictionary=lambda i: dictionaries.get(b"%08d" % i))
    store = GraphStore(dst_path, readonly=False)
    try:
        _copy_meta(store, small.get(b"meta", {}), src_path, report)
        ordered = sorted(keys)
        for first in range(0, len(ordered), LOOKUP_CHUNK):
            chunk = ordered[first:first + LOOKUP_CHUNK]
            found = {name: _lookup(src_s, name, chunk, report, exact=name == b"graphs") if name in listing else ({}, set())
                     for name in _KEYED}
            batch = [record for record in (_rebuild(key, found, codec, report) for key in chunk) if record is not None]
            if batch:
                store.write_records(batch)
            if on_progress is not None:
                on_progress(first + len(chunk), len(ordered))
    finally:
        store.close()
    # Graphs in pages no tree led to are known only by the count the main tree records.
    unnamed = recorded_graphs - report.graphs_copied - report.graphs_lost
    if unnamed > 0:
        report.graphs_lost += unnamed
        report.notes.append(f"{unnamed} lost graph(s) could not be named (their keys were in unreadable pages)")
    return report


def _copy_meta(store: GraphStore, entries: Dict[bytes, Optional[bytes]], src_path: Path, report: SalvageReport) -> None:
    meta = {}
    for k, v in entries.items():
        try:
            meta[k.decode()] = json.loads(v or b"")
        except (UnicodeDecodeError, ValueError):
            report.notes.append(f"meta entry {k!r} was unreadable")
    for own in ("format_version", "created", "created_iso"):  # the new store's own
        meta.pop(own, None)
    store.update_meta({**meta, "salvaged_from": {"path": str(src_path.resolve()), "time": time.time()}})


def _rebuild(key: bytes, found, codec: ValueCodec, report: SalvageReport):
    """The ``(key, graph, provenance, status)`` to write for ``key``, or None (counted)."""
    graphs, graph_crashed = found[b"graphs"]
    graph_v = graphs.get(key)
    record = _status(found[b"status"][0].get(key))
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError:  # a damaged key: its graph cannot be filed under its name
        name = None
    graph = None
    if graph_v is not None and name is not None:
        try:
            graph = codec.decode_graph(graph_v)
        except ValueDecodeError:
            graph = None
    if graph is None and (graph_v is not None or key in graph_crashed or (record is not None and record.status == "done")):
        report.graphs_lost += 1
        if len(report.lost_keys) < MAX_KEYS_LISTED:
            report.lost_keys.append(name if name is not None else repr(key))
        return None
    if name is None:
        return None
    provenance = None
    prov_v = found[b"provenance"][0].get(key)
    if prov_v is not None:
        try:
            provenance = codec.decode_json(prov_v)
        except ValueDecodeError:
            provenance = None
    if graph is not None:
        if record is None or record.status != "done":
            record = StatusRecord(status="done", time=time.time(), counts={
                "vertices": graph.n_vertices, "edges": graph.n_edges, "captions": graph.n_captions})
        report.graphs_copied += 1
    elif record is not None:
        report.failed_copied += 1
    else:
        return None  # only provenance survived: nothing to copy
    return name, graph, provenance, record


def _status(value: Optional[bytes]) -> Optional[StatusRecord]:
    if not value:
        return None
    try:
        return StatusRecord.model_validate_json(value[1:])
    except ValueError:
        return None
