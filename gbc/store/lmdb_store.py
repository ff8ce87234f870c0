"""The LMDB graph store: graphs, per-image status, run metadata and provenance in one file.

One LMDB environment (a directory, by convention ``*.lmdb``) with named sub-databases:

- ``graphs``: image key -> compact graph value (``gbc.store.codec``)
- ``status``: image key -> ``StatusRecord`` (done | failed, reason, error type, attempts, ...);
  every key that holds a graph is ``done`` (origin ``imported`` when ``put``/``put_many`` stored
  it rather than an annotation run; a graph of an older store without a record reads the same)
- ``meta``: name -> JSON value (format version, creation time, gbc version, run metadata)
- ``provenance``: image key -> dict (raw model answers, backend specs, prompt version)
- ``dicts``: id -> zstd dictionary trained on this store's first graphs

Read it like a mapping::

    import gbc
    with gbc.open_store("run.lmdb") as store:
        print(len(store), store.count("failed"))
        for key, graph in store.items():
            ...

``commit_image`` writes a graph, its ``done`` status and its provenance in one transaction,
so a run that is killed and started again skips exactly the images that were committed.
The store may be read by other processes while one process writes it, and it is safe to
use across ``fork()``: every process opens the environment for itself, lazily.

The store is split along its seams: ``lmdb_base`` (environment, sub-databases, meta,
transactions), ``dictionaries`` (the zstd dictionary), ``status`` (status records and their
queries), ``copying`` (``copy_from``); this module is the mapping API over them.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Tuple, Union

from gbc.schemas.graph import GbcGraph
from gbc.schemas.views import GraphView, wants_json
from gbc.store.codec import ValueDecodeError
from gbc.store.copying import copy_store
from gbc.store.dictionaries import DICT_SIZE, DICT_TRAIN_SAMPLES
from gbc.store.lmdb_base import (
    DEFAULT_MAP_SIZE,
    MAX_KEY_BYTES,
    MAX_MAP_SIZE,
    MAX_READERS,
    STORE_FORMAT_VERSION,
    AppendingPuts,
    LmdbBase,
)
from gbc.store.lmdb_base import decode_key as _decode_key
from gbc.store.lmdb_base import encode_key as _encode_key
from gbc.store.lmdb_env import StoreCorruptError, StoreError
from gbc.store.mapped_pages import RANDOM_READ_BYTES
from gbc.store.page_prefetch import LeafPrefetcher
from gbc.store.status import IMPORTED, StatusName, StatusQueries, StatusRecord, encode_status, imported_value

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_MAP_SIZE", "DICT_SIZE", "DICT_TRAIN_SAMPLES", "GraphStore", "IMPORTED", "ITER_CHUNK",
    "MAX_KEY_BYTES", "MAX_MAP_SIZE", "MAX_READERS", "STORE_FORMAT_VERSION", "StatusName", "StatusRecord",
    "StoreCorruptError", "StoreError",
]

#: Graphs written per transaction by ``put_many``.
DEFAULT_BATCH_SIZE = 1000
#: Values read per read transaction while iterating; short transactions let a writer
#: in another process reuse pages and let readers follow a growing map.
ITER_CHUNK = 256


class GraphStore(StatusQueries, LmdbBase):
    """A mapping ``image key -> GbcGraph`` backed by LMDB, with per-image status and provenance.

    ``GraphStore(path)`` opens an existing store read-only; ``readonly=False`` creates it if
    needed and allows writing. ``map_size`` is the initial map (default ``DEFAULT_MAP_SIZE``);
    it grows by itself. Iteration is in key order (UTF-8 byte order). ``readahead=True`` is
    for reading the whole store (merges, exports, conversions): a page missing from the page
    cache then brings its neighbours with it. The default reads only the page a lookup needs,
    which keeps random lookups of a store larger than RAM fast; a walk of a whole table then
    asks for the pages it will meet ahead of it (see ``gbc.store.page_prefetch``).

    >>> with GraphStore("demo.lmdb", readonly=False) as store:  # doctest: +SKIP
    ...     store.commit_image("dog.jpg", graph, provenance={"backend": "replay"})
    ...     store["dog.jpg"].short_caption
    """

    def _pack_graph(self, key: bytes, payload: bytes, mode: int, txn) -> bytes:
        """The stored value of a graph payload (it may train the store's dictionary)."""
        return self._dictionaries.pack_graph(txn, self._db(b"dicts"), self._db(b"graphs"), key, payload, mode)

    def _put_packed(self, txn, key: bytes, payload: bytes, mode: int) -> None:
        AppendingPuts(txn, self._db(b"graphs")).put(key, self._pack_graph(key, payload, mode, txn))

    # ------------------------------------------------------------------ reading
    def _damaged(self, key: str, exc: ValueDecodeError) -> str:
        return f"graph {key!r} in store {str(self.path)!r} cannot be decoded: {exc}"

    def _decode_graph(self, key: str, value: bytes) -> GbcGraph:
        try:
            return self._codec.decode_graph(value)
        except ValueDecodeError as exc:
            raise StoreCorruptError(self._damaged(key, exc)) from None

    def _decode_view(self, key: str, value: bytes, with_json: bool = False) -> GraphView:
        try:
            return self._codec.decode_view(value, with_json)
        except ValueDecodeError as exc:
            raise StoreCorruptError(self._damaged(key, exc)) from None

    def _get_raw(self, dbname: bytes, key: bytes) -> Optional[bytes]:
        value = self._read(lambda txn: txn.get(key, db=self._db(dbname)))
        self._shared.trimmer.add(RANDOM_READ_BYTES if value is None else max(len(value), RANDOM_READ_BYTES))
        return value

    def __len__(self) -> int:
        return self._read(lambda txn: txn.stat(self._db(b"graphs"))["entries"])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._get_raw(b"graphs", _encode_key(key)) is not None

    def _graph_value(self, key: str) -> bytes:
        value = self._get_raw(b"graphs", _encode_key(key))
        if value is None:
            raise KeyError(key)
        return value

    def __getitem__(self, key: str) -> GbcGraph:
        return self._decode_graph(key, self._graph_value(key))

    def view(self, key: str) -> GraphView:
        """A read-only ``GraphView`` of the graph at ``key`` (``KeyError`` when there is none),
        about three times faster than ``store[key]``: the store validated the graph when it wrote
        it and the value's checksum is verified (extra keys are not kept; ``store[key]`` has them)."""
        return self._decode_view(key, self._graph_value(key))

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def _scan_chunks(self, dbname: bytes, keys_only: bool = False,
                     chunk_rows: Optional[int] = None) -> Iterator[List[Tuple[bytes, Optional[bytes]]]]:
        """Raw ``(key bytes, value)`` rows in key order, one list per short read transaction
        of ``chunk_rows`` rows (default ITER_CHUNK)."""
        chunk_rows = chunk_rows or ITER_CHUNK
        after: Optional[bytes] = None
        # a key-only walk reads no value but still maps every page: counted from the table's size
        stat = self._read(lambda txn: txn.stat(self._db(dbname))) if keys_only else None
        # A walk that goes on past its first chunk has its pages asked for ahead of it, found
        # from the table's branch pages (see gbc.store.page_prefetch): a store opened for
        # lookups reads one page per miss, and readahead would read the neighbours in the file.
        prefetch: Optional[LeafPrefetcher] = None
        wants_prefetch = not self._readahead
        try:
            while True:

                def chunk(txn, after=after):
                    cur = txn.cursor(db=self._db(dbname))
                    ok = cur.set_range(after) if after is not None else cur.first()
                    if ok and after is not None and cur.key() == after:
                        ok = cur.next()
                    rows = []
                    while ok and len(rows) < chunk_rows:
                        rows.append((cur.key(), None if keys_only else cur.value()))
                        ok = cur.next()
                    return rows

                rows = self._read(chunk)
                if not rows:
                    return
                if keys_only:
                    self._shared.trimmer.add_rows(len(rows), stat)
                else:
                    self._shared.trimmer.add(sum(len(v) for _, v in rows))
                if prefetch is not None:
                    prefetch.advance(len(rows))
                elif wants_prefetch and after is not None:
                    prefetch = LeafPrefetcher(self.path / "data.mdb", dbname, values=not keys_only and dbname == b"graphs")
                    prefetch.advance(chunk_rows + len(rows))
                yield rows
                after = rows[-1][0]
        finally:
            if prefetch is not None:
                prefetch.close()

    def _scan(self, dbname: bytes, keys_only: bool = False) -> Iterator[Tuple[str, bytes]]:
        """Raw ``(key, value)`` pairs in key order, read in short transactions of ITER_CHUNK."""
        for rows in self._scan_chunks(dbname, keys_only):
            for k, v in rows:
                yield _decode_key(k), v

    def _graph_items(self, on_damaged: Optional[Callable[[str, str], None]] = None,
                     view: Union[bool, str] = False) -> Iterator[Tuple[str, Any]]:
        """``(key, graph)`` in key order (``GraphView``s with ``view``). Each chunk of values is
        decompressed before its graphs are parsed: one loop of zstd then one of the parser keeps
        each one's tables and code in the CPU caches (measured: decompression costs a third less
        than interleaved)."""
        unpack = self._codec.unpack
        decode = self._codec.decode_view_payload if view else self._codec.decode_payload
        if wants_json(view):  # views with their lossless JSON (see GraphView.lossless_json)
            decode = partial(decode, with_json=True)
        for rows in self._scan_chunks(b"graphs"):
            unpacked: List[Any] = []
            for _, value in rows:
                try:
                    unpacked.append(unpack(value))
                except ValueDecodeError as exc:  # reported when iteration reaches this key
                    unpacked.append(exc)
            for (k, _), item in zip(rows, unpacked):
                key = _decode_key(k)
                try:
                    if isinstance(item, ValueDecodeError):
                        raise item
                    graph = decode(*item)
                except ValueDecodeError as exc:
                    message = self._damaged(key, exc)
                    if on_damaged is None:
                        raise StoreCorruptError(message) from None
                    on_damaged(key, message)  # listed by the caller; iteration goes on
                    continue
                yield key, graph

    def key_page(self, table: Literal["graphs", "status"] = "graphs", after: Optional[str] = None,
                 before: Optional[str] = None, limit: int = 50) -> List[str]:
        """Up to ``limit`` keys of ``table`` in key order: the first ones strictly after ``after``
        (from the start when None), or with ``before`` the last ones strictly before it. One
        cursor walk of ``limit`` rows: paging a store of millions never lists every key."""
        dbname = {"graphs": b"graphs", "status": b"status"}[table]

        def walk(txn):
            cur = txn.cursor(db=self._db(dbname))
            keys: List[bytes] = []
            if before is not None:
                # set_range lands on the first key >= before; the one before it is the start.
                ok = cur.prev() if cur.set_range(_encode_key(before)) else cur.last()
                while ok and len(keys) < limit:
                    keys.append(cur.key())
                    ok = cur.prev()
                keys.reverse()
                return keys
            ok = cur.set_range(_encode_key(after)) if after is not None else cur.first()
            if ok and after is not None and cur.key() == _encode_key(after):
                ok = cur.next()
            while ok and len(keys) < limit:
                keys.append(cur.key())
                ok = cur.next()
            return keys

        return [_decode_key(k) for k in self._read(walk)]
    def keys(self, status: Optional[StatusName] = None) -> Iterator[str]:
        """Image keys in order: of stored graphs, or of images whose status is ``status``
        (``done``: every key holding a graph, whatever wrote it)."""
        if status is None and not self.statuses_complete:
            return (k for k, _ in self._scan(b"graphs", keys_only=True))
        return self._keys_with_status(status or "done")  # the small status table: no graph page

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def values(self, view: bool = False) -> Iterator[Any]:
        """Graphs in key order (read in short transactions: writes made meanwhile may show up);
        read-only ``GraphView``s with ``view=True`` (see ``view``)."""
        return (graph for _, graph in self._graph_items(view=view))

    def items(self, on_damaged: Optional[Callable[[str, str], None]] = None,
              view: Union[bool, str] = False) -> Iterator[Tuple[str, Any]]:
        """``(key, graph)`` in key order. A value that cannot be decoded raises
        ``StoreCorruptError``, or with ``on_damaged`` is passed to it as ``(key, message)`` and
        skipped, so that every damaged graph can be listed. With ``view=True`` graphs come as
        read-only ``GraphView``s, about three times faster (see ``view``); ``view="json"``
        adds each graph's lossless JSON to its view (``GraphView.lossless_json``)."""
        return self._graph_items(on_damaged, view)

    def raw_items(self) -> Iterator[Tuple[str, bytes]]:
        """``(key, stored value)`` pairs in this store's own encoding (values may refer to this
        store's compression dictionary: to move graphs to another store use ``copy_from``)."""
        return self._scan(b"graphs")

    def get_provenance(self, key: str) -> Optional[Dict[str, Any]]:
        """The provenance dict recorded for ``key`` (raw model answers, backend specs, ...), or None."""
        value = self._get_raw(b"provenance", _encode_key(key))
        if value is None:
            return None
        try:
            return self._codec.decode_json(value)
        except ValueDecodeError as exc:
            raise StoreCorruptError(f"provenance of {key!r} in store {str(self.path)!r} cannot be decoded: {exc}") from None

    # ------------------------------------------------------------------ writing
    def _put_in(self, txn, key: bytes, graph: GbcGraph, provenance: Optional[Dict[str, Any]]) -> None:
        _check_graph(graph)
        self._put_packed(txn, key, *self._codec.graph_payload(graph))
        if provenance is not None:
            txn.put(key, self._codec.encode_json(provenance), db=self._db(b"provenance"))

    def put(self, key: str, graph: GbcGraph, provenance: Optional[Dict[str, Any]] = None) -> None:
        """Store ``graph`` under ``key`` as given: its status becomes ``done`` with origin
        ``imported`` (an annotation run commits with ``commit_image`` instead)."""
        k = _encode_key(key)
        record = imported_value()

        def write(txn):
            self._put_in(txn, k, graph, provenance)
            txn.put(k, record, db=self._db(b"status"))

        self._write(write)

    def put_many(self, items: Iterable[Tuple], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Store ``(key, graph)`` or ``(key, graph, provenance)`` items, ``batch_size`` per transaction.

        Like ``put``, each key's status becomes ``done`` with origin ``imported`` (in the same
        transaction as its graph), so a run resuming into this store never annotates it again.

        Each graph is serialised as soon as it arrives (while its objects are still in the CPU
        caches, and so that the batch holds bytes rather than thousands of live objects); a
        batch is compressed and written in one transaction, in key order. Every transaction is
        committed durably, like ``put``: items of a batch that was not committed yet when an
        error is raised are not written.
        """
        codec = self._codec

        def entries() -> Iterator[Tuple[bytes, bytes, int, Optional[bytes]]]:
            for item in items:
                key, graph = _encode_key(item[0]), item[1]
                _check_graph(graph)
                payload, mode = codec.graph_payload(graph)
                provenance = item[2] if len(item) > 2 else None
                yield key, payload, mode, None if provenance is None else codec.encode_json(provenance)

        return self._put_entries(entries(), batch_size)

    def put_payloads(self, items: Iterable[Tuple[str, bytes, Optional[int]]], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Store ``(key, payload, in-edge mode)`` items, each made by ``ValueCodec.graph_payload``
        from a ``GbcGraph`` (in worker processes, say), or ``(key, value, None)`` with the value
        already packed by a codec set up with ``writer_settings``; otherwise as ``put_many``."""
        return self._put_entries(((_encode_key(key), data, mode, None) for key, data, mode in items), batch_size)

    @property
    def writer_settings(self) -> Optional[Tuple[int, bytes, int]]:
        """``(dictionary id, dictionary, zstd level)`` new values are packed with, once the store
        has a dictionary (``ValueCodec.use_writer_settings`` packs the same bytes elsewhere)."""
        return self._codec.writer_settings()

    def _put_entries(self, entries: Iterable[Tuple[bytes, bytes, int, Optional[bytes]]], batch_size: int) -> int:
        total = 0
        batch: List[Tuple[bytes, bytes, int, Optional[bytes]]] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) >= batch_size:
                total += self._put_batch(batch)
                batch = []
        if batch:
            total += self._put_batch(batch)
        return total

    def _put_batch(self, batch: List[Tuple[bytes, bytes, int, Optional[bytes]]]) -> int:
        # Key order lets LMDB append to full pages instead of splitting them (stable: the
        # last of equal keys still wins).
        batch.sort(key=_first)

        record = imported_value()

        def write(txn):
            provenances = self._db(b"provenance")
            graphs, statuses = AppendingPuts(txn, self._db(b"graphs")), AppendingPuts(txn, self._db(b"status"))
            for key, payload, mode, provenance in batch:
                graphs.put(key, payload if mode is None else self._pack_graph(key, payload, mode, txn))
                statuses.put(key, record)
                if provenance is not None:
                    txn.put(key, provenance, db=provenances)
            return len(batch)

        return self._write(write)

    def commit_image(self, key: str, graph: GbcGraph, provenance: Optional[Dict[str, Any]] = None, attempts: int = 1,
                     origin: Optional[str] = None) -> None:
        """Write the graph, a ``done`` status and the provenance of one image in ONE transaction."""
        k = _encode_key(key)
        _check_graph(graph)
        record = StatusRecord(
            status="done",
            attempts=attempts,
            time=time.time(),
            counts={"vertices": graph.n_vertices, "edges": graph.n_edges, "captions": graph.n_captions},
            origin=origin,
        )

        def write(txn):
            self._put_in(txn, k, graph, provenance)
            txn.put(k, encode_status(record), db=self._db(b"status"))

        self._write(write)

    def commit_images(self, items: Iterable[Tuple], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """``commit_image`` for many ``(key, graph)``, ``(key, graph, provenance)`` or
        ``(key, graph, provenance, origin)`` items:
        each batch of ``batch_size`` images (graph, ``done`` status, provenance) is ONE
        transaction, so an image is either wholly committed or not at all. Returns the count."""
        total = 0
        batch: List[Tuple] = []

        def write(txn):
            for key, graph, provenance, origin in batch:
                self._put_in(txn, key, graph, provenance)
                record = StatusRecord(status="done", attempts=1, time=time.time(), counts={
                    "vertices": graph.n_vertices, "edges": graph.n_edges, "captions": graph.n_captions},
                    origin=origin)
                txn.put(key, encode_status(record), db=self._db(b"status"))

        for item in items:
            _check_graph(item[1])
            batch.append((_encode_key(item[0]), item[1], item[2] if len(item) > 2 else None,
                          item[3] if len(item) > 3 else None))
            if len(batch) >= batch_size:
                self._write(write)
                total += len(batch)
                batch = []
        if batch:
            self._write(write)
            total += len(batch)
        return total

    def write_records(self, records: Iterable[Tuple[str, Optional[GbcGraph], Optional[Dict[str, Any]], StatusRecord]]) -> int:
        """Write ``(key, graph or None, provenance or None, status record)`` as given, all in ONE
        transaction (``gbc salvage`` rebuilding a store). A ``done`` record needs its graph."""
        encoded = []
        for key, graph, provenance, record in records:
            if record.status == "done" and graph is None:
                raise StoreError(f"the done record of {key!r} has no graph")
            if graph is not None:
                _check_graph(graph)
            encoded.append((_encode_key(key), graph, provenance,
                            encode_status(record)))

        def write(txn):
            for k, graph, provenance, status in encoded:
                if graph is not None:
                    self._put_in(txn, k, graph, provenance)
                elif provenance is not None:
                    txn.put(k, self._codec.encode_json(provenance), db=self._db(b"provenance"))
                txn.put(k, status, db=self._db(b"status"))
            return len(encoded)

        return self._write(write)

    def mark_failed(
        self,
        key: str,
        reason: str,
        error_type: Optional[str] = None,
        attempts: int = 1,
        provenance: Optional[Dict[str, Any]] = None,
        origin: Optional[str] = None,
    ) -> None:
        """Record that ``key`` failed (one transaction). Any graph stored under ``key`` is removed,
        so a key's graph and its status never disagree."""
        k = _encode_key(key)
        record = StatusRecord(status="failed", reason=reason, error_type=error_type, attempts=attempts, time=time.time(),
                              origin=origin)

        def write(txn):
            txn.delete(k, db=self._db(b"graphs"))
            txn.put(k, encode_status(record), db=self._db(b"status"))
            if provenance is not None:
                txn.put(k, self._codec.encode_json(provenance), db=self._db(b"provenance"))

        self._write(write)

    def delete(self, key: str) -> bool:
        """Remove the graph, status and provenance of ``key``; True if anything was removed."""
        k = _encode_key(key)

        def write(txn):
            return any([txn.delete(k, db=self._db(name)) for name in (b"graphs", b"status", b"provenance")])

        return self._write(write)

    def copy_from(self, other: "GraphStore", overwrite: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Copy every graph, status and provenance of ``other`` into this store (merging shards).

        Values are re-compressed for this store without being parsed into graphs, so a merge
        runs at LMDB speed. With ``overwrite=False`` keys already here are kept. Returns the
        number of graphs copied.
        """
        return copy_store(self, other, overwrite, batch_size)


def _first(item: Tuple) -> Any:
    return item[0]


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, GbcGraph):
        raise TypeError(f"expected a GbcGraph, got {type(graph).__name__}")

