"""Storing and loading GBC graphs.

- ``gbc.store.lmdb_store``: ``GraphStore``, the LMDB store (graphs, status, meta, provenance).
- ``gbc.store.files``: ``read_graphs`` / ``write_graphs`` for ``.jsonl`` (also ``.gz``/``.zst``),
  ``.json``, ``.parquet`` and ``.lmdb`` stores, streaming in both directions.
- ``gbc.store.codec``: the compact, versioned value encoding used inside the store.

Nothing heavy is imported here; pyarrow is imported only when a Parquet file is used.
"""

from gbc.store.files import GraphFormatError, detect_format, read_graphs, write_graphs
from gbc.store.lmdb_store import GraphStore, StatusRecord, StoreCorruptError, StoreError

__all__ = [
    "GraphFormatError",
    "GraphStore",
    "StatusRecord",
    "StoreCorruptError",
    "StoreError",
    "detect_format",
    "read_graphs",
    "write_graphs",
]
