"""Graphs as Parquet rows: nested columns with one fixed schema per file, written and read in batches.

The columns follow the released record layout (``vertices`` as a list of structs with
``bbox``, ``descs``, ``in_edges``, ``out_edges``, ...). Which optional fields a file has
(e.g. ``sub_masks``, ``img_size``, caption ``statistics`` of the full layout, or none of
them for GBC10M records) is decided from the first batch: at each level the most common
set of fields becomes the columns. ``clip_scores.scores`` and ``toxicity_scores`` are
``map<string, double>`` columns, so the schema does not depend on which CLIP models scored
the captions.

A record whose fields do not match the file's columns exactly (a field absent in this
record but present in others, an extra field, an empty struct) is still written to the
columns, and its exact JSON goes to the ``_gbc_json`` column (null for all other rows) so
that reading it back is lossless. Readers that do not know this column can ignore it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import msgspec

from gbc.store.records import GraphFormatError, parse_graph_record

#: Graphs per record batch when writing (one row group each) and when reading.
PARQUET_BATCH_ROWS = 1000
#: Column holding the exact JSON of records that do not fit the file's columns.
RAW_JSON_COLUMN = "_gbc_json"
#: Parquet compression codec.
PARQUET_COMPRESSION = "zstd"

# Known fields per nested level, in the order of the released layouts, and the default
# fields of a level that the first batch never shows (those of GBC10M records).
_LEVELS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "graph": (
        ("vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption", "img_size", "mask_inside_threshold"),
        ("vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption"),
    ),
    "vertex": (
        ("vertex_id", "bbox", "label", "descs", "in_edges", "out_edges", "sub_masks", "super_masks"),
        ("vertex_id", "bbox", "label", "descs", "in_edges", "out_edges"),
    ),
    "bbox": (("left", "top", "right", "bottom", "confidence"),) * 2,
    "desc": (("text", "label", "full_label", "statistics", "clip_scores", "toxicity_scores"), ("text", "label")),
    "statistics": (("n_words", "n_tokens"),) * 2,
    "clip_scores": (("scores", "truncation"),) * 2,
    "edge": (("source", "text", "target", "span"), ("source", "text", "target")),
    "span": (("desc_index", "start", "end"),) * 2,
}
# field -> level of its value (a struct, or a list of structs)
_CHILD_LEVEL = {
    ("graph", "vertices"): "vertex",
    ("vertex", "bbox"): "bbox",
    ("vertex", "descs"): "desc",
    ("vertex", "in_edges"): "edge",
    ("vertex", "out_edges"): "edge",
    ("desc", "statistics"): "statistics",
    ("desc", "clip_scores"): "clip_scores",
    ("edge", "span"): "span",
}
_LIST_FIELDS = {("graph", "vertices"), ("vertex", "descs"), ("vertex", "in_edges"), ("vertex", "out_edges")}

Profile = Dict[str, Tuple[str, ...]]


def _require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency; keep the message actionable
        raise ImportError("reading or writing Parquet needs pyarrow: pip install pyarrow") from None
    return pa, pq


# ---------------------------------------------------------------------------- schema
def _observe(level: str, obj: Any, seen: Dict[str, Counter]) -> None:
    if not isinstance(obj, dict):
        return
    known = _LEVELS[level][0]
    seen[level][tuple(k for k in known if k in obj)] += 1
    for key, value in obj.items():
        child = _CHILD_LEVEL.get((level, key))
        if child is None or value is None:
            continue
        if (level, key) in _LIST_FIELDS:
            for item in value if isinstance(value, list) else ():
                _observe(child, item, seen)
        else:
            _observe(child, value, seen)


def profile_of(records: List[Dict[str, Any]]) -> Profile:
    """The fields of each level that the columns will hold, from a first batch of records.

    For each level (graph, vertex, bbox, description, edge, ...) the most common set of
    known fields wins, so a few odd records do not push every other record to the JSON
    column. A level the batch never shows gets the fields of GBC10M records.
    """
    seen: Dict[str, Counter] = {level: Counter() for level in _LEVELS}
    for rec in records:
        _observe("graph", rec, seen)
    profile: Profile = {}
    for level, (_, default) in _LEVELS.items():
        common = [fields for fields, _ in seen[level].most_common() if fields]
        profile[level] = common[0] if common else default
    return profile


def _arrow_schema(profile: Profile):
    pa, _ = _require_pyarrow()
    scores = pa.map_(pa.string(), pa.float64())
    leaf = {
        ("graph", "img_url"): pa.string(),
        ("graph", "img_path"): pa.string(),
        ("graph", "original_caption"): pa.string(),
        ("graph", "short_caption"): pa.string(),
        ("graph", "detail_caption"): pa.string(),
        ("graph", "img_size"): pa.list_(pa.int64()),
        ("graph", "mask_inside_threshold"): pa.float64(),
        ("vertex", "vertex_id"): pa.string(),
        ("vertex", "label"): pa.string(),
        ("vertex", "sub_masks"): pa.list_(pa.string()),
        ("vertex", "super_masks"): pa.list_(pa.string()),
        ("desc", "text"): pa.string(),
        ("desc", "label"): pa.string(),
        ("desc", "full_label"): pa.string(),
        ("desc", "toxicity_scores"): scores,
        ("statistics", "n_words"): pa.int64(),
        ("statistics", "n_tokens"): pa.int64(),
        ("clip_scores", "scores"): scores,
        ("clip_scores", "truncation"): pa.bool_(),
        ("edge", "source"): pa.string(),
        ("edge", "text"): pa.string(),
        ("edge", "target"): pa.string(),
        ("span", "desc_index"): pa.int64(),
        ("span", "start"): pa.int64(),
        ("span", "end"): pa.int64(),
    }
    for name in ("left", "top", "right", "bottom", "confidence"):
        leaf[("bbox", name)] = pa.float64()

    def struct(level: str):
        fields = []
        for name in profile[level]:
            child = _CHILD_LEVEL.get((level, name))
            if child is None:
                typ = leaf[(level, name)]
            elif (level, name) in _LIST_FIELDS:
                typ = pa.list_(pa.struct(struct(child)))
            else:
                typ = pa.struct(struct(child))
            fields.append(pa.field(name, typ))
        return fields

    fields = struct("graph") + [pa.field(RAW_JSON_COLUMN, pa.string())]
    meta = {b"gbc": msgspec.json.encode({"format_version": 1, "raw_json_column": RAW_JSON_COLUMN})}
    return pa.schema(fields, metadata=meta)


def _fits(level: str, obj: Any, profile: Profile) -> bool:
    """True when ``obj`` has exactly the profile's fields at every level (nulls allowed)."""
    if not isinstance(obj, dict) or tuple(obj) != profile[level] and set(obj) != set(profile[level]):
        return False
    for key, value in obj.items():
        child = _CHILD_LEVEL.get((level, key))
        if child is None or value is None:
            continue
        if (level, key) in _LIST_FIELDS:
            if not all(_fits(child, item, profile) for item in value):
                return False
        elif not _fits(child, value, profile):
            return False
    return True


# ---------------------------------------------------------------------------- writing
def write_parquet_records(path: Path, records: Iterable[Dict[str, Any]], batch_rows: int = PARQUET_BATCH_ROWS) -> int:
    """Write graph records (``GbcGraph.to_dict()`` dicts) to ``path`` in row groups of ``batch_rows``."""
    pa, pq = _require_pyarrow()
    writer = None
    schema = profile = None
    n = 0
    batch: List[Dict[str, Any]] = []

    def flush():
        nonlocal writer, schema, profile
        if profile is None:
            profile = profile_of(batch)
            schema = _arrow_schema(profile)
            writer = pq.ParquetWriter(str(path), schema, compression=PARQUET_COMPRESSION)
        rows = []
        for rec in batch:
            row = dict(rec)
            row[RAW_JSON_COLUMN] = None if _fits("graph", rec, profile) else msgspec.json.encode(rec).decode()
            rows.append(row)
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))

    try:
        for rec in records:
            batch.append(rec)
            n += 1
            if len(batch) >= batch_rows:
                flush()
                batch = []
        if batch or writer is None:
            flush()
    finally:
        if writer is not None:
            writer.close()
    return n


# ---------------------------------------------------------------------------- reading
def _maps_to_dicts(rec: Dict[str, Any]) -> None:
    # pyarrow returns map values as lists of (key, value) pairs.
    for v in rec.get("vertices") or ():
        for d in v.get("descs") or ():
            tox = d.get("toxicity_scores")
            if isinstance(tox, list):
                d["toxicity_scores"] = dict(tox)
            cs = d.get("clip_scores")
            if isinstance(cs, dict) and isinstance(cs.get("scores"), list):
                cs["scores"] = dict(cs["scores"])


def read_parquet_graphs(path: Path, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[Tuple[str, Any]]:
    """``(where, GbcGraph)`` for each row of a Parquet file, reading ``batch_rows`` rows at a time."""
    pa, pq = _require_pyarrow()
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise GraphFormatError(f"{path}: not a readable Parquet file ({exc})") from None
    row = 0
    batches = pf.iter_batches(batch_size=batch_rows)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            raise GraphFormatError(f"{path}, rows from {row}: damaged Parquet data ({exc})") from None
        for rec in batch.to_pylist():
            where = f"{path}, row {row}"
            raw: Optional[str] = rec.pop(RAW_JSON_COLUMN, None)
            if raw is not None:
                yield where, parse_graph_record(raw, where)
            else:
                _maps_to_dicts(rec)
                yield where, parse_graph_record(rec, where)
            row += 1
