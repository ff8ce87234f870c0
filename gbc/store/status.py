"""Per-image status records of a graph store, and the queries over them.

Every key that holds a graph is ``done`` (origin ``imported`` when ``put``/``put_many`` stored
it rather than an annotation run; a graph of an older store without a record reads the same);
a ``failed`` key holds a reason instead of a graph. A status value is one code byte (``D`` or
``F``) followed by the record's JSON.
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, Iterator, List, Literal, Optional, Tuple

import msgspec
from pydantic import BaseModel

from gbc.store.lmdb_base import decode_key, encode_key
from gbc.store.lmdb_env import StoreCorruptError, StoreError
from gbc.store.mapped_pages import STATUS_READ_BYTES

STATUS_CODES = {"done": b"D", "failed": b"F"}

StatusName = Literal["done", "failed"]



#: ``StatusRecord.origin`` of graphs stored by ``put``/``put_many`` (conversions, imports)
#: rather than committed by an annotation run.
IMPORTED = "imported"


class StatusRecord(BaseModel):
    """What happened to one image: ``done`` (its graph is stored) or ``failed`` (with a reason).

    ``origin`` is ``None`` for a graph an annotation run committed and ``"imported"`` for one
    stored as it was given (``put``, ``put_many``, ``gbc convert``); such records have
    ``attempts=0``.
    """

    status: StatusName
    reason: Optional[str] = None
    error_type: Optional[str] = None
    attempts: int = 1
    time: float = 0.0
    counts: Optional[Dict[str, int]] = None
    #: ``imported``, or where the image came from (input and position, e.g. ``00003.tar:17``) when
    #: the input said; None for images from folders.
    origin: Optional[str] = None



def imported_record(when: float) -> StatusRecord:
    return StatusRecord(status="done", attempts=0, time=when, origin=IMPORTED)


def imported_value() -> bytes:
    """The status value of a graph stored by ``put``/``put_many``."""
    # Fields left at None are not written (they read back as their defaults): one small
    # record per imported graph.
    return STATUS_CODES["done"] + imported_record(time.time()).model_dump_json(exclude_none=True).encode()


def encode_status(record: StatusRecord) -> bytes:
    return STATUS_CODES[record.status] + record.model_dump_json().encode()


#: The status of a graph stored without a status record (stores written before ``put`` and
#: ``put_many`` recorded one): it has a graph, so it is ``done``, and it was imported.
LEGACY_DONE = imported_record(0.0)


class _StatusLite(msgspec.Struct):
    status: str
    origin: Optional[str] = None


_STATUS_LITE = msgspec.json.Decoder(_StatusLite).decode


def status_code(status: str) -> bytes:
    try:
        return STATUS_CODES[status]
    except KeyError:
        raise StoreError(f"unknown status {status!r}; expected 'done' or 'failed'") from None


class StatusQueries:
    """The status side of ``GraphStore`` (mixed into it): reading records and keys by status."""

    def _status_rows(self) -> Iterator[Tuple[bytes, Optional[bytes]]]:
        """``(key bytes, status value)`` for every key with a status record or a graph, in key
        order; the value is ``None`` for a graph stored without a record (older stores). The
        graphs table, much larger, is walked only in stores that may have such graphs."""
        statuses = (row for rows in self._scan_chunks(b"status") for row in rows)
        if self.statuses_complete:
            yield from statuses
            return
        graphs = (k for rows in self._scan_chunks(b"graphs", keys_only=True) for k, _ in rows)
        status, graph = next(statuses, None), next(graphs, None)
        while status is not None or graph is not None:
            if graph is None or (status is not None and status[0] <= graph):
                if graph is not None and status[0] == graph:
                    graph = next(graphs, None)
                yield status
                status = next(statuses, None)
            else:
                yield graph, None
                graph = next(graphs, None)

    def status_flags(self) -> Iterator[Tuple[bytes, bool]]:
        """``(key bytes, is done)`` for every key with a status record or a graph, in key order,
        without decoding any record: what a view over many shards needs to list keys."""
        done = STATUS_CODES["done"]
        for k, v in self._status_rows():
            yield k, v is None or v[:1] == done

    def _keys_with_status(self, status: str) -> Iterator[str]:
        code = status_code(status)
        done = code == STATUS_CODES["done"]
        for k, v in self._status_rows():
            if (v is None and done) or (v is not None and v[:1] == code):
                yield decode_key(k)


    def status(self, key: str) -> Optional[StatusRecord]:
        """The status record of ``key`` (a graph stored without one reads as ``done``,
        origin ``imported``), or ``None`` for a key the store knows nothing of."""
        k = encode_key(key)

        def read(txn):
            value = txn.get(k, db=self._db(b"status"))
            if value is None and txn.get(k, db=self._db(b"graphs")) is not None:
                return LEGACY_DONE.model_copy()
            return value

        value = self._read(read)
        # Counted as one page, not as RANDOM_READ_BYTES: a view over 100 shards asks each of
        # them for every key, and trimming 100 maps every few keys would cost more than the read.
        self._shared.trimmer.add(STATUS_READ_BYTES)
        if value is None or isinstance(value, StatusRecord):
            return value
        return self._decode_status(key, value)

    def status_origins(self, keys: Iterable[str]) -> List[Optional[Tuple[str, Optional[str]]]]:
        """``(status, origin)`` of each key, or None for a key without a status, read in one
        transaction and decoded partly (what resuming a run over millions of inputs asks)."""
        encoded = [encode_key(k) for k in keys]

        def read(txn):
            db, graphs = self._db(b"status"), self._db(b"graphs")
            # a graph stored without a status record (older stores) is done and imported
            return txn.stat(db), [txn.get(k, db=db) or (LEGACY_DONE if txn.get(k, db=graphs) is not None else None)
                                  for k in encoded]

        stat, values = self._read(read)
        # resuming over millions of inputs walks the whole status table in these batches
        self._shared.trimmer.add_rows(len(encoded), stat)
        out: List[Optional[Tuple[str, Optional[str]]]] = []
        for key, value in zip(encoded, values):
            if value is None:
                out.append(None)
                continue
            if value is LEGACY_DONE:
                out.append(("done", IMPORTED))
                continue
            try:
                lite = _STATUS_LITE(value[1:])
            except msgspec.DecodeError as exc:
                raise StoreCorruptError(f"status of {decode_key(key)!r} in store {str(self.path)!r} cannot be "
                                        f"decoded: {exc}") from None
            out.append((lite.status, lite.origin))
        return out

    def statuses(self) -> Iterator[Tuple[str, StatusRecord]]:
        """``(key, StatusRecord)`` for every image with a status or a graph, in key order."""
        for k, v in self._status_rows():
            key = decode_key(k)
            yield key, (LEGACY_DONE.model_copy() if v is None else self._decode_status(key, v))

    def count(self, status: Optional[StatusName] = None) -> int:
        """Number of graphs (``status=None``) or of images with that status (a scan of the
        status records and the graph keys; ``count("done")`` equals ``len(store)``)."""
        if status is None:
            return len(self)
        return sum(1 for _ in self._keys_with_status(status))

    def _decode_status(self, key: str, value: bytes) -> StatusRecord:
        try:
            return StatusRecord.model_validate_json(value[1:])
        except ValueError as exc:
            raise StoreCorruptError(f"status of {key!r} in store {str(self.path)!r} cannot be decoded: {exc}") from None
