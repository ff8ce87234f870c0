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
from typing import Iterator, List, Optional

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


def iter_list(path: str, fmt: str, columns: Columns, label: str) -> Iterator[ImageSource]:
    """One ``ImageSource`` per row (``path`` = URL, not downloaded yet); rows without a usable
    URL come with an ``error``. ``label`` names the list in origins (``label:row``)."""
    stem = Path(path).stem
    for row, record in enumerate(_records(path, fmt, columns)):
        origin = f"{label}:{row}"
        if isinstance(record, str):  # a line that could not be read as a record
            yield ImageSource(key=default_key(stem, row), path=path, error=record, error_type="BadListRow", origin=origin)
            continue
        raw_key = record.get(columns.key) if columns.key else None
        key = str(raw_key).strip() if raw_key not in (None, "") else default_key(stem, row)
        caption = record.get(columns.caption) if columns.caption else None
        caption = str(caption) if caption not in (None, "") else None
        url = record.get(columns.url)
        url = str(url).strip() if url is not None else ""
        if not url:
            yield ImageSource(key=key, path=path, error=f"row {row} has no URL in column {columns.url!r}",
                              error_type="NoURL", caption=caption, origin=origin)
        elif not url.lower().startswith(("http://", "https://")):
            yield ImageSource(key=key, path=url, error=f"not an http(s) URL: {url[:200]}", error_type="BadURL",
                              caption=caption, origin=origin)
        else:
            yield ImageSource(key=key, path=url, url=url, caption=caption, origin=origin)


def _records(path: str, fmt: str, columns: Columns) -> Iterator:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=columns.wanted()):
            data = batch.to_pydict()
            names = list(data)
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
