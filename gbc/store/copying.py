"""Copying every graph, status and provenance of one store into another (merging shards).

Values are moved without being parsed into graphs: each is unpacked (its checksum verified,
decompressed with the source's dictionary) and packed again for the target, whose own
dictionary is trained on the first graphs copied. A merge therefore runs at LMDB and zstd
speed, and a damaged value stops it with the key that holds it.
"""

from __future__ import annotations

from typing import List, Tuple

from gbc.store.codec import ValueDecodeError
from gbc.store.lmdb_base import LmdbBase, decode_key, encode_key
from gbc.store.lmdb_env import StoreCorruptError


def copy_store(target: LmdbBase, source: LmdbBase, overwrite: bool, batch_size: int) -> int:
    """Copy ``source`` into ``target``, two ``GraphStore`` objects (see ``GraphStore.copy_from``,
    which calls this); returns the number of graphs copied."""
    copied = 0
    for dbname in (b"graphs", b"status", b"provenance"):
        batch: List[Tuple[bytes, bytes]] = []
        for key, value in source._scan(dbname):
            batch.append((encode_key(key), value))
            if len(batch) >= batch_size:
                copied += _copy_batch(target, source, dbname, batch, overwrite)
                batch = []
        if batch:
            copied += _copy_batch(target, source, dbname, batch, overwrite)
    return copied


def _copy_batch(target: LmdbBase, source: LmdbBase, dbname: bytes, batch: List[Tuple[bytes, bytes]],
                overwrite: bool) -> int:
    """Write values of ``source``'s ``dbname`` into ``target``; returns how many graphs were written."""
    unpacked = []
    for key, value in batch:
        if dbname == b"status":  # status records are not compressed
            unpacked.append((key, value, None))
            continue
        try:
            unpacked.append((key, *source._codec.unpack(value)))
        except ValueDecodeError as exc:
            raise StoreCorruptError(
                f"{dbname.decode()} of {decode_key(key)!r} in store {str(source.path)!r} cannot be decoded: {exc}"
            ) from None

    def write(txn):
        db = target._db(dbname)
        written = 0
        for key, payload, mode in unpacked:
            if not overwrite and txn.get(key, db=db) is not None:
                continue
            if dbname == b"graphs":
                target._put_packed(txn, key, payload, mode)
                written += 1
            else:
                txn.put(key, payload if mode is None else target._codec.pack(payload, mode), db=db)
        return written

    return target._write(write)
