"""Storing and loading GBC graphs.

- ``gbc.store.lmdb_store``: ``GraphStore``, the LMDB store (graphs, status, meta, provenance).
- ``gbc.store.files``: ``read_graphs`` / ``write_graphs`` for ``.jsonl`` (also ``.gz``/``.zst``),
  ``.json``, ``.parquet`` and ``.lmdb`` stores, streaming in both directions.
- ``gbc.store.codec``: the compact, versioned value encoding used inside the store.
- ``gbc.store.shards``: several stores read as one (``MultiStore``) and shard discovery.
- ``gbc.store.reader``: ``GraphReader``, the protocol every source of graphs follows (a store,
  a ``MultiStore``, a graph file as ``GraphFile``), and ``open_graphs`` to open any of them.

Nothing heavy is imported here; pyarrow is imported only when a Parquet file is used.
"""

from gbc.store.files import GraphFormatError, detect_format, read_graphs, write_graphs
from gbc.store.lmdb_store import GraphStore, StatusRecord, StoreCorruptError, StoreError
from gbc.store.reader import GraphFile, GraphReader, open_graphs

__all__ = [
    "GraphFile",
    "GraphFormatError",
    "GraphReader",
    "GraphStore",
    "StatusRecord",
    "StoreCorruptError",
    "StoreError",
    "detect_format",
    "open_graphs",
    "read_graphs",
    "write_graphs",
]
