"""The Parquet writer: ``00000.parquet``, ... with flat columns, one row per caption.

Columns: ``key``, ``image_key``, ``caption``, ``caption_type``, ``vertex_id``,
``vertex_label``, ``desc_label``, ``left``, ``top``, ``right``, ``bottom``, ``image_path``,
``image`` (JPEG bytes, null when text-only), ``width``, ``height``; readable by
``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

import operator
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


_TEXT = operator.attrgetter("text")
_CAPTION_TYPE = operator.attrgetter("caption_type")
_VERTEX_ID = operator.attrgetter("vertex_id")
_VERTEX_LABEL = operator.attrgetter("vertex_label")
_DESC_LABEL = operator.attrgetter("desc_label")
_WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


class ParquetWriter(ShardedWriter):
    """Parquet shards of flat columns (one row per caption, image bytes inline)."""

    def _open_shard(self) -> None:
        import pyarrow.parquet as pq

        self._schema = _parquet_schema()
        self._path = self.out / f"{self.shard:05d}.parquet"
        self._writer = pq.ParquetWriter(self._path, self._schema)
        # Rows are buffered as one list per column (in _PARQUET_COLUMNS order), extended a
        # graph at a time, and turned into a table once per row group.
        self._columns: List[list] = [[] for _ in _PARQUET_COLUMNS]

    def _flush(self, n: Optional[int] = None) -> None:
        """Write the first ``n`` buffered rows (all by default) as one row group."""
        import pyarrow as pa

        columns = self._columns
        if not columns[0]:
            return
        if n is None or n >= len(columns[0]):
            group, self._columns = columns, [[] for _ in _PARQUET_COLUMNS]
        else:
            group = [c[:n] for c in columns]
            for c in columns:
                del c[:n]
        self._writer.write_table(pa.table(dict(zip(_PARQUET_COLUMNS, group)), schema=self._schema))

    def _close_shard(self) -> None:
        self._flush()
        self._writer.close()
        self.files.append(str(self._path))

    def _flush_full_groups(self) -> None:
        # Row groups of exactly PARQUET_ROW_GROUP rows, as when flushing row by row.
        while len(self._columns[0]) >= PARQUET_ROW_GROUP:
            self._flush(PARQUET_ROW_GROUP)

    def write_graph(self, g: ExportedGraph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        image_path = printable(str(g.source)) if g.source is not None else g.recorded_path()
        if images and images[0] is None:  # a graph's rows are all text-only or all with images
            start = 0
            while start < len(rows):
                start = self._write_text_rows(g.key, image_path, rows, start)
            return
        for row, image in zip(rows, images):
            key = self._next_key()  # may close the shard and open the next one
            left, top, right, bottom = row.bbox or _WHOLE_IMAGE
            if image is None:
                data = width = height = None
            else:
                data, width, height = image.data, image.width, image.height
            values = (key, g.key, row.text, row.caption_type, row.vertex_id, row.vertex_label, row.desc_label,
                      left, top, right, bottom, image_path, data, width, height)
            for column, value in zip(self._columns, values):
                column.append(value)
            if len(self._columns[0]) >= PARQUET_ROW_GROUP:
                self._flush()

    def _write_text_rows(self, image_key: str, image_path: str, rows: List[CaptionRow], start: int) -> int:
        """Columns of the text-only ``rows[start:]`` up to the end of the open shard, added a
        column at a time; returns the first row not written."""
        room = self._room()
        part = rows[start:start + room]
        n = len(part)
        (key, image_key_col, caption, caption_type, vertex_id, vertex_label, desc_label,
         left, top, right, bottom, image_path_col, image, width, height) = self._columns
        key += self._keys(n)
        image_key_col += [image_key] * n
        caption += map(_TEXT, part)
        caption_type += map(_CAPTION_TYPE, part)
        vertex_id += map(_VERTEX_ID, part)
        vertex_label += map(_VERTEX_LABEL, part)
        desc_label += map(_DESC_LABEL, part)
        boxes = [row.bbox for row in part]
        if boxes.count(None) == n:  # whole-image captions (every strategy but region)
            for column, value in zip((left, top, right, bottom), _WHOLE_IMAGE):
                column += [value] * n
        else:
            boxes = [box or _WHOLE_IMAGE for box in boxes]
            for column, values in zip((left, top, right, bottom), zip(*boxes)):
                column += values
        image_path_col += [image_path] * n
        nones = [None] * n
        image += nones
        width += nones
        height += nones
        self._flush_full_groups()
        return start + n
