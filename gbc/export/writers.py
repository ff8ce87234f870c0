"""Writers of CLIP training data: open_clip CSV, WebDataset shards, Parquet shards.

``export_graphs`` streams ``(key, graph)`` pairs through a caption strategy into one writer
and returns an ``ExportSummary`` (rows per caption type, graphs skipped and why)::

    from gbc.export.writers import ExportOptions, export_graphs
    from gbc.export.source import open_source
    pairs, total = open_source("graphs.jsonl")
    summary = export_graphs(pairs, "shards/", ExportOptions(fmt="wds", images_root="images/"))
    print(summary.rows_by_type)

Layouts:

- ``csv``: one tab-separated file with columns ``filepath`` and ``title``, one caption per row
  (open_clip's ``--csv-separator '\\t'``). ``filepath`` is the source image when a sample is
  the whole image unchanged; crops and resized images are written as JPEG files into
  ``<OUT stem>_images/`` beside the CSV. Text-only rows keep the recorded path or URL.
- ``wds``: ``00000.tar``, ``00001.tar``, ... holding ``<key>.jpg``, ``<key>.txt`` and
  ``<key>.json`` (key, caption metadata and the whole graph) per sample, with keys of 9 digits
  (shard number then index in the shard) as img2dataset writes them; beside each tar a
  ``00000.parquet`` index (key, caption, status, sizes, ...) and a ``00000_stats.json``.
  By default (``graph_json="first"``) only the first sample of each graph carries the
  graph; the others name it by ``image_key``. ``"all"`` repeats it in every sample (a
  graph has ~16 rows under ``gbc-captions``: the graph copies are then most of a shard).
- ``parquet``: ``00000.parquet``, ... with flat columns (``key``, ``image_key``, ``caption``,
  ``caption_type``, ``vertex_id``, ``vertex_label``, ``desc_label``, ``left``, ``top``,
  ``right``, ``bottom``, ``image_path``, ``image`` (JPEG bytes, null when text-only),
  ``width``, ``height``), readable by ``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from gbc.export.captions import CaptionFilter, CaptionRow, get_strategy
from gbc.export.images import DEFAULT_JPEG_QUALITY, EncodedImage, ImageEncoder, locate_image
from gbc.export.output import csv_images_dir, stage_output
from gbc.schemas import GbcGraph
from gbc.store.keys import is_text, printable

FORMATS = ("csv", "wds", "parquet")
#: Samples per WebDataset or Parquet shard (img2dataset's default).
DEFAULT_SHARD_SIZE = 10_000
#: Rows buffered before a Parquet row group is written.
PARQUET_ROW_GROUP = 2_000
#: Graphs per worker handed out at a time when exporting with several processes, and
#: graphs per task sent to a worker.
WORKER_WINDOW = 64
WORKER_CHUNK = 8
#: Error messages kept in the summary (the count covers all of them).
MAX_ERRORS_KEPT = 20
#: What to do with a graph whose image file is missing: skip it, or export its rows text-only.
MISSING_POLICIES = ("skip", "text")
#: Which WebDataset samples carry the whole graph in their .json: every sample, only the
#: first sample of each graph (the others name it by ``image_key``), or none.
GRAPH_JSON_POLICIES = ("all", "first", "none")
#: Which WebDataset samples carry their image: every sample, or only the first sample of each
#: graph that uses it (the graph's other samples with the same image name that one in ``image_in``).
IMAGE_POLICIES = ("all", "first")


@dataclass
class ExportOptions:
    """Settings of one export (see ``gbc export --help``)."""

    fmt: str = "csv"
    strategy: str = "gbc-captions"
    caption_filter: CaptionFilter = field(default_factory=CaptionFilter)
    images_root: Optional[str] = None
    #: input folders recorded by the store at annotate time, used when ``images_root`` is None
    image_roots: Tuple[str, ...] = ()
    max_side: Optional[int] = None
    shard_size: int = DEFAULT_SHARD_SIZE
    text_only: bool = False
    missing: str = "skip"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    graph_json: str = "first"
    workers: int = 1
    allow_outside_root: bool = False  # read image files outside images_root too
    #: Replace an output that already holds data (refused otherwise; see gbc.export.output).
    overwrite: bool = False
    images: str = "all"

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown export format {self.fmt!r}; choose from {', '.join(FORMATS)}")
        get_strategy(self.strategy)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        if self.images not in IMAGE_POLICIES:
            raise ValueError(f"images must be one of {', '.join(IMAGE_POLICIES)}, got {self.images!r}")
        if self.graph_json not in GRAPH_JSON_POLICIES:
            raise ValueError(f"graph_json must be one of {', '.join(GRAPH_JSON_POLICIES)}, got {self.graph_json!r}")


@dataclass
class ExportSummary:
    """Counts of one export. ``rows_by_type`` counts rows per caption type."""

    graphs_read: int = 0
    graphs_exported: int = 0
    graphs_text_only: int = 0
    skipped_missing_image: int = 0
    skipped_image_error: int = 0
    skipped_outside_root: int = 0
    skipped_invalid_box: int = 0
    refused_images: List[str] = field(default_factory=list)  # "key: path" of the first refusals
    graphs_without_rows: int = 0
    rows: int = 0
    dropped_sentences: int = 0
    rows_by_type: Counter = field(default_factory=Counter)
    files: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    token_counter: str = ""

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.__dict__)
        out["rows_by_type"] = dict(sorted(self.rows_by_type.items()))
        return out


class _Graph:
    """One graph being exported: its key, its image (if any) and its JSON encoded once."""

    def __init__(self, key: str, graph: GbcGraph, source: Optional[Path]):
        self.key = key
        self.graph = graph
        self.source = source
        self._json: Optional[bytes] = None

    @property
    def graph_json(self) -> bytes:
        if self._json is None:
            self._json = self.graph.to_json()
        return self._json

    def recorded_path(self) -> str:
        return self.graph.img_path or self.graph.img_url or ""


def _sample_key(shard: int, index: int, shard_size: int) -> str:
    # img2dataset: 5 digits of shard number, then enough digits for an index in the shard
    # (4 for the default 10,000 samples per shard: keys of 9 digits).
    width = max(4, len(str(shard_size - 1)))
    return f"{shard:05d}{index:0{width}d}"


def _row_meta(g: _Graph, row: CaptionRow) -> Dict[str, Any]:
    return {
        "image_key": g.key,
        "caption_type": row.caption_type,
        "vertex_id": row.vertex_id,
        "vertex_label": row.vertex_label,
        "desc_label": row.desc_label,
        "bbox": list(row.bbox) if row.bbox is not None else None,
    }


def _csv_plain(field: str) -> bool:
    """True when the csv writer (tab, minimal quoting) writes ``field`` unchanged."""
    return not ("\t" in field or '"' in field or "\n" in field or "\r" in field or "\0" in field)


def _csv_field(field: str) -> str:
    """``field`` as the csv module writes it (tab, minimal quoting), except that a lone CR is
    quoted too: the module quotes only the characters of its line terminator ("\n"), and a
    bare CR left unquoted splits the row in two for every CSV reader."""
    if "\t" in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


class CsvWriter:
    """open_clip CSV: ``filepath<TAB>title``, one caption per row."""

    def __init__(self, out: Path, options: ExportOptions, images_dir_as_read: Optional[Path] = None):
        """``images_dir_as_read``: where the images folder will be when the CSV is read (the
        export writes into a staging folder first); the CSV names images there."""
        self.out = out
        self.options = options
        out.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(out, "w", newline="", encoding="utf-8")
        self._fh.write("filepath\ttitle\n")
        self.images_dir = csv_images_dir(out)
        final = images_dir_as_read if images_dir_as_read is not None else self.images_dir
        self._images_dir_as_read = final.parent.resolve() / final.name
        self._n_images = 0
        self.files = [str(out)]

    def _image_file(self, g: _Graph, row: CaptionRow, image: EncodedImage, cache: Dict) -> str:
        # The source file is referenced as is unless the sample is a crop or was re-encoded,
        # or its path is not valid UTF-8 (a CSV line cannot hold it): then it is copied.
        if image.copied and g.source is not None:
            source = str(g.source.resolve())
            if is_text(source):
                return source
        cache_key = (id(g), row.bbox)
        if cache_key not in cache:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            name = f"{self._n_images:09d}.jpg"
            (self.images_dir / name).write_bytes(image.data)
            self._n_images += 1
            cache[cache_key] = str(self._images_dir_as_read / name)
        return cache[cache_key]

    def write_graph(self, g: _Graph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        if images and images[0] is None:
            # Text-only (a graph's rows are all text-only or all with images): one path for all.
            path = g.recorded_path()
            texts = [row.text for row in rows]
            if _csv_plain(path) and all(map(_csv_plain, texts)):
                # No field needs quoting, so the csv module would write exactly these lines;
                # one write per graph instead of its per-character scan per field.
                self._fh.write("".join([f"{path}\t{text}\n" for text in texts]))
            else:
                path = _csv_field(path)
                self._fh.write("".join([f"{path}\t{_csv_field(text)}\n" for text in texts]))
            return
        cache: Dict = {}
        self._fh.write("".join([
            f"{_csv_field(g.recorded_path() if image is None else self._image_file(g, row, image, cache))}\t{_csv_field(row.text)}\n"
            for row, image in zip(rows, images)
        ]))

    def close(self) -> None:
        self._fh.close()
        if self._n_images:
            self.files.append(str(self.images_dir))


class _ShardedWriter:
    """Counts samples into shards of ``shard_size``; subclasses open and close shards."""

    def __init__(self, out: Path, options: ExportOptions):
        self.out = out
        self.options = options
        out.mkdir(parents=True, exist_ok=True)
        self.shard = -1
        self.index = options.shard_size  # forces opening shard 0 on the first sample
        self.files: List[str] = []
        # _sample_key's layout as one %-format, built once (a key is made per row).
        self._key_format = "%%05d%%0%dd" % len(_sample_key(0, 0, options.shard_size)[5:])

    def _next_key(self) -> str:
        if self.index >= self.options.shard_size:
            if self.shard >= 0:
                self._close_shard()
            self.shard += 1
            self.index = 0
            self._open_shard()
        key = self._key_format % (self.shard, self.index)
        self.index += 1
        return key

    def close(self) -> None:
        if self.shard >= 0:
            self._close_shard()

    def _open_shard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close_shard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


_ZEROS = bytes(512)


class _TarWriter:
    """A minimal writer of POSIX ustar archives of regular files (what WebDataset reads).

    ``tarfile`` builds each header through several layers of Python and dominates a
    text-only export; this writes the same 512-byte headers directly. Names must fit the
    100-byte name field (sample keys do).
    """

    _BLOCK = 512
    _FLUSH_BYTES = 1 << 20

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._parts: List[bytes] = []
        self._pending = 0
        template = bytearray(self._BLOCK)
        template[100:108] = b"0000444\0"  # mode r--r--r--
        template[108:116] = b"0000000\0"  # uid
        template[116:124] = b"0000000\0"  # gid
        template[136:148] = b"00000000000\0"  # mtime 0: reproducible shards
        template[148:156] = b"        "  # the checksum field counts as spaces while summing
        template[156:157] = b"0"  # regular file
        template[257:265] = b"ustar\x0000"
        self._template = bytes(template)
        # The checksum is the byte sum of the header: constant part + name + size.
        self._base_sum = sum(template)

    def add(self, name: str, data: bytes) -> None:
        raw = name.encode("utf-8")
        if len(raw) > 100:
            raise ValueError(f"tar member name too long: {name!r}")
        size = b"%011o\0" % len(data)
        t = self._template
        checksum = b"%06o\0 " % (self._base_sum + sum(raw) + sum(size))
        parts = self._parts
        parts += (raw, t[len(raw):124], size, t[136:148], checksum, t[156:], data)
        pad = -len(data) % self._BLOCK
        if pad:
            parts.append(_ZEROS[:pad])
        self._pending += len(data) + self._BLOCK
        if self._pending >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._fh.write(b"".join(self._parts))
        self._parts.clear()
        self._pending = 0

    def close(self) -> None:
        self._flush()
        self._fh.write(bytes(2 * self._BLOCK))  # end-of-archive marker
        self._fh.close()


class WdsWriter(_ShardedWriter):
    """WebDataset tar shards in the img2dataset layout, with a Parquet index per shard."""

    def _open_shard(self) -> None:
        self._tar_path = self.out / f"{self.shard:05d}.tar"
        self._tar = _TarWriter(self._tar_path)
        self._columns = _wds_index_columns()
        self._index: Dict[str, list] = {k: [] for k in self._columns}
        self._stats = Counter()

    def _close_shard(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._tar.close()
        table = pa.table({k: pa.array(v, type=self._columns[k]) for k, v in self._index.items()})
        index_path = self.out / f"{self.shard:05d}.parquet"
        pq.write_table(table, index_path)
        stats = {"count": self._stats["count"], "successes": self._stats["success"], "failed_to_download": 0,
                 "failed_to_resize": 0, "text_only": self._stats["text_only"],
                 "caption_types": {k[5:]: v for k, v in sorted(self._stats.items()) if k.startswith("type:")}}
        stats_path = self.out / f"{self.shard:05d}_stats.json"
        stats_path.write_text(json.dumps(stats, indent=2))
        self.files += [str(self._tar_path), str(index_path), str(stats_path)]

    def write_graph(self, g: _Graph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        import msgspec

        policy = self.options.graph_json
        once = self.options.images == "first"
        carried: Dict[int, Tuple[int, str]] = {}  # id of an encoded image -> (shard, key of the sample holding it)
        for i, (row, image) in enumerate(zip(rows, images)):
            key = self._next_key()
            meta = {"key": key, **_row_meta(g, row)}
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
            head = msgspec.json.encode(meta)
            if policy == "all" or (policy == "first" and i == 0):
                # The graph is encoded once per graph and spliced into the sample's metadata.
                head = head[:-1] + b',"graph":' + g.graph_json + b"}"
            self._tar.add(f"{key}.json", head)
            idx = self._index
            idx["key"].append(key)
            idx["caption"].append(row.text)
            idx["status"].append("text_only" if image is None else "shared_image" if shared else "success")
            idx["error_message"].append(None)
            idx["width"].append(image.width if image else None)
            idx["height"].append(image.height if image else None)
            idx["original_width"].append(image.original_width if image else None)
            idx["original_height"].append(image.original_height if image else None)
            idx["image_key"].append(g.key)
            idx["caption_type"].append(row.caption_type)
            self._stats["count"] += 1
            self._stats["success" if image is not None else "text_only"] += 1
            self._stats["type:" + row.caption_type] += 1


def _wds_index_columns():
    import pyarrow as pa

    return {
        "key": pa.string(), "caption": pa.string(), "status": pa.string(), "error_message": pa.string(),
        "width": pa.int32(), "height": pa.int32(), "original_width": pa.int32(), "original_height": pa.int32(),
        "image_key": pa.string(), "caption_type": pa.string(),
    }


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


class ParquetWriter(_ShardedWriter):
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

    def write_graph(self, g: _Graph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
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


_CAPTION_TYPE = operator.attrgetter("caption_type")

_WRITERS = {"csv": CsvWriter, "wds": WdsWriter, "parquet": ParquetWriter}


def _images_for(encoder: Optional[ImageEncoder], rows: List[CaptionRow]) -> List[Optional[EncodedImage]]:
    if encoder is None:
        return [None] * len(rows)
    cache: Dict[Optional[Tuple[float, ...]], EncodedImage] = {}
    out = []
    for row in rows:
        if row.bbox not in cache:
            cache[row.bbox] = encoder.crop(row.bbox)
        out.append(cache[row.bbox])
    return out


@dataclass
class _Prepared:
    """One graph made ready for the writer (in this process or in a worker); never raises."""

    key: str
    graph: GbcGraph
    outcome: str  # "ok", "no_rows", "missing", "outside_root", "invalid_box" or "image_error"
    rows: List[CaptionRow] = field(default_factory=list)
    images: List[Optional[EncodedImage]] = field(default_factory=list)
    source: Optional[Path] = None
    dropped: int = 0
    error: str = ""


def _non_finite_box_row(rows: List[CaptionRow]) -> Optional[CaptionRow]:
    for row in rows:
        if row.bbox is not None and not all(map(math.isfinite, row.bbox)):
            return row
    return None


def _prepare(key: str, graph: GbcGraph, options: ExportOptions) -> _Prepared:
    batch = get_strategy(options.strategy)(graph, options.caption_filter)
    if not batch.rows:
        return _Prepared(key, graph, "no_rows")
    bad = _non_finite_box_row(batch.rows)
    if bad is not None:  # no crop can be cut from it, and JSON cannot hold it
        return _Prepared(key, graph, "invalid_box", error=f"{key}: vertex {bad.vertex_id!r} has a non-finite box {bad.bbox}")
    encoder = source = None
    if not options.text_only:
        lookup = locate_image(graph.img_path, options.images_root, options.allow_outside_root,
                              options.image_roots)
        source = lookup.path
        if lookup.refused is not None:
            # Never read a file outside the images root, not even as a text-only fallback.
            return _Prepared(key, graph, "outside_root", source=lookup.refused)
        if source is None and options.missing == "skip":
            return _Prepared(key, graph, "missing")
        if source is not None:
            encoder = ImageEncoder(source, options.max_side, options.jpeg_quality)
    try:
        images = _images_for(encoder, batch.rows)
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        return _Prepared(key, graph, "image_error", source=source, error=f"{key}: cannot read image {source}: {exc}")
    return _Prepared(key, graph, "ok", batch.rows, images, source, batch.dropped_sentences)


_WORKER_OPTIONS: Optional[ExportOptions] = None


def _init_worker(options: ExportOptions) -> None:
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options


def _prepare_in_worker(pair: Tuple[str, GbcGraph]) -> _Prepared:
    return _prepare(pair[0], pair[1], _WORKER_OPTIONS)


def _prepared(pairs: Iterable[Tuple[str, GbcGraph]], options: ExportOptions) -> Iterator[_Prepared]:
    """Prepared graphs in input order, made by ``options.workers`` processes.

    Workers take windows of ``WORKER_WINDOW`` graphs per worker, so reading never runs far
    ahead of writing (a store of millions of graphs is never held in memory).
    """
    if options.workers <= 1:
        for key, graph in pairs:
            yield _prepare(key, graph, options)
        return
    import multiprocessing

    # spawn: workers must not inherit an open LMDB environment (fork would share it).
    ctx = multiprocessing.get_context("spawn")
    it = iter(pairs)
    with ctx.Pool(options.workers, initializer=_init_worker, initargs=(options,)) as pool:
        while True:
            window = list(itertools.islice(it, options.workers * WORKER_WINDOW))
            if not window:
                break
            yield from pool.imap(_prepare_in_worker, window, chunksize=WORKER_CHUNK)


def export_graphs(pairs: Iterable[Tuple[str, GbcGraph]], out, options: ExportOptions) -> ExportSummary:
    """Write the rows of every graph in ``pairs`` to ``out`` (a file for CSV, else a folder).

    Graphs whose image is missing are skipped and counted (or exported text-only with
    ``missing="text"``); unreadable images are skipped, counted, and their errors kept in
    ``summary.errors``. Every graph read is accounted for in the summary. With
    ``options.workers > 1`` captions and images are made in worker processes; the output
    is the same as with one.

    An output that already holds data (the CSV file or its images folder, a folder that is
    not empty) is refused with ``OutputExistsError`` unless ``options.overwrite``; the new
    output is written beside it and replaces the old one whole only when complete.
    """
    flt = options.caption_filter
    summary = ExportSummary(token_counter=flt.token_counter()[1] if flt.max_tokens else "no limit")
    out = Path(out)
    staged = stage_output(out, options.fmt, options.overwrite)
    try:
        if options.fmt == "csv":
            writer = CsvWriter(staged.path, options, images_dir_as_read=csv_images_dir(out))
        else:
            writer = _WRITERS[options.fmt](staged.path, options)
        _write_all(writer, pairs, options, summary)
        if not summary.rows:
            # Nothing exported: no empty output is left, and an old one is not replaced by it.
            staged.discard()
            summary.files = []
            return summary
        staged.commit()
    except BaseException:
        staged.discard()  # the old output, if any, stays as it was
        raise
    summary.files = [staged.final_name(f) for f in writer.files]
    return summary


def _write_all(writer, pairs: Iterable[Tuple[str, GbcGraph]], options: ExportOptions, summary: ExportSummary) -> None:
    completed = False
    try:
        for p in _prepared(pairs, options):
            summary.graphs_read += 1
            if p.outcome == "no_rows":
                summary.graphs_without_rows += 1
                continue
            if p.outcome == "missing":
                summary.skipped_missing_image += 1
                continue
            if p.outcome == "outside_root":
                summary.skipped_outside_root += 1
                if len(summary.refused_images) < MAX_ERRORS_KEPT:
                    summary.refused_images.append(f"{p.key}: {p.source}")
                continue
            if p.outcome == "invalid_box":
                summary.skipped_invalid_box += 1
                if len(summary.errors) < MAX_ERRORS_KEPT:
                    summary.errors.append(p.error)
                continue
            if p.outcome == "image_error":
                summary.skipped_image_error += 1
                if len(summary.errors) < MAX_ERRORS_KEPT:
                    summary.errors.append(p.error)
                continue
            writer.write_graph(_Graph(p.key, p.graph, p.source), p.rows, p.images)
            summary.graphs_exported += 1
            if p.images[0] is None:
                summary.graphs_text_only += 1
            summary.rows += len(p.rows)
            summary.dropped_sentences += p.dropped
            summary.rows_by_type.update(map(_CAPTION_TYPE, p.rows))
        writer.close()
        completed = True
    finally:
        if not completed:
            try:
                writer.close()  # releases its open files; may fail again on a full disk
            except Exception:
                pass  # the staging folder is removed by the caller anyway
