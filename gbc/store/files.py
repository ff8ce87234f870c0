"""Reading and writing graphs as ``.jsonl``, ``.json``, ``.parquet`` or a ``.lmdb`` store.

Everything streams: a JSONL file is read line by line, a JSON array with an incremental
decoder over chunks, a Parquet file by record batches, a store in short transactions; a
10 GB file is never held in memory. Writers accept any iterable of graphs.

Writing keeps the released layouts: a graph read from any of these formats and written to
any other reads back with the same ``to_dict()`` (same fields present, same nulls).

>>> import gbc
>>> n = gbc.write_graphs("out.parquet", gbc.read_graphs("graphs.jsonl"))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, Union

from gbc.schemas.graph import GbcGraph
from gbc.store.codec import one_line_error

PathLike = Union[str, os.PathLike]

#: Characters read at a time from a JSON array.
JSON_CHUNK_CHARS = 1 << 20
#: Largest single item of a JSON array; beyond it the array is reported as damaged rather
#: than read into memory whole.
MAX_JSON_ITEM_CHARS = 256 << 20
#: Graphs per transaction when writing a store.
STORE_WRITE_BATCH = 1000

_FORMATS = ("jsonl", "json", "parquet", "lmdb")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")


class GraphFormatError(ValueError):
    """A graph file cannot be read or written: unknown format, missing file, damaged or invalid record."""


def detect_format(path: PathLike) -> str:
    """``"jsonl"``, ``"json"``, ``"parquet"`` or ``"lmdb"`` from the path (compressed JSONL counts as jsonl).

    A directory is a store when it ends in ``.lmdb`` or holds ``data.mdb``.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        if name.endswith(".lmdb") or (p / "data.mdb").exists():
            return "lmdb"
        raise GraphFormatError(f"{str(p)!r} is a directory but not a graph store (no data.mdb)")
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".lmdb"):
        return "lmdb"
    raise GraphFormatError(f"cannot tell the format of {str(p)!r}; expected .jsonl, .json, .parquet or a .lmdb store")


# ---------------------------------------------------------------------------- reading
def read_graphs(path: PathLike, *, validate: bool = True) -> Iterator[GbcGraph]:
    """Iterate the graphs stored at ``path``, one at a time.

    Every record is parsed into a ``GbcGraph`` by pydantic (types, required fields). With
    ``validate=True`` each graph's invariants are checked too (``GbcGraph.validate``: unique
    ids, edges between existing vertices, consistent in/out edges, one image root, no cycle);
    ``validate=False`` skips that check and is about twice as fast.

    Raises ``GraphFormatError`` (at once for a missing file or unknown format; while
    iterating for a damaged or invalid record, naming the file and line or row).
    """
    fmt = detect_format(path)
    p = Path(path)
    if not p.exists():
        raise GraphFormatError(f"no such file: {str(p)!r}")
    if fmt == "lmdb":
        if not (p / "data.mdb").exists():
            raise GraphFormatError(f"{str(p)!r} is not a graph store (no data.mdb)")
        records = _read_store(p)
    elif fmt == "jsonl":
        records = _read_jsonl(p)
    elif fmt == "json":
        records = _read_json_array(p)
    else:
        from gbc.store.parquet_io import read_parquet_graphs

        records = read_parquet_graphs(p)
    return _checked(records, validate)


def _checked(records: Iterator, validate: bool) -> Iterator[GbcGraph]:
    for where, graph in records:
        if validate:
            problems = graph.validate()
            if problems:
                more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
                raise GraphFormatError(f"{where}: not a valid graph: {problems[0]}{more}")
        yield graph


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def parse_graph_record(data: Union[bytes, str, Dict[str, Any]], where: str) -> GbcGraph:
    """Validate one record (JSON text or a dict); errors name ``where`` and the first problem."""
    try:
        if isinstance(data, (bytes, bytearray, str)):
            return GbcGraph.model_validate_json(data)
        return GbcGraph.model_validate(data)
    except ValueError as exc:
        errors = exc.errors() if hasattr(exc, "errors") else []
        if errors and errors[0].get("type") == "json_invalid":
            msg = errors[0].get("msg", "")
            raise GraphFormatError(f"{where}: invalid JSON (truncated or damaged record): {msg}") from None
        raise GraphFormatError(f"{where}: not a valid graph: {one_line_error(exc)}") from None


def _read_jsonl(path: Path) -> Iterator:
    with _open_binary(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            yield where, parse_graph_record(line, where)


def _read_json_array(path: Path) -> Iterator:
    """Items of a top-level JSON array (or a single top-level object), decoded chunk by chunk."""
    decoder = json.JSONDecoder()
    with open(path, "r", encoding="utf-8") as f:
        buf = f.read(JSON_CHUNK_CHARS)
        pos = _skip_ws(buf, 0)
        eof = False
        while pos >= len(buf) and not eof:
            more = f.read(JSON_CHUNK_CHARS)
            eof = not more
            buf, pos = buf[pos:] + more, 0
            pos = _skip_ws(buf, 0)
        if pos >= len(buf):
            return  # an empty file holds no graph
        if buf[pos] == "{":  # a single graph
            buf += f.read()
            try:
                obj, _ = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                raise GraphFormatError(f"{path}: invalid JSON: {exc}") from None
            yield f"{path}", parse_graph_record(obj, str(path))
            return
        if buf[pos] != "[":
            raise GraphFormatError(f"{path}: expected a JSON array of graphs, found {buf[pos]!r}")
        pos += 1
        index = 0
        chunk = JSON_CHUNK_CHARS
        expect_item = True
        while True:
            pos = _skip_ws(buf, pos)
            if pos < len(buf):
                c = buf[pos]
                if c == "]" and (expect_item is False or index == 0):
                    return
                if c == "," and not expect_item:
                    pos, expect_item = pos + 1, True
                    continue
                if expect_item:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                    except json.JSONDecodeError as exc:
                        if eof:
                            raise GraphFormatError(f"{path}, item {index}: invalid JSON (truncated or damaged): {exc.msg}") from None
                        obj = None
                    if obj is not None:
                        where = f"{path}, item {index}"
                        yield where, parse_graph_record(obj, where)
                        index, pos, expect_item = index + 1, end, False
                        chunk = JSON_CHUNK_CHARS
                        continue
                else:
                    raise GraphFormatError(f"{path}, after item {index - 1}: expected ',' or ']', found {c!r}")
            if eof:
                raise GraphFormatError(f"{path}: the JSON array is truncated after {index} item(s)")
            if len(buf) - pos > MAX_JSON_ITEM_CHARS:
                raise GraphFormatError(
                    f"{path}, item {index}: invalid JSON, or an item larger than {MAX_JSON_ITEM_CHARS} characters"
                )
            # Need more text: drop what was consumed, read a chunk (bigger each time an item
            # still does not fit, so a huge item is not re-parsed once per small chunk).
            more = f.read(chunk)
            chunk *= 2
            eof = not more
            buf, pos = buf[pos:] + more, 0


def _skip_ws(buf: str, pos: int) -> int:
    n = len(buf)
    while pos < n and buf[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_store(path: Path) -> Iterator:
    from gbc.store.lmdb_store import GraphStore

    store = GraphStore(path, readonly=True)
    try:
        for key, graph in store.items():
            yield f"{path}, key {key!r}", graph
    finally:
        store.close()


# ---------------------------------------------------------------------------- writing
def _records(graphs: Iterable[Union[GbcGraph, Dict[str, Any]]], layout: str) -> Iterator[Dict[str, Any]]:
    for i, g in enumerate(graphs):
        if isinstance(g, dict):
            g = parse_graph_record(g, f"graph #{i}")
        yield g.to_dict(layout)


def _graphs(graphs: Iterable[Union[GbcGraph, Dict[str, Any]]], layout: str) -> Iterator[GbcGraph]:
    for i, g in enumerate(graphs):
        if isinstance(g, dict):
            g = parse_graph_record(g, f"graph #{i}")
        if layout != "auto":
            g = GbcGraph.model_validate(g.to_dict(layout))
        yield g


def write_graphs(path: PathLike, graphs: Iterable[Union[GbcGraph, Dict[str, Any]]], *, layout: str = "auto") -> int:
    """Write ``graphs`` (GbcGraph objects or dicts) to ``path``; the format follows the extension.

    ``layout``: ``auto`` keeps exactly the fields each graph has (lossless), ``full`` writes
    every field of the reference full layout, ``gbc10m`` only those of GBC10M records.
    Files are written to a temporary name and renamed when complete, so an interrupted write
    never leaves a half file. A store (``.lmdb``) is created or extended, keyed by each
    graph's ``img_path`` (else ``img_url``). Returns the number of graphs written.
    """
    if layout not in ("auto", "full", "gbc10m"):
        raise GraphFormatError(f"unknown layout {layout!r}; expected auto, full or gbc10m")
    fmt = detect_format(path)
    p = Path(path)
    if fmt == "lmdb":
        return _write_store(p, graphs, layout)
    if p.parent and not p.parent.exists():
        raise GraphFormatError(f"cannot write {str(p)!r}: the folder {str(p.parent)!r} does not exist")
    tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
    try:
        if fmt == "jsonl":
            n = _write_jsonl(tmp, p.name.lower(), graphs, layout)
        elif fmt == "json":
            n = _write_json_array(tmp, graphs, layout)
        else:
            from gbc.store.parquet_io import write_parquet_records

            n = write_parquet_records(tmp, _records(graphs, layout))
        os.replace(tmp, p)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return n


def _open_write(tmp: Path, name: str) -> IO[bytes]:
    if name.endswith(".gz"):
        return gzip.open(tmp, "wb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor(level=10).stream_writer(open(tmp, "wb"), closefd=True)
    return open(tmp, "wb")


def _record_json(g: GbcGraph, layout: str) -> bytes:
    return g.to_json() if layout == "auto" else g.to_json(layout)


def _write_jsonl(tmp: Path, name: str, graphs: Iterable, layout: str) -> int:
    n = 0
    with _open_write(tmp, name) as f:
        for g in _graphs(graphs, "auto"):
            f.write(_record_json(g, layout))
            f.write(b"\n")
            n += 1
    return n


def _write_json_array(tmp: Path, graphs: Iterable, layout: str) -> int:
    # One graph per line inside the array: valid JSON, streamable, and diff-friendly.
    n = 0
    with open(tmp, "wb") as f:
        f.write(b"[")
        for g in _graphs(graphs, "auto"):
            f.write(b"\n" if n == 0 else b",\n")
            f.write(_record_json(g, layout))
            n += 1
        f.write(b"\n]\n" if n else b"]\n")
    return n


def _write_store(path: Path, graphs: Iterable, layout: str) -> int:
    from gbc.store.lmdb_store import GraphStore

    def keyed() -> Iterator:
        for i, g in enumerate(_graphs(graphs, layout)):
            key = g.image_key
            if not key:
                raise GraphFormatError(f"graph #{i} has neither img_path nor img_url; a store needs one as its key")
            yield key, g

    with GraphStore(path, readonly=False) as store:
        return store.put_many(keyed(), batch_size=STORE_WRITE_BATCH)
