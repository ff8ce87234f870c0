"""The zstd dictionary of a store: trained on its first graphs, kept in its ``dicts`` sub-database.

Small JSON values compress far better with a dictionary trained on values like them. A store
that is written collects its first ``dict_train_samples`` graph payloads; once it has them, a
dictionary is trained, stored under a new id (``%08d``) in the same write transaction, and the
graphs written before it are re-compressed with it, so they are as small as later ones.
Values name the dictionary they were compressed with, so every dictionary ever trained stays.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from gbc.store.codec import ValueCodec

#: Graph values collected before a zstd dictionary is trained for the store (0: never).
DICT_TRAIN_SAMPLES = 1000
#: Size of that dictionary in bytes.
DICT_SIZE = 32 * 1024


def dict_key(dict_id: int) -> bytes:
    return b"%08d" % dict_id


class StoreDictionaries:
    """Trains, records and selects the compression dictionary of one writing ``GraphStore``."""

    def __init__(self, codec: ValueCodec, train_samples: int = DICT_TRAIN_SAMPLES):
        self._codec = codec
        self._train_samples = train_samples
        self._samples: List[Tuple[bytes, bytes, int, bytes]] = []  # (key, payload, in-edge mode, value)
        # Trained in a write transaction that has not committed yet: ``(id, bytes)``.
        self._pending: Optional[Tuple[int, bytes]] = None

    def use(self, dict_id: int, data: bytes) -> None:
        """Compress new values with this dictionary (the store's latest, when it is opened)."""
        self._codec.add_dictionary(dict_id, data)
        self._codec.use_dictionary(dict_id)

    def rewrite_pending(self, txn, dicts_db) -> None:
        """Write again a dictionary trained in a write attempt that was rolled back (a retry
        after the map grew): the values packed with it are written again too."""
        if self._pending is not None:
            txn.put(dict_key(self._pending[0]), self._pending[1], db=dicts_db)

    def committed(self) -> None:
        self._pending = None

    def pack_graph(self, txn, dicts_db, graphs_db, key: bytes, payload: bytes, mode: int) -> bytes:
        """The stored value of a graph payload, written in ``txn``. Early payloads are also
        kept as samples; once there are enough, the dictionary is trained (see the module doc)."""
        codec = self._codec
        value = codec.pack(payload, mode)
        if codec.dictionary_id is not None or self._train_samples <= 0:
            return value
        self._samples.append((key, payload, mode, value))
        if len(self._samples) < self._train_samples:
            return value
        try:
            data = codec.train_dictionary([p for _, p, _, _ in self._samples], DICT_SIZE)
        except Exception:  # zstd refuses too few or too uniform samples: keep plain zstd
            self._samples = []
            self._train_samples = 0
            return value
        cur = txn.cursor(db=dicts_db)
        dict_id = int(bytes(cur.key())) + 1 if cur.last() else 1
        txn.put(dict_key(dict_id), data, db=dicts_db)
        # Until this txn commits, every retry must write the dictionary again (see rewrite_pending).
        self._pending = (dict_id, data)
        self.use(dict_id, data)
        for old_key, old_payload, old_mode, old_value in self._samples[:-1]:
            # Only values that are still what this session wrote (not replaced or deleted since).
            if txn.get(old_key, db=graphs_db) == old_value:
                txn.put(old_key, codec.pack(old_payload, old_mode), db=graphs_db)
        self._samples = []
        return codec.pack(payload, mode)
