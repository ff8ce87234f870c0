"""Several stores read as one: shard discovery and the read-only ``MultiStore`` view.

A distributed run leaves one store per worker under ``OUT/shards/*.lmdb`` until they are
merged; a folder of ``*.lmdb`` stores is read the same way. :func:`open_store` opens a path as
whatever it holds: a plain store, or a view over a store and its shards.
"""

from __future__ import annotations

import heapq
import os
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from gbc.schemas.views import wants_json
from gbc.store.lmdb_base import decode_key
from gbc.store.lmdb_env import StoreCorruptError

__all__ = ["MultiStore", "find_shards", "group_statuses", "is_store", "open_multi_store", "open_store", "status_name"]

PathLike = Union[str, "os.PathLike[str]"]


def find_shards(path: PathLike) -> List[Path]:
    """The shard stores of ``path``: ``path/shards/*.lmdb`` (a run's unmerged shards) or,
    for a folder that is not itself a store, the ``*.lmdb`` stores directly inside it."""
    path = Path(path)
    found = sorted(p for p in (path / "shards").glob("*.lmdb") if p.is_dir()) if (path / "shards").is_dir() else []
    if not found and path.is_dir() and not is_store(path):
        found = sorted(p for p in path.glob("*.lmdb") if p.is_dir())
    return found


def is_store(path: Path) -> bool:
    return (path / "data.mdb").exists()


def status_name(record) -> str:
    return getattr(record, "status", record)


def _sorted_statuses(store, label: str) -> Iterator[Tuple[str, Any]]:
    """``store.statuses()`` checked to come in key order (LMDB order), which the k-way merge needs."""
    previous = None
    for key, record in store.statuses():
        if previous is not None and key <= previous:
            raise RuntimeError(f"{label}: statuses are not in increasing key order ({previous!r} then {key!r})")
        previous = key
        yield key, record


def _sorted_flags(store, index: int, label: str) -> Iterator[Tuple[bytes, int, bool]]:
    """``(key bytes, index, is done)`` of ``store.status_flags()``, checked to be in key order."""
    previous = None
    for key, done in store.status_flags():
        if previous is not None and key <= previous:
            raise RuntimeError(f"{label}: statuses are not in increasing key order ({previous!r} then {key!r})")
        previous = key
        yield key, index, done


def grouped_flags(stores: Sequence[Tuple[int, Any, str]]) -> Iterator[Tuple[bytes, List[Tuple[int, bool]]]]:
    """Every key of every store in key order (UTF-8 bytes, the stores' own order) with the
    ``(store index, is done)`` of each store that has a record of it, read from each record's
    status byte: nothing is decoded (``group_statuses`` gives the records themselves)."""
    merged = heapq.merge(*(_sorted_flags(store, index, label) for index, store, label in stores))
    group_key, group = None, []
    for key, index, done in merged:  # tuples: by key, then by store index
        if key != group_key:
            if group:
                yield group_key, group
            group_key, group = key, []
        group.append((index, done))
    if group:
        yield group_key, group


def resolved_flags(stores: Sequence[Tuple[int, Any, str]]) -> Iterator[Tuple[bytes, Optional[int]]]:
    """``grouped_flags`` resolved as ``MultiStore`` resolves records: each key with the index
    of the first store that holds it ``done``, or None when every store holds it ``failed``."""
    for key, group in grouped_flags(stores):
        yield key, next((index for index, done in group if done), None)


def group_statuses(stores: Sequence[Tuple[int, Any, str]]) -> Iterator[Tuple[str, List[Tuple[int, Any]]]]:
    """All sources' records, grouped by key in key order: (key, [(source index, record), ...])."""
    def tagged(index, store, label):
        for key, record in _sorted_statuses(store, label):
            yield key, index, record

    streams = [tagged(index, store, label) for index, store, label in stores]
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))
    group_key, group = None, []
    for key, index, record in merged:
        if key != group_key and group:
            yield group_key, group
            group = []
        group_key = key
        group.append((index, record))
    if group:
        yield group_key, group


class _GraphWalk:
    """One store's graphs read in key order, decoded only when asked for (as read-only
    ``GraphView``s with ``view``)."""

    def __init__(self, store, view: Union[bool, str] = False):
        self.store = store
        self._decode = partial(store._decode_view, with_json=wants_json(view)) if view else store._decode_graph
        self._rows = (row for rows in store._scan_chunks(b"graphs") for row in rows)
        self._head: Optional[Tuple[bytes, bytes]] = None
        self._done = False

    def graph(self, raw: bytes, key: str):
        """The graph of ``raw`` (``key`` decoded), which sorts after every key asked before."""
        while not self._done and (self._head is None or self._head[0] < raw):
            self._head = next(self._rows, None)
            self._done = self._head is None
        if self._head is not None and self._head[0] == raw:
            return self._decode(key, self._head[1])
        # written after the walk passed it: looked up (KeyError if gone)
        return self._decode(key, self.store._graph_value(key))


def _open_plain(path: PathLike, readahead: bool = False):
    # The plain store: open_store would turn a store with shards into a view of them.
    from gbc.store.lmdb_store import GraphStore

    return GraphStore(os.fspath(path), readonly=True, readahead=readahead)


class MultiStore:
    """A read-only view of several stores as one (e.g. a run's unmerged shards).

    It reads like a ``GraphStore``: ``len``, ``in``, ``[key]``, ``get``, ``keys(status=None)``,
    ``items()``, ``status(key)``, ``statuses()``, ``get_provenance(key)``, ``meta``. Records
    of one key in several stores resolve as in :func:`merge_stores`: ``done`` beats
    ``failed``; of two ``done`` graphs the first store's is shown (``keep-first``); of two
    ``failed`` records the last. Iteration walks all stores in key order at once, so memory
    does not grow with the number of images.

    ``readahead``: the stores are opened for reading whole (see ``GraphStore``).

    >>> view = MultiStore(["out.lmdb", *find_shards("out.lmdb")])   # doctest: +SKIP
    >>> len(view), view.keys(status="failed")                         # doctest: +SKIP
    """

    readonly = True

    def __init__(self, paths: Iterable[PathLike], readahead: bool = False):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("MultiStore needs at least one store")
        self._stores = []
        try:
            for path in self.paths:
                if not is_store(path):
                    raise FileNotFoundError(f"graph store not found: {path}")
                self._stores.append(_open_plain(path, readahead))
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- lookups
    def _records(self, key: str) -> List[Tuple[int, Any]]:
        return [(i, r) for i, r in ((i, s.status(key)) for i, s in enumerate(self._stores)) if r is not None]

    @staticmethod
    def _resolve(records: List[Tuple[int, Any]]) -> Optional[Tuple[int, Any]]:
        if not records:
            return None
        for index, record in records:
            if status_name(record) == "done":
                return index, record
        return records[-1]

    def status(self, key: str):
        """The resolved status record of ``key``, or ``None`` when no store holds it."""
        found = self._resolve(self._records(key))
        return found[1] if found else None

    def _winner(self, key: str):
        # the first store holding it done wins (as in _resolve): the stores after it are not asked
        for store in self._stores:
            record = store.status(key)
            if record is not None and status_name(record) == "done":
                return store
        raise KeyError(key)

    def __getitem__(self, key: str):
        return self._winner(key)[key]

    def view(self, key: str):
        """A read-only ``GraphView`` of ``key``'s graph (see ``GraphStore.view``)."""
        return self._winner(key).view(key)

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return any(key in store for store in self._stores)

    def get_provenance(self, key: str):
        found = self._resolve(self._records(key))
        return self._stores[found[0]].get_provenance(key) if found else None

    # ----------------------------------------------------------------- iteration
    def statuses(self) -> Iterator[Tuple[str, Any]]:
        """(key, resolved record) for every key of every store, in key order."""
        for key, records in group_statuses(self._labelled()):
            yield key, self._resolve(records)[1]

    def keys(self, status: Optional[str] = None) -> Iterator[str]:
        """Keys with a graph (``status=None`` or ``"done"``) or with a ``"failed"`` record."""
        wanted = "done" if status is None else status
        if wanted not in ("done", "failed"):
            raise ValueError(f"status must be None, 'done' or 'failed'; got {status!r}")
        done = wanted == "done"
        # decided from each record's status byte: no record is parsed
        return (decode_key(key) for key, winner in resolved_flags(self._labelled()) if (winner is not None) == done)

    def _labelled(self) -> List[Tuple[int, Any, str]]:
        return [(i, store, str(path)) for i, (store, path) in enumerate(zip(self._stores, self.paths))]

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def items(self, on_damaged=None, view: Union[bool, str] = False) -> Iterator[Tuple[str, Any]]:
        """As ``GraphStore.items``: with ``on_damaged``, undecodable graphs are reported and
        skipped; with ``view``, graphs come as read-only ``GraphView``s."""
        # The graph comes from the store whose record won, read by walking each store's graphs
        # in key order beside the statuses (a lookup per key costs a transaction each).
        walks = [_GraphWalk(store, view) for store in self._stores]
        for raw, index in resolved_flags(self._labelled()):
            if index is not None:
                key = decode_key(raw)
                try:
                    graph = walks[index].graph(raw, key)
                except StoreCorruptError as exc:
                    if on_damaged is None:
                        raise
                    on_damaged(key, str(exc))
                    continue
                yield key, graph

    def values(self, view: Union[bool, str] = False) -> Iterator[Any]:
        return (graph for _, graph in self.items(view=view))

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def count(self, status: Optional[str] = None) -> int:
        """Number of graphs (``status=None``) or of images with that resolved status."""
        return sum(1 for _ in self.keys(status=status))

    @property
    def stores(self) -> List[Any]:
        """The open stores of the view, in the order of ``paths``."""
        return list(self._stores)

    @property
    def meta(self) -> Dict[str, Any]:
        """The first store's metadata, with the list of stores under ``"stores"``."""
        meta = dict(self._stores[0].meta or {})
        meta["stores"] = [str(p) for p in self.paths]
        return meta

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"MultiStore({[str(p) for p in self.paths]!r})"


def open_multi_store(path: PathLike, readahead: bool = False) -> "MultiStore":
    """Read a store together with its unmerged shards (``path/shards/*.lmdb``), or a folder of stores."""
    path = Path(path)
    stores = ([path] if is_store(path) else []) + find_shards(path)
    if not stores:
        raise FileNotFoundError(f"no graph store or shards at {path}")
    return MultiStore(stores, readahead=readahead)


def open_store(path: PathLike, readonly: bool = True, **kwargs):
    """Open an LMDB graph store; read-only by default (a mapping from image key to ``GbcGraph``).

    Read-only, a store with unmerged shards (``path/shards/*.lmdb``, left by a distributed
    run) or a folder of ``*.lmdb`` stores opens as one view of all of them (``MultiStore``).
    """
    if readonly and not kwargs and find_shards(path):
        return open_multi_store(path)
    from gbc.store.lmdb_store import GraphStore

    return GraphStore(path, readonly=readonly, **kwargs)
