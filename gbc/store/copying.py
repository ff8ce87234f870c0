"""Copying every graph, status and provenance of stores into another (merging shards).

Values are moved without being parsed into graphs: each is unpacked (its checksum verified,
decompressed with the source's dictionary) and packed again for the target, whose own
dictionary is trained on the first graphs copied. A copy therefore runs at LMDB and zstd
speed, and a damaged value stops it with the key that holds it.

A key is copied as a whole: its graph, status and provenance come from the same source (the
first that holds the key in any table) and are written in the same transaction, so a target
never holds a graph without its status, even when a copy is interrupted. A graph of an older
source without a status record gets the ``done`` record such graphs read as.

``copy_stores`` reads several sources at once in key order (a k-way merge of their cursor
walks), so the target is written in key order: LMDB appends to full pages and never reads
back a page it wrote, where copying one source after another would insert each source's keys
all over the target (at 10 million graphs, random reads of a target larger than the page
cache).
"""

from __future__ import annotations

import heapq
from itertools import groupby
from operator import itemgetter
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from gbc.store.codec import ValueDecodeError
from gbc.store.lmdb_base import AppendingPuts, LmdbBase, decode_key
from gbc.store.lmdb_env import StoreCorruptError
from gbc.store.status import LEGACY_DONE, encode_status

#: The tables a copy moves; a key's rows come in this order.
TABLES = (b"graphs", b"status", b"provenance")
_GRAPHS, _STATUS, _PROVENANCE = range(3)
#: Rows read per transaction from each table of each source of a k-way copy: the rows of every
#: source are held at once, so this bounds the memory of a merge of many shards.
MERGE_CHUNK = 64

# (key bytes, the source it comes from, {table index: stored value})
_Record = Tuple[bytes, LmdbBase, Dict[int, bytes]]


def copy_store(target: LmdbBase, source: LmdbBase, overwrite: bool, batch_size: int) -> int:
    """Copy ``source`` into ``target``, two ``GraphStore`` objects (see ``GraphStore.copy_from``,
    which calls this); returns the number of graphs copied. With ``overwrite`` a key's record
    in ``target`` is replaced whole by the source's."""
    return copy_stores(target, [source], batch_size, overwrite=overwrite)


def copy_stores(target: LmdbBase, sources: Sequence[LmdbBase], batch_size: int = 1000,
                progress: Optional[Callable[[int], None]] = None, overwrite: bool = False) -> int:
    """Copy every source into ``target``, reading all of them at once in key order: each key's
    record comes whole from the first source that holds it, and keys the target holds are kept
    (replaced with ``overwrite``), as copying one source after another would leave them.
    ``progress(n)`` is called after each batch is committed with the graphs it wrote. Returns
    the number of graphs copied."""
    # a target with nothing in it needs no lookup per key: every key copied is new
    check = overwrite or any(target._read(lambda txn, name=name: txn.stat(target._db(name))["entries"])
                             for name in TABLES)
    copied = 0
    batch: List[_Record] = []
    for record in _records(sources):
        batch.append(record)
        if len(batch) >= batch_size:
            copied += _write_batch(target, batch, check, overwrite, progress)
            batch = []
    if batch:
        copied += _write_batch(target, batch, check, overwrite, progress)
    return copied


def _records(sources: Sequence[LmdbBase]) -> Iterator[_Record]:
    """Every key of every source in key order, with the rows of the first source holding it."""

    def rows(index: int, source: LmdbBase, table: int) -> Iterator[Tuple[bytes, int, int, bytes]]:
        for chunk in source._scan_chunks(TABLES[table], chunk_rows=MERGE_CHUNK):
            for key, value in chunk:
                yield key, index, table, value

    streams = [rows(i, s, t) for i, s in enumerate(sources) for t in range(len(TABLES))]
    # tuples order by key, then source index, then table: a key's rows of the first source come first
    for key, group in groupby(heapq.merge(*streams), key=itemgetter(0)):
        first = next(group)
        found = {first[2]: first[3]}
        for _, index, table, value in group:
            if index == first[1]:
                found[table] = value
        yield key, sources[first[1]], found


def _write_batch(target: LmdbBase, batch: List[_Record], check: bool, overwrite: bool,
                 progress: Optional[Callable[[int], None]]) -> int:
    """Write ``batch`` into ``target`` in one transaction (rows re-packed for the target first);
    returns how many graphs were written."""
    legacy = encode_status(LEGACY_DONE)
    unpacked = []
    for key, source, found in batch:
        rows: Dict[int, Tuple[bytes, Optional[int]]] = {}
        for table, value in found.items():
            if table == _STATUS:  # status records are not compressed
                rows[table] = (value, None)
                continue
            try:
                rows[table] = source._codec.unpack(value)
            except ValueDecodeError as exc:
                raise StoreCorruptError(f"{TABLES[table].decode()} of {decode_key(key)!r} in store "
                                        f"{str(source.path)!r} cannot be decoded: {exc}") from None
        if _GRAPHS in rows and _STATUS not in rows:  # a graph of an older store without a record
            rows[_STATUS] = (legacy, None)
        unpacked.append((key, rows))

    def write(txn):
        dbs = [target._db(name) for name in TABLES]
        puts = [AppendingPuts(txn, db) for db in dbs]  # keys come in order: appended
        written = 0
        for key, rows in unpacked:
            if check:
                held = [txn.get(key, db=db) is not None for db in dbs]
                if any(held) and not overwrite:
                    continue
                for table, db in enumerate(dbs):  # replaced whole: nothing of the old record stays
                    if held[table] and table not in rows:
                        txn.delete(key, db=db)
            for table, (payload, mode) in rows.items():
                if table == _GRAPHS:
                    value = target._pack_graph(key, payload, mode, txn)
                    written += 1
                else:
                    value = payload if mode is None else target._codec.pack(payload, mode)
                puts[table].put(key, value)
        return written

    written = target._write(write)
    if progress is not None:
        progress(written)
    return written
