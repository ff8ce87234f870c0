"""URL lists: Parquet, CSV, TSV, JSON Lines and plain text files of image URLs, read row by row.

Columns: ``url_col`` (default ``url``) holds the image URL; ``key_col`` (optional) the image
key, else the key is ``<list file stem>/<row number, 9 digits>``; ``caption_col`` (optional)
the original caption. A ``.txt`` list has one URL per line and no columns. Rows are read in
batches (Parquet) or line by line, never the whole list at once.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from gbc.inputs.items import ImageSource, InputError

#: List file suffixes and the format each is read as.
LIST_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".txt": "txt"}
#: Rows per Parquet batch.
PARQUET_BATCH = 8192


@dataclass(frozen=True)
class Columns:
    """Which columns of a URL list hold the URL, the key and the caption."""

    url: str = "url"
    key: Optional[str] = None
    caption: Optional[str] = None

    def wanted(self) -> List[str]:
        return [c for c in (self.url, self.key, self.caption) if c]


def list_format(path: str) -> Optional[str]:
    return LIST_SUFFIXES.get(Path(path).suffix.lower())


def check_columns(path: str, fmt: str, columns: Columns) -> None:
    """Raise ``InputError`` when the list at ``path`` lacks a column asked for (read from its
    header, schema or first record only)."""
    if fmt == "txt":
        return
    try:
        found = _column_names(path, fmt)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the URL list {path}: {exc}") from None
    if found is None:  # an empty list: nothing to check
        return
    for option, name in (("--url-col", columns.url), ("--key-col", columns.key), ("--caption-col", columns.caption)):
        if name and name not in found:
            shown = ", ".join(found[:20]) + (", ..." if len(found) > 20 else "")
            raise InputError(f"the URL list {path} has no column {name!r} ({option}); its columns: {shown or 'none'}")


def _column_names(path: str, fmt: str) -> Optional[List[str]]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, "r", encoding="utf-8", newline="") as fh:
        if fmt == "jsonl":
            for line in fh:
                if line.strip():
                    record = json.loads(line)
                    return list(record) if isinstance(record, dict) else []
            return None
        header = next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), None)
        return header


def default_key(stem: str, row: int) -> str:
    return f"{stem}/{row:09d}"


#: A row as read, before it is made an ``ImageSource``: key, origin, URL (or the list's path
#: when there is none), caption, error, error type.
Row = Tuple[str, str, str, Optional[str], Optional[str], Optional[str]]


def iter_list(path: str, fmt: str, columns: Columns, label: str) -> Iterator[ImageSource]:
    """One ``ImageSource`` per row (``path`` = URL, not downloaded yet); rows without a usable
    URL come with an ``error``. ``label`` names the list in origins (``label:row``)."""
    return map(row_source, iter_rows(path, fmt, columns, label))


def row_source(row: Row) -> ImageSource:
    key, origin, url, caption, error, error_type = row
    if error is None:
        return ImageSource(key, url, None, None, None, url, caption, origin)
    return ImageSource(key, url, None, error, error_type, None, caption, origin)


def iter_rows(path: str, fmt: str, columns: Columns, label: str) -> Iterator[Row]:
    """The rows of ``iter_list`` as plain tuples (cheap to make; most are skipped on a resume)."""
    stem = Path(path).stem
    key_col, caption_col, url_col = columns.key, columns.caption, columns.url
    for row, record in enumerate(_records(path, fmt, columns)):
        origin = f"{label}:{row}"
        if isinstance(record, str):  # a line that could not be read as a record
            yield default_key(stem, row), origin, path, None, record, "BadListRow"
            continue
        raw_key = record.get(key_col) if key_col else None
        key = str(raw_key).strip() if raw_key not in (None, "") else f"{stem}/{row:09d}"
        caption = record.get(caption_col) if caption_col else None
        caption = str(caption) if caption not in (None, "") else None
        url = record.get(url_col)
        url = url.strip() if isinstance(url, str) else ("" if url is None else str(url).strip())
        if not url:
            yield key, origin, path, caption, f"row {row} has no URL in column {url_col!r}", "NoURL"
        elif not url[:8].lower().startswith(("http://", "https://")):
            yield key, origin, url, caption, f"not an http(s) URL: {url[:200]}", "BadURL"
        else:
            yield key, origin, url, caption, None, None


def _records(path: str, fmt: str, columns: Columns) -> Iterator:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = columns.wanted()
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=names):
            data = batch.to_pydict()
            for values in zip(*(data[n] for n in names)):
                yield dict(zip(names, values))
        return
    if fmt == "txt":
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield {columns.url: line}
        return
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        if fmt == "jsonl":
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    yield f"line {n} of the list is not JSON ({exc})"
                    continue
                yield record if isinstance(record, dict) else f"line {n} of the list is not a JSON object"
            return
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long captions
        yield from csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")


__all__ = ["Columns", "LIST_SUFFIXES", "check_columns", "default_key", "iter_list", "list_format"]
