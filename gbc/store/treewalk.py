"""Reading a possibly damaged LMDB file where a crash costs nothing: in a child process.

LMDB trusts its pages: a flipped page number makes it read past the end of the file
(``SIGBUS``), a zeroed page trips an assertion (``abort``). Neither can be caught, so
anything that may touch a damaged page runs here, in a process of its own:

- ``walk`` reads every key and value of every sub-database (run as a script by
  ``gbc.store.health``: ``python treewalk.py STORE_DIR`` prints one JSON line);
- ``scan`` and ``lookup`` stream records to a file descriptor, one framed record at a time
  and unbuffered, so that when the child dies its parent knows exactly which records it
  received (``gbc.store.salvage``).

This module imports nothing of gbc, so the script starts in the time it takes to import lmdb.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Iterable, Iterator, List, Optional, Tuple

#: Frame of one streamed record: tag (1 byte), key length, value length (-1: no value).
_FRAME = struct.Struct(">BIi")
TAG_RECORD = 1
TAG_END = 2
TAG_ERROR = 3  # the value is the error message


def open_env(path: str):
    import lmdb

    # readahead: the walk reads every page, and pages written in order lie in order in the file
    return lmdb.open(path, readonly=True, subdir=True, max_dbs=16, readahead=True, lock=True,
                     map_size=1 << 20)  # a read-only env maps the size the file records


def sub_databases(env) -> List[bytes]:
    with env.begin() as txn:
        return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]


def walk(path: str) -> dict:
    """Read every page of every tree (keys, values, overflow pages); entries per sub-database."""
    env = open_env(path)
    try:
        counts = {}
        for name in sub_databases(env):
            db = env.open_db(name, create=False)
            n = 0
            with env.begin(buffers=False) as txn:
                for _key, _value in txn.cursor(db=db):
                    n += 1  # buffers=False copies each value: every byte is read
            counts[name.decode("utf-8", "replace")] = n
        return counts
    finally:
        env.close()


def write_record(fd: int, key: bytes, value: Optional[bytes], tag: int = TAG_RECORD) -> None:
    data = _FRAME.pack(tag, len(key), -1 if value is None else len(value)) + key + (value or b"")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_records(stream) -> Iterator[Tuple[int, bytes, Optional[bytes]]]:
    """``(tag, key, value)`` of every complete frame in ``stream`` (a truncated last frame is dropped)."""
    while True:
        head = stream.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        tag, klen, vlen = _FRAME.unpack(head)
        key = stream.read(klen)
        value = stream.read(vlen) if vlen >= 0 else None
        if len(key) < klen or (value is not None and len(value) < vlen):
            return
        yield tag, key, value


def list_sub_databases(path: str, *, fd: int) -> None:
    """Stream ``(name, number of entries the main tree records for it)`` of every sub-database."""
    env = open_env(path)
    for name in sub_databases(env):
        db = env.open_db(name, create=False)
        with env.begin() as txn:
            write_record(fd, name, str(txn.stat(db)["entries"]).encode())
    write_record(fd, b"", None, TAG_END)


def scan(path: str, dbname: bytes, start: Optional[bytes], keys_only: bool = False, *, fd: int) -> None:
    """Stream ``(key, value)`` of ``dbname`` from the first key >= ``start``, then an end frame."""
    env = open_env(path)
    db = env.open_db(dbname, create=False)
    with env.begin(buffers=False) as txn:
        cur = txn.cursor(db=db)
        ok = cur.set_range(start) if start is not None else cur.first()
        while ok:
            write_record(fd, cur.key(), None if keys_only else cur.value())
            ok = cur.next()
    write_record(fd, b"", None, TAG_END)


def lookup(path: str, dbnames: Iterable[bytes], keys: Iterable[bytes], *, fd: int) -> None:
    """For each key, one record per sub-database in ``dbnames`` order (value None: absent)."""
    env = open_env(path)
    names = list(dbnames)
    dbs = [env.open_db(name, create=False) for name in names]
    with env.begin(buffers=False) as txn:
        for key in keys:
            for db in dbs:
                write_record(fd, key, txn.get(key, db=db))
    write_record(fd, b"", None, TAG_END)


def main(argv: List[str]) -> int:
    """``treewalk.py STORE_DIR``: walk every tree; print {"ok": ..., "entries" | "error": ...}."""
    try:
        counts = walk(argv[1])
    except Exception as exc:  # lmdb.Error and friends: the damage LMDB itself noticed
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 3
    print(json.dumps({"ok": True, "entries": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
