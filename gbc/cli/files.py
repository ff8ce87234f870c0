"""``gbc convert``, and the reading of graph files and stores shared by the inspection commands.

A *source* is a ``.jsonl``/``.json``/``.parquet`` file or an LMDB store. Graphs in a file are
named by their image key (``img_path``, else ``img_url``) and by their position; graphs in a
store by the store key, and a store also holds the images that failed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import click

from gbc.cli.common import handle_errors, one_line, progress
from gbc.schemas.graph import GbcGraph
from gbc.store.records import graph_key

#: The value of ``gbc.store.files.detect_format`` for an LMDB store.
STORE_FORMAT = "lmdb"
LAYOUTS = ("auto", "full", "gbc10m")


def detect_format(path: Path) -> str:
    """``jsonl``, ``json``, ``parquet`` or ``lmdb``; raises a clear error for anything else."""
    from gbc.store.files import detect_format as _detect

    return _detect(path)


def _source_format(path: Path) -> str:
    """Like ``detect_format``, and a folder of store shards (a distributed run's) reads as a store."""
    from gbc.store.files import GraphFormatError

    try:
        return detect_format(path)
    except GraphFormatError:
        if path.is_dir():
            from gbc.store.shards import find_shards

            if find_shards(path):
                return STORE_FORMAT
        raise


@dataclass
class Entry:
    """One image of a source: its key, its status (``done``/``failed``) and the failure reason."""

    key: str
    status: str = "done"
    reason: Optional[str] = None
    error_type: Optional[str] = None
    index: Optional[int] = None


class GraphSource:
    """Graphs of a file or a store, with their keys, for the ``gbc`` inspection commands.

    >>> with GraphSource("graphs.jsonl") as src:  # doctest: +SKIP
    ...     for key, graph in src.graphs():
    ...         print(key, graph.n_vertices)
    """

    def __init__(self, path, validate: bool = True):
        # The store layer's errors (GraphFormatError, StoreError) are ValueErrors, which
        # handle_errors prints as one ``Error: ...`` line.
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        self.format = _source_format(self.path)
        self.validate = validate
        self.store = None
        self.damaged: List[Tuple[str, str]] = []  # (key, message) of store graphs that cannot be decoded
        if self.is_store:
            from gbc.store.shards import open_store

            self.store = open_store(self.path, readonly=True)

    @property
    def is_store(self) -> bool:
        return self.format == STORE_FORMAT

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        self.store = None

    def __enter__(self) -> "GraphSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def _file_graphs(self) -> Iterator[GbcGraph]:
        from gbc.store.files import read_graphs

        return read_graphs(self.path, validate=self.validate)

    def graphs(self) -> Iterator[Tuple[str, GbcGraph]]:
        """``(key, graph)`` for every graph (the ``done`` images of a store)."""
        if self.store is not None:
            # Graphs whose value cannot be decoded are listed in ``damaged`` and skipped.
            for key, graph in self.store.items(on_damaged=lambda key, message: self.damaged.append((key, message))):
                yield key, self._checked(key, graph)
            return
        for i, graph in enumerate(self._file_graphs()):
            yield graph_key(graph, i), graph

    def _checked(self, key: str, graph: GbcGraph) -> GbcGraph:
        if self.validate:
            graph.validate(strict=True, name=repr(key))
        return graph

    def entries(self, status: Optional[str] = None) -> Iterator[Entry]:
        """Every image with its status, in key order for stores; files hold only ``done`` graphs."""
        if self.store is not None:
            for e in _store_entries(self.store):
                if status is None or e.status == status:
                    yield e
            return
        if status not in (None, "done"):
            return
        for i, graph in enumerate(self._file_graphs()):
            yield Entry(graph_key(graph, i), index=i)

    @property
    def n_failed(self) -> Optional[int]:
        """Number of failed images of a store; ``None`` for files (they hold no failures)."""
        if self.store is None:
            return None
        count = getattr(self.store, "count", None)
        if count is not None:
            return count("failed")
        return sum(1 for _ in self.store.keys(status="failed"))  # a view of several stores

    def total(self) -> Optional[int]:
        """Number of graphs when known without reading them all (stores)."""
        return None if self.store is None else len(self.store)

    def find(self, key: str) -> Tuple[str, GbcGraph]:
        """The graph named ``key``: its image key, else its file name, else (files) its 0-based index."""
        from gbc.store.keys import key_from_name

        key = key_from_name(key)  # a name typed as its raw bytes (not UTF-8) finds its escaped key
        if self.store is not None:
            if key in self.store:
                return key, self._checked(key, self.store[key])
            record = self.store.status(key)
            if record is not None and record.status == "failed":
                why = f"{record.error_type}: {record.reason}" if record.error_type else (record.reason or "no reason")
                raise click.ClickException(f"image {key!r} failed ({one_line(why)}); it has no graph")
            matches = [k for k in self.store.keys() if _basename(k) == key]
            if not matches and key.isdigit():
                # The graph's 0-based position in key order (as `gbc ls --status done` lists them).
                matches = list(itertools.islice(self.store.keys(), int(key), int(key) + 1))
            return self._one(key, matches, lambda k: (k, self._checked(k, self.store[k])))
        by_name: List[Tuple[str, GbcGraph]] = []
        by_index: Optional[Tuple[str, GbcGraph]] = None
        n = 0
        for i, graph in enumerate(self._file_graphs()):
            n += 1
            k = graph_key(graph, i)
            if k == key:
                return k, graph
            if key.isdigit() and int(key) == i:
                by_index = (k, graph)
            elif _basename(k) == key:
                by_name.append((k, graph))
        if by_index is not None:
            return by_index
        return self._one(key, by_name, lambda item: item, n)

    def _one(self, key, matches, load, n: Optional[int] = None):
        if len(matches) == 1:
            return load(matches[0])
        if len(matches) > 1:
            names = ", ".join(repr(m if isinstance(m, str) else m[0]) for m in matches[:5])
            raise click.ClickException(f"{key!r} names {len(matches)} graphs ({names}); give the full key")
        if n is None:
            n = self.total()
        raise click.ClickException(
            f"no graph named {key!r} in {self.path} ({n} graphs); `gbc ls {self.path}` lists the keys"
        )


def _store_entries(store) -> Iterator[Entry]:
    """The store's images in key order with their status records (every graph has one:
    graphs imported by ``put_many`` or a conversion are ``done`` too)."""
    for key, record in store.statuses():
        yield Entry(key, record.status, getattr(record, "reason", None), getattr(record, "error_type", None))


def _basename(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------- convert
def _temporary_sibling(path: Path) -> Path:
    # The name keeps its ending (``.jsonl.gz``, ``.lmdb``) so the format is detected the same way.
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def convert_graphs(src: Path, dst: Path, layout: str = "auto", validate: bool = True, overwrite: bool = False,
                   show_progress: Optional[bool] = None) -> Tuple[int, Optional[int]]:
    """Copy every graph of ``src`` into ``dst`` (formats follow the paths); returns (written, failed skipped).

    The output is written beside ``dst`` under a temporary name and moved into place only when
    complete, so an error never leaves a half-written ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise click.ClickException("SRC and DST are the same path")
    if dst.exists() and not overwrite:
        raise click.ClickException(f"{dst} already exists; pass --overwrite to replace it")
    if not dst.parent.exists():
        raise FileNotFoundError(f"{dst.parent}: no such directory")
    dst_format = detect_format(dst)

    with GraphSource(src, validate=validate) as source:
        failed = source.n_failed
        bar = progress(source.graphs(), total=source.total(), desc=f"{src.name} -> {dst.name}", unit=" graphs",
                       disable=None if show_progress is None else not show_progress)
        items = iter(bar)
        tmp = _temporary_sibling(dst)
        try:
            if dst_format == STORE_FORMAT:
                if layout != "auto":
                    items = ((k, GbcGraph.from_dict(g.to_dict(layout))) for k, g in items)
                written = _write_store(tmp, items, failed_from=source.store)
            else:
                from gbc.store.files import write_graphs

                written = write_graphs(tmp, (graph for _, graph in items), layout=layout)
            if dst.exists():
                _remove(dst)
            os.replace(tmp, dst)
        except BaseException as exc:
            _remove(tmp)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(dst)  # name the output in a disk-full message
            raise
        finally:
            bar.close()
    return written, failed


def _write_store(path: Path, items, failed_from=None) -> int:
    """Write ``(key, graph)`` items into a new store; copy the failed records of ``failed_from``."""
    from gbc.store.shards import open_store

    store = open_store(path, readonly=False)
    try:
        n = store.put_many(items)
        if failed_from is not None:
            for key, record in failed_from.statuses():
                if record.status == "failed":
                    store.mark_failed(key, record.reason or "", error_type=record.error_type,
                                      attempts=getattr(record, "attempts", 1))
    finally:
        store.close()
    return n


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="Record layout of file outputs: auto keeps the fields that were read, full writes every "
                   "field of the reference layout, gbc10m only those of the released GBC10M records.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--no-validate", "no_validate", is_flag=True, help="Do not check the graphs' invariants while reading.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@handle_errors
def convert(src: Path, dst: Path, layout: str, overwrite: bool, no_validate: bool, show_progress: Optional[bool]):
    """Convert graphs between JSONL, JSON, Parquet files and LMDB stores.

    The formats follow the paths: .jsonl, .json, .parquet, or a .lmdb store directory.
    A store's failed images are copied (with their reasons) into a store DST and left out
    of a file DST (their count is reported).

    \b
    Examples:
      gbc convert graphs.jsonl graphs.parquet
      gbc convert run.lmdb graphs.jsonl --layout gbc10m
    """
    written, failed = convert_graphs(src, dst, layout=layout, validate=not no_validate, overwrite=overwrite,
                                     show_progress=show_progress)
    line = f"Wrote {written} graph{'s' if written != 1 else ''} to {dst} ({detect_format(dst)})"
    if failed:
        verb = "copied" if detect_format(dst) == STORE_FORMAT else "not copied"
        line += f"; {failed} failed image{'s' if failed != 1 else ''} of {src} {verb}"
    click.echo(line + ".")
