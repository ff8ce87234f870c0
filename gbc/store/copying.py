"""Copying every graph, status and provenance of stores into another (merging shards).

Values are moved without being parsed into graphs: each is unpacked (its checksum verified,
decompressed with the source's dictionary) and packed again for the target, whose own
dictionary is trained on the first graphs copied. A merge therefore runs at LMDB and zstd
speed, and a damaged value stops it with the key that holds it.

``copy_stores`` reads several sources at once in key order (a k-way merge of their cursor
walks), so the target is written in key order: LMDB appends to full pages and never reads
back a page it wrote, where copying one source after another would insert each source's keys
all over the target (at 10 million graphs, random reads of a target larger than the page
cache).
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from gbc.store.codec import ValueDecodeError
from gbc.store.lmdb_base import LmdbBase, decode_key, encode_key
from gbc.store.lmdb_env import StoreCorruptError

#: The tables a copy moves, graphs first (the target's dictionary is trained on them).
TABLES = (b"graphs", b"status", b"provenance")
#: Rows read per transaction from each source of a k-way copy: the rows of every source are
#: held at once, so this bounds the memory of a merge of many shards.
MERGE_CHUNK = 64

# (key bytes, the source it comes from, stored value)
_Row = Tuple[bytes, LmdbBase, bytes]


def copy_store(target: LmdbBase, source: LmdbBase, overwrite: bool, batch_size: int) -> int:
    """Copy ``source`` into ``target``, two ``GraphStore`` objects (see ``GraphStore.copy_from``,
    which calls this); returns the number of graphs copied."""
    copied = 0
    for dbname in TABLES:
        batch: List[_Row] = []
        for key, value in source._scan(dbname):
            batch.append((encode_key(key), source, value))
            if len(batch) >= batch_size:
                copied += _copy_batch(target, dbname, batch, overwrite)
                batch = []
        if batch:
            copied += _copy_batch(target, dbname, batch, overwrite)
    return copied


def copy_stores(target: LmdbBase, sources: Sequence[LmdbBase], batch_size: int = 1000,
                progress: Optional[Callable[[int], None]] = None) -> int:
    """Copy every source into ``target`` as ``copy_store(target, source, overwrite=False)`` of
    each source in turn would (per table, the first source holding a key gives its value, and
    keys the target holds are kept), reading all sources at once in key order. ``progress(n)``
    is called after each batch is committed, with the graphs it wrote (0 for other tables). Returns the number of graphs copied."""
    copied = 0
    for dbname in TABLES:
        # an empty table needs no lookup per key: every key copied is new
        overwrite = target._read(lambda txn, name=dbname: txn.stat(target._db(name))["entries"]) == 0
        batch: List[_Row] = []
        for row in _first_of_each_key(sources, dbname):
            batch.append(row)
            if len(batch) >= batch_size:
                written = _copy_batch(target, dbname, batch, overwrite)
                copied += written
                batch = []
                if progress is not None:
                    progress(written)
        if batch:
            written = _copy_batch(target, dbname, batch, overwrite)
            copied += written
            if progress is not None:
                progress(written)
    return copied


def _first_of_each_key(sources: Sequence[LmdbBase], dbname: bytes) -> Iterator[_Row]:
    """The rows of table ``dbname`` of all sources in key order, one per key: the first source's."""

    def rows(index: int, source: LmdbBase) -> Iterator[Tuple[bytes, int, bytes]]:
        for chunk in source._scan_chunks(dbname, chunk_rows=MERGE_CHUNK):
            for key, value in chunk:
                yield key, index, value

    previous: Optional[bytes] = None
    # tuples order by key, then by source index: the first source holding a key comes first
    for key, index, value in heapq.merge(*(rows(i, s) for i, s in enumerate(sources))):
        if key != previous:
            previous = key
            yield key, sources[index], value


def _copy_batch(target: LmdbBase, dbname: bytes, batch: List[_Row], overwrite: bool) -> int:
    """Write ``(key, source, value)`` rows of the sources' ``dbname`` into ``target`` in one
    transaction, in key order; returns how many graphs were written."""
    unpacked = []
    for key, source, value in batch:
        if dbname == b"status":  # status records are not compressed
            unpacked.append((key, value, None))
            continue
        try:
            unpacked.append((key, *source._codec.unpack(value)))
        except ValueDecodeError as exc:
            raise StoreCorruptError(
                f"{dbname.decode()} of {decode_key(key)!r} in store {str(source.path)!r} cannot be decoded: {exc}"
            ) from None
    unpacked.sort(key=_first)

    def write(txn):
        db = target._db(dbname)
        cur = txn.cursor(db=db)
        last = bytes(cur.key()) if cur.last() else None
        written = 0
        for key, payload, mode in unpacked:
            if not overwrite and txn.get(key, db=db) is not None:
                continue
            if dbname == b"graphs":
                value = target._pack_graph(key, payload, mode, txn)
                written += 1
            else:
                value = payload if mode is None else target._codec.pack(payload, mode)
            # appending after the last key fills pages instead of splitting them
            if last is None or key > last:
                txn.put(key, value, db=db, append=True)
                last = key
            else:
                txn.put(key, value, db=db)
        return written

    return target._write(write)


def _first(item: Tuple) -> bytes:
    return item[0]
