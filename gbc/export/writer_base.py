"""What every export writer is given (``ExportedGraph``), and the shard counting of the
sharded writers (WebDataset, Parquet) with img2dataset's sample keys.

A writer has ``write_graph(graph, rows, images)``, ``close()`` and ``files`` (the paths it
wrote); ``gbc.export.writers.export_graphs`` drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from gbc.schemas import GbcGraph


class ExportedGraph:
    """One graph being exported: its key, its image (if any) and its JSON encoded once."""

    def __init__(self, key: str, graph: GbcGraph, source: Optional[Path]):
        self.key = key
        self.graph = graph
        self.source = source
        self._json: Optional[bytes] = None

    @property
    def graph_json(self) -> bytes:
        if self._json is None:
            graph = self.graph
            # a view read with view="json" carries the stored graph's JSON (see reads_views)
            self._json = graph.to_json() if isinstance(graph, GbcGraph) else graph.lossless_json()
        return self._json

    def recorded_path(self) -> str:
        return self.graph.img_path or self.graph.img_url or ""


#: Largest shard size whose key suffixes are made once and kept (about 60 bytes each).
MAX_KEY_SUFFIXES_KEPT = 1 << 17


def _index_format(shard_size: int) -> str:
    # img2dataset's sample keys: 5 digits of shard number, then enough digits for an index in
    # the shard (4 for the default 10,000 samples per shard: keys of 9 digits).
    return "%%0%dd" % max(4, len(str(shard_size - 1)))


class ShardedWriter:
    """Counts samples into shards of ``options.shard_size``; subclasses open and close shards."""

    def __init__(self, out: Path, options):
        self.out = out
        self.options = options
        out.mkdir(parents=True, exist_ok=True)
        self.shard = -1
        self.index = options.shard_size  # forces opening shard 0 on the first sample
        self.files: List[str] = []
        # The sample key's layout as one %-format of (shard, index), built once.
        digits = _index_format(options.shard_size)
        self._key_format = "%05d" + digits
        # The index part of every key of a shard, made once: a key is then the shard's prefix
        # and one of these (a quarter of the cost of formatting it). Not kept for huge shards.
        self._key_suffixes = ([digits % i for i in range(options.shard_size)]
                              if options.shard_size <= MAX_KEY_SUFFIXES_KEPT else None)
        self._key_prefix = ""
        self._suffix_array = None  # the suffixes as an Arrow array, made on first use

    def _room(self) -> int:
        """Samples the open shard still takes, at least one: a full shard (or none yet) is
        closed and the next one opened."""
        if self.index >= self.options.shard_size:
            if self.shard >= 0:
                self._close_shard()
            self.shard += 1
            self.index = 0
            self._key_prefix = "%05d" % self.shard
            self._open_shard()
        return self.options.shard_size - self.index

    def _keys(self, n: int) -> List[str]:
        """Keys for the next ``n`` samples of the open shard (``_room()`` of them at most)."""
        first = self.index
        self.index = first + n
        suffixes = self._key_suffixes
        if suffixes is None:
            return self._formatted_keys(first, n)
        prefix = self._key_prefix
        return [prefix + suffix for suffix in suffixes[first:first + n]]

    def _formatted_keys(self, first: int, n: int) -> List[str]:
        """Keys of samples ``first..first + n`` of the open shard, each formatted (shards too
        large to keep their suffixes)."""
        fmt, shard = self._key_format, self.shard
        return [fmt % (shard, i) for i in range(first, first + n)]

    def _key_array(self, n: int):
        """The keys of the open shard's first ``n`` samples as an Arrow string array (joined
        by Arrow from the kept suffixes, without a Python string per key)."""
        import pyarrow as pa

        if self._key_suffixes is None:
            return pa.array(self._formatted_keys(0, n), pa.string())
        if self._suffix_array is None:
            self._suffix_array = pa.array(self._key_suffixes, pa.string())
        import pyarrow.compute as pc

        return pc.binary_join_element_wise(pa.scalar(self._key_prefix, pa.string()), self._suffix_array.slice(0, n), "")

    def _next_key(self) -> str:
        self._room()
        return self._keys(1)[0]

    def close(self) -> None:
        if self.shard >= 0:
            self._close_shard()

    def _open_shard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close_shard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
