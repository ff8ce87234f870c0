"""The Parquet writer: ``00000.parquet``, ... with flat columns, one row per caption.

Columns: ``key``, ``image_key``, ``caption``, ``caption_type``, ``vertex_id``,
``vertex_label``, ``desc_label``, ``left``, ``top``, ``right``, ``bottom``, ``image_path``,
``image`` (JPEG bytes, null when text-only), ``width``, ``height``; readable by
``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

from typing import List, Optional

from gbc.export.captions import CaptionRow
from gbc.export.images import EncodedImage
from gbc.export.writer_base import ExportedGraph, ShardedWriter
from gbc.store.keys import printable

#: Rows buffered before a Parquet row group is written.
PARQUET_ROW_GROUP = 2_000

_PARQUET_COLUMNS = ("key", "image_key", "caption", "caption_type", "vertex_id", "vertex_label", "desc_label",
                    "left", "top", "right", "bottom", "image_path", "image", "width", "height")


def _parquet_schema():
    import pyarrow as pa

    f32 = pa.float32()
    return pa.schema([
        ("key", pa.string()), ("image_key", pa.string()), ("caption", pa.string()), ("caption_type", pa.string()),
        ("vertex_id", pa.string()), ("vertex_label", pa.string()), ("desc_label", pa.string()),
        ("left", f32), ("top", f32), ("right", f32), ("bottom", f32),
        ("image_path", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ])


class ParquetWriter(ShardedWriter):
    """Parquet shards of flat columns (one row per caption, image bytes inline)."""

    def _open_shard(self) -> None:
        import pyarrow.parquet as pq

        self._schema = _parquet_schema()
        self._path = self.out / f"{self.shard:05d}.parquet"
        self._writer = pq.ParquetWriter(self._path, self._schema)
        # Rows are buffered as tuples (one per row, in _PARQUET_COLUMNS order) and turned
        # into columns once per row group: far cheaper than 15 list appends per row.
        self._rows: List[tuple] = []

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            columns = dict(zip(_PARQUET_COLUMNS, map(list, zip(*self._rows))))
            self._writer.write_table(pa.table(columns, schema=self._schema))
            self._rows = []

    def _close_shard(self) -> None:
        self._flush()
        self._writer.close()
        self.files.append(str(self._path))

    def _flush_full_groups(self) -> None:
        # Row groups of exactly PARQUET_ROW_GROUP rows, as when flushing row by row.
        while len(self._rows) >= PARQUET_ROW_GROUP:
            rest = self._rows[PARQUET_ROW_GROUP:]
            del self._rows[PARQUET_ROW_GROUP:]
            self._flush()
            self._rows = rest

    def write_graph(self, g: ExportedGraph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        image_key = g.key
        image_path = printable(str(g.source)) if g.source is not None else g.recorded_path()
        start = self.index
        if self.shard >= 0 and start + len(rows) <= self.options.shard_size and images and images[0] is None:
            # Text-only graph that fits in the open shard: keys made in one go, rows added at once.
            fmt, shard = self._key_format, self.shard
            self.index = start + len(rows)
            self._rows.extend([
                (fmt % (shard, i), image_key, row.text, row.caption_type, row.vertex_id, row.vertex_label,
                 row.desc_label, *(row.bbox or (0.0, 0.0, 1.0, 1.0)), image_path, None, None, None)
                for i, row in enumerate(rows, start)
            ])
            self._flush_full_groups()
            return
        for row, image in zip(rows, images):
            key = self._next_key()  # may close the shard and open the next one
            left, top, right, bottom = row.bbox or (0.0, 0.0, 1.0, 1.0)
            if image is None:
                data = width = height = None
            else:
                data, width, height = image.data, image.width, image.height
            buffer = self._rows
            buffer.append((key, image_key, row.text, row.caption_type, row.vertex_id, row.vertex_label,
                           row.desc_label, left, top, right, bottom, image_path, data, width, height))
            if len(buffer) >= PARQUET_ROW_GROUP:
                self._flush()
