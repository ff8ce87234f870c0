"""Reading and writing graphs as ``.jsonl``, ``.json``, ``.parquet`` or a ``.lmdb`` store.

Everything streams: a JSONL file is read line by line, a ``.json`` file (an array, or graph
objects one after another) with an incremental decoder over chunks, a Parquet file by record batches, a store in short transactions; a
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
import zlib
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, Union

from gbc.schemas.graph import GbcGraph
from gbc.store.records import GraphFormatError, parse_graph_record

PathLike = Union[str, os.PathLike]

#: Characters read at a time from a JSON array.
JSON_CHUNK_CHARS = 1 << 20
#: Largest single item of a JSON array; beyond it the array is reported as damaged rather
#: than read into memory whole.
MAX_JSON_ITEM_CHARS = 256 << 20
#: Buffer of a JSONL file read line by line.
READ_BUFFER_BYTES = 1 << 20
#: Graphs per transaction when writing a store.
STORE_WRITE_BATCH = 1000

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")


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
            check_invariants(graph, where)
        yield graph


def check_invariants(graph: GbcGraph, where: str) -> None:
    """Raise ``GraphFormatError`` naming ``where`` and the first problem when ``graph`` breaks an invariant."""
    problems = graph.validate()
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise GraphFormatError(f"{where}: not a valid graph: {problems[0]}{more}")


def _open_binary(path: Path) -> IO[bytes]:
    # A JSONL line of a GBC10M-sized graph is ~8 KB, as long as the default buffer: reading
    # it line by line costs 3x more CPU than with a larger buffer.
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), READ_BUFFER_BYTES)
    return open(path, "rb", buffering=READ_BUFFER_BYTES)


def _read_jsonl(path: Path) -> Iterator:
    for lineno, line in jsonl_lines(path):
        where = f"{path}, line {lineno}"
        yield where, parse_graph_record(line, where)


def jsonl_lines(path: Path) -> Iterator:
    """``(line number, line)`` of every line of a JSONL file that is not blank (unparsed)."""
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, line
    except Exception as exc:
        # gzip: EOFError when cut short, BadGzipFile (an OSError) or zlib.error when damaged;
        # zstandard: ZstdError. As for a damaged plain line, the records before the break have
        # been read and the error names the line where it broke.
        if not isinstance(exc, (EOFError, OSError, zlib.error)) and type(exc).__name__ != "ZstdError":
            raise
        what = "the compressed file is truncated or damaged" if path.name.lower().endswith((".gz", ".zst")) \
            else "the file cannot be read further"
        raise GraphFormatError(
            f"{path}, line {lineno + 1}: {what} ({type(exc).__name__}: {exc}); {lineno} line(s) before it were read"
        ) from None


class _JsonText:
    """The text of a ``.json`` file read chunk by chunk: ``buf[pos:]`` is what is left to
    decode, ``line`` the line number at ``pos``."""

    def __init__(self, f: IO[str]):
        self.f = f
        self.buf, self.pos, self.line, self.eof = "", 0, 1, False
        self.chunk = JSON_CHUNK_CHARS

    def advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def skip_ws(self) -> bool:
        """Skip whitespace (reading more as needed); False at the end of the file."""
        while True:
            self.advance(_skip_ws(self.buf, self.pos))
            if self.pos < len(self.buf):
                return True
            if self.eof:
                return False
            self.read_more()

    def read_more(self) -> None:
        # Drop what was consumed and read a chunk, bigger each time an item still does not
        # fit, so a huge item is not re-parsed once per small chunk.
        more = self.f.read(self.chunk)
        self.chunk *= 2
        self.eof = not more
        self.buf, self.pos = self.buf[self.pos:] + more, 0

    def decode(self, decoder: json.JSONDecoder, where: str) -> Any:
        """The JSON value at ``pos`` (which is not whitespace), reading more text as needed."""
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise GraphFormatError(f"{where}: invalid JSON (truncated or damaged): {exc.msg}") from None
                if len(self.buf) - self.pos > MAX_JSON_ITEM_CHARS:
                    raise GraphFormatError(
                        f"{where}: invalid JSON, or an item larger than {MAX_JSON_ITEM_CHARS} characters"
                    ) from None
                self.read_more()
                continue
            self.advance(end)
            self.chunk = JSON_CHUNK_CHARS
            return obj


def _read_json_array(path: Path) -> Iterator:
    """Items of a top-level JSON array, or top-level graph objects one after another (a single
    graph, JSON Lines saved as ``.json``, pretty-printed graphs back to back), decoded chunk by
    chunk. Every record is read; text that is neither is an error, never skipped."""
    decoder = json.JSONDecoder()
    with open(path, "r", encoding="utf-8") as f:
        text = _JsonText(f)
        if not text.skip_ws():
            return  # an empty file holds no graph
        first = text.buf[text.pos]
        if first == "{":
            yield from _json_objects(path, text, decoder)
            return
        if first != "[":
            raise GraphFormatError(f"{path}: expected a JSON array of graphs, found {first!r}")
        text.advance(text.pos + 1)
        index = 0
        while True:
            if not text.skip_ws():
                raise GraphFormatError(f"{path}: the JSON array is truncated after {index} item(s)")
            c = text.buf[text.pos]
            if c == "]" and index == 0:
                text.advance(text.pos + 1)
                break
            where = f"{path}, item {index}"
            obj = text.decode(decoder, where)
            yield where, parse_graph_record(obj, where)
            index += 1
            if not text.skip_ws():
                raise GraphFormatError(f"{path}: the JSON array is truncated after {index} item(s)")
            c = text.buf[text.pos]
            text.advance(text.pos + 1)
            if c == "]":
                break
            if c != ",":
                raise GraphFormatError(f"{path}, after item {index - 1}: expected ',' or ']', found {c!r}")
        if text.skip_ws():
            raise GraphFormatError(
                f"{path}, line {text.line}: unexpected text after the JSON array "
                f"(found {text.buf[text.pos]!r}); one array of graphs per .json file"
            )


def _json_objects(path: Path, text: _JsonText, decoder: json.JSONDecoder) -> Iterator:
    """Top-level graph objects one after another, each named by the line it starts on."""
    while text.skip_ws():
        where = f"{path}, line {text.line}"
        c = text.buf[text.pos]
        if c != "{":
            raise GraphFormatError(f"{where}: expected a graph (a JSON object), found {c!r}")
        obj = text.decode(decoder, where)
        yield where, parse_graph_record(obj, where)


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
