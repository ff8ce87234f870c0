"""What the viewer shows: a store (or several store shards read as one), or a graph file.

A store is paged straight from LMDB with cursors (``GraphStore.key_page``), so the first page of a
store of millions opens at once and no key listing is ever held in memory. A graph file has no
random access: its graphs are read through the viewer's catalog (``gbc.view.catalog``), which holds
each graph's record.
"""

from __future__ import annotations

import heapq
import json
import os
from itertools import groupby
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from gbc.schemas.graph import GbcGraph
from gbc.store.files import detect_format
from gbc.store.reader import Entry
from gbc.store.shards import find_shards, is_store


#: ``(key, status record or None, graph or None)`` rows in key order, for building the catalog.
Record = Tuple[str, Optional[Any], Optional[GbcGraph]]


def describe_source(path: os.PathLike) -> Tuple[str, List[Path]]:
    """``("store", [store paths])`` or ``("file", [path])`` for ``path``; a clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or store: {path}")
    if path.is_dir():
        stores = ([path] if is_store(path) else []) + find_shards(path)
        if not stores:
            raise FileNotFoundError(f"{path} is neither a graph store nor a folder of store shards")
        return "store", stores
    detect_format(path)  # raises GraphFormatError (a ValueError) for an unknown format
    return "file", [path]


def open_source(kind: str, paths: Sequence[os.PathLike]):
    """A ``StoreSource`` or ``FileSource`` (as named by ``describe_source``)."""
    if kind == "store":
        return StoreSource(paths)
    return FileSource(paths[0])


class StoreSource:
    """One store, or several read as one (done beats failed; of two graphs the first store's)."""

    kind = "store"

    def __init__(self, paths: Sequence[os.PathLike]):
        from gbc.store.lmdb_store import GraphStore

        self.paths = [Path(p) for p in paths]
        self.stores = []
        try:
            for p in self.paths:
                self.stores.append(GraphStore(p))
        except BaseException:
            self.close()
            raise

    @property
    def root(self) -> Path:
        return self.paths[0]

    # ------------------------------------------------------------------ paging
    def page(self, after: Optional[str] = None, before: Optional[str] = None, limit: int = 50) -> List[Entry]:
        """``limit`` images in key order after ``after`` (or before ``before``): graphs and failed images."""
        keys = set()
        for store in self.stores:
            for table in ("graphs", "status"):
                keys.update(store.key_page(table, after=after, before=before, limit=limit))
        ordered = sorted(keys)
        chosen = ordered[-limit:] if before is not None else ordered[:limit]
        return [self.entry(k) for k in chosen]

    def neighbours(self, key: str) -> Tuple[Optional[str], Optional[str]]:
        """The keys just before and just after ``key`` (None at either end)."""
        prev = self.page(before=key, limit=1)
        nxt = self.page(after=key, limit=1)
        return (prev[0].key if prev else None), (nxt[0].key if nxt else None)

    # ------------------------------------------------------------------ lookups
    def entry(self, key: str) -> Optional[Entry]:
        failed = None
        has_graph = False
        for store in self.stores:
            record = store.status(key)
            if record is not None and record.status == "done":
                return Entry(key, "done")
            if record is not None:
                failed = record
            elif key in store:
                has_graph = True
        if has_graph:
            return Entry(key, "done")  # stored without a status record (e.g. converted from a file)
        if failed is not None:
            return Entry(key, "failed", failed.reason, failed.error_type)
        return None

    def graph(self, key: str) -> Optional[GbcGraph]:
        for store in self.stores:
            graph = store.get(key)
            if graph is not None:
                return graph
        return None

    def provenance(self, key: str) -> Optional[Dict[str, Any]]:
        for store in self.stores:
            if key in store:
                return store.get_provenance(key)
        for store in self.stores:
            found = store.get_provenance(key)
            if found is not None:
                return found
        return None

    def count(self) -> int:
        """Number of graphs (failed images are counted by the catalog)."""
        return sum(len(s) for s in self.stores)

    def version(self) -> str:
        """Changes whenever any of the stores does (their last write transaction ids)."""
        return json.dumps([[str(p), s.last_txn] for p, s in zip(self.paths, self.stores)])

    def meta(self) -> Dict[str, Any]:
        return dict(self.stores[0].meta or {})

    def remembered_image_roots(self) -> List[Path]:
        """Image folders the stores recorded when they were annotated (``image_roots`` in their meta)."""
        roots: List[Path] = []
        for store in self.stores:
            for value in (store.meta or {}).get("image_roots") or []:
                if isinstance(value, str) and Path(value) not in roots:
                    roots.append(Path(value))
        return roots

    # ------------------------------------------------------------------ the whole store
    def records(self) -> Iterator[Record]:
        """Every image once, in key order, as ``(key, status record, graph)``."""
        streams = [self._store_records(i, s) for i, s in enumerate(self.stores)]
        merged = heapq.merge(*streams, key=lambda r: (r[0], r[1]))
        for key, group in groupby(merged, key=lambda r: r[0]):
            rows = list(group)
            with_graph = next((r for r in rows if r[3] is not None), None)
            if with_graph is not None:
                yield key, with_graph[2], with_graph[3]
            else:
                yield key, rows[-1][2], None

    @staticmethod
    def _store_records(index: int, store) -> Iterator[Tuple[str, int, Any, Optional[GbcGraph]]]:
        """``(key, store index, status, graph)`` of one store: its graphs merged with its status table."""
        statuses = store.statuses()
        pending = next(statuses, None)
        for key, graph in store.items():
            while pending is not None and pending[0] < key:
                if pending[1].status == "failed":
                    yield pending[0], index, pending[1], None
                pending = next(statuses, None)
            record = None
            if pending is not None and pending[0] == key:
                record = pending[1]
                pending = next(statuses, None)
            yield key, index, record, graph
        while pending is not None:
            if pending[1].status == "failed":
                yield pending[0], index, pending[1], None
            pending = next(statuses, None)

    def close(self) -> None:
        stores, self.stores = self.stores, []
        for store in stores:
            store.close()


def unique_key(key: str, position: int) -> str:
    """The name of a graph whose key an earlier graph of the same file already has."""
    return f"{key} #{position}"


class FileSource:
    """A ``.jsonl`` / ``.json`` / ``.parquet`` file: graphs are read once, into the catalog."""

    kind = "file"

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self.paths = [self.path]

    @property
    def root(self) -> Path:
        return self.path

    def version(self) -> str:
        st = self.path.stat()
        return json.dumps([str(self.path.resolve()), st.st_size, st.st_mtime_ns])

    def meta(self) -> Dict[str, Any]:
        return {}

    def remembered_image_roots(self) -> List[Path]:
        return []

    def records(self) -> Iterator[Record]:
        """Graphs in file order, named by their image key (``#<position>`` when they have none).
        Keys may repeat in a file: the catalog renames the later ones (``unique_key``)."""
        from gbc.store.reader import GraphFile

        for key, graph in GraphFile(self.path, validate=False).items():
            yield key, None, graph

    def close(self) -> None:
        pass
