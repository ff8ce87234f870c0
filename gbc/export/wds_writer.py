"""The WebDataset writer: tar shards in the img2dataset layout, with a Parquet index per shard.

``00000.tar``, ``00001.tar``, ... hold ``<key>.jpg``, ``<key>.txt`` and ``<key>.json`` (key,
caption metadata and the whole graph) per sample, with keys of 9 digits (shard number then
index in the shard) as img2dataset writes them; beside each tar a ``00000.parquet`` index
(key, caption, status, sizes, ...) and a ``00000_stats.json``. By default
(``graph_json="first"``) only the first sample of each graph carries the graph; the others
name it by ``image_key``. ``"all"`` repeats it in every sample (a graph has ~16 rows under
``gbc-captions``: the graph copies are then most of a shard).
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from itertools import repeat
from typing import Dict, List, Optional, Tuple

import msgspec

from gbc.export.captions import CaptionRow
from gbc.export.images import EncodedImage
from gbc.export.tar import TarWriter
from gbc.export.writer_base import ExportedGraph, ShardedWriter


class _TextMeta(msgspec.Struct, gc=False):
    """The ``.json`` of a text-only sample (fields in the order they are written; strings,
    None and a tuple of floats: untracked by the garbage collector, like ``CaptionRow``)."""

    key: str
    image_key: str
    caption_type: str
    vertex_id: Optional[str]
    vertex_label: Optional[str]
    desc_label: Optional[str]
    bbox: Optional[Tuple[float, ...]]


_encode = msgspec.json.Encoder().encode
_CAPTION_TYPE = operator.attrgetter("caption_type")
_TEXT = operator.attrgetter("text")
_VERTEX_ID = operator.attrgetter("vertex_id")
_VERTEX_LABEL = operator.attrgetter("vertex_label")
_DESC_LABEL = operator.attrgetter("desc_label")
_BBOX = operator.attrgetter("bbox")
#: Index columns with few distinct values, dictionary-encoded in the Parquet index.
_DICTIONARY_COLUMNS = ["status", "error_message", "image_key", "caption_type"]
_INDEX_COLUMNS = ("key", "caption", "status", "error_message", "width", "height", "original_width",
                  "original_height", "image_key", "caption_type")


def _with_graph(head: bytes, graph_json: bytes) -> bytes:
    """A sample's metadata with the whole graph as its last field (the graph is encoded once
    per graph and spliced in)."""
    return b"".join((head[:-1], b',"graph":', graph_json, b"}"))


def _wds_index_columns():
    import pyarrow as pa

    return {
        "key": pa.string(), "caption": pa.string(), "status": pa.string(), "error_message": pa.string(),
        "width": pa.int32(), "height": pa.int32(), "original_width": pa.int32(), "original_height": pa.int32(),
        "image_key": pa.string(), "caption_type": pa.string(),
    }


class WdsWriter(ShardedWriter):
    """WebDataset tar shards in the img2dataset layout, with a Parquet index per shard."""

    def _open_shard(self) -> None:
        self._tar_path = self.out / f"{self.shard:05d}.tar"
        self._tar = TarWriter(self._tar_path)
        self._index: Dict[str, list] = {k: [] for k in _INDEX_COLUMNS if k != "key"}
        self._count = self._successes = self._text_only = 0

    def _close_shard(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._tar.close()
        columns = _wds_index_columns()
        arrays = {"key": self._key_array(self._count)}  # the shard's samples, in order
        for name, values in self._index.items():
            # columns of text-only shards that hold nothing are made without a look at each row
            arrays[name] = (pa.nulls(len(values), columns[name]) if values.count(None) == len(values)
                            else pa.array(values, type=columns[name]))
        table = pa.table(arrays)
        index_path = self.out / f"{self.shard:05d}.parquet"
        # Keys and captions are unique per row: a dictionary for them is built only to be dropped.
        pq.write_table(table, index_path, use_dictionary=_DICTIONARY_COLUMNS)
        stats = {"count": self._count, "successes": self._successes, "failed_to_download": 0,
                 "failed_to_resize": 0, "text_only": self._text_only,
                 "caption_types": dict(sorted(Counter(self._index["caption_type"]).items()))}
        stats_path = self.out / f"{self.shard:05d}_stats.json"
        stats_path.write_text(json.dumps(stats, indent=2))
        self.files += [str(self._tar_path), str(index_path), str(stats_path)]

    def write_graph(self, g: ExportedGraph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        if images and images[0] is None:  # a graph's rows are all text-only or all with images
            start = 0
            while start < len(rows):
                start = self._write_text_rows(g, rows, start)
            return
        self._write_image_rows(g, rows, images)

    def _write_text_rows(self, g: ExportedGraph, rows: List[CaptionRow], start: int) -> int:
        """Text-only samples for ``rows[start:]`` up to the end of the open shard; returns
        the first row not written. Same samples as ``_write_image_rows`` without images, with
        the header and index work done once per graph."""
        room = self._room()
        part = rows[start:start + room]
        n = len(part)
        keys = self._keys(n)
        texts = list(map(_TEXT, part))
        types = list(map(_CAPTION_TYPE, part))
        image_key = g.key
        heads = list(map(_encode, map(_TextMeta, keys, repeat(image_key, n), types,
                                      map(_VERTEX_ID, part), map(_VERTEX_LABEL, part), map(_DESC_LABEL, part),
                                      map(_BBOX, part))))
        policy = self.options.graph_json
        if policy == "all":
            heads = [_with_graph(head, g.graph_json) for head in heads]
        elif policy == "first" and start == 0:
            heads[0] = _with_graph(heads[0], g.graph_json)
        self._tar.add_samples([key.encode() for key in keys],
                              ((b".txt", [text.encode() for text in texts]), (b".json", heads)))
        idx = self._index
        idx["caption"] += texts
        idx["status"] += ["text_only"] * n
        nones = [None] * n
        for column in ("error_message", "width", "height", "original_width", "original_height"):
            idx[column] += nones
        idx["image_key"] += [image_key] * n
        idx["caption_type"] += types
        self._count += n
        self._text_only += n
        return start + n

    def _write_image_rows(self, g: ExportedGraph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        policy = self.options.graph_json
        once = self.options.images == "first"
        carried: Dict[int, Tuple[int, str]] = {}  # id of an encoded image -> (shard, key of the sample holding it)
        for i, (row, image) in enumerate(zip(rows, images)):
            key = self._next_key()
            meta = {"key": key, "image_key": g.key, "caption_type": row.caption_type, "vertex_id": row.vertex_id,
                    "vertex_label": row.vertex_label, "desc_label": row.desc_label,
                    "bbox": list(row.bbox) if row.bbox is not None else None}
            shared = False
            if image is not None:
                meta.update(width=image.width, height=image.height,
                            original_width=image.original_width, original_height=image.original_height)
                holder = carried.get(id(image)) if once else None
                if holder is not None and holder[0] == self.shard:  # never point into another shard
                    meta["image_in"] = holder[1]
                    shared = True
                else:
                    self._tar.add(f"{key}.jpg", image.data)
                    carried[id(image)] = (self.shard, key)
            self._tar.add(f"{key}.txt", row.text.encode("utf-8"))
            head = _encode(meta)
            if policy == "all" or (policy == "first" and i == 0):
                head = _with_graph(head, g.graph_json)
            self._tar.add(f"{key}.json", head)
            idx = self._index
            idx["caption"].append(row.text)
            idx["status"].append("text_only" if image is None else "shared_image" if shared else "success")
            idx["error_message"].append(None)
            idx["width"].append(image.width if image else None)
            idx["height"].append(image.height if image else None)
            idx["original_width"].append(image.original_width if image else None)
            idx["original_height"].append(image.original_height if image else None)
            idx["image_key"].append(g.key)
            idx["caption_type"].append(row.caption_type)
            self._count += 1
            if image is not None:
                self._successes += 1
            else:
                self._text_only += 1
