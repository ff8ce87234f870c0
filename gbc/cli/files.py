"""``gbc convert``, and the reading of graph files and stores shared by the inspection commands.

A *source* is a ``.jsonl``/``.json``/``.parquet`` file or an LMDB store. Graphs in a file are
named by their image key (``img_path``, else ``img_url``) and by their position; graphs in a
store by the store key, and a store also holds the images that failed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import click

from gbc.cli.common import handle_errors, one_line, plural, progress
from gbc.schemas.graph import GbcGraph
from gbc.store.reader import Entry

#: The value of ``gbc.store.files.detect_format`` for an LMDB store.
STORE_FORMAT = "lmdb"
LAYOUTS = ("auto", "full", "gbc10m")


def detect_format(path: Path) -> str:
    """``jsonl``, ``json``, ``parquet`` or ``lmdb``; raises a clear error for anything else."""
    from gbc.store.files import detect_format as _detect

    return _detect(path)


class GraphSource:
    """Graphs of a file or a store, with their keys, for the ``gbc`` inspection commands: a
    ``GraphReader`` (``gbc.store.reader``) with the commands' validation, their list of damaged
    graphs and their ways of naming a graph.

    >>> with GraphSource("graphs.jsonl") as src:  # doctest: +SKIP
    ...     for key, graph in src.graphs():
    ...         print(key, graph.n_vertices)
    """

    def __init__(self, path, validate: bool = True):
        # The store layer's errors (GraphFormatError, StoreError) are ValueErrors, which
        # handle_errors prints as one ``Error: ...`` line.
        from gbc.store.reader import open_graphs, records_statuses

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        self.validate = validate
        self.damaged: List[Tuple[str, str]] = []  # (key, message) of store graphs that cannot be decoded
        self.reader = open_graphs(self.path, validate=validate, readahead=True)  # read whole, in key order
        #: A store (one, or several read as one) records statuses; ``gbc ls`` lists them.
        self.is_store = records_statuses(self.reader)

    def close(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> "GraphSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def graphs(self) -> Iterator[Tuple[str, GbcGraph]]:
        """``(key, graph)`` for every graph (the ``done`` images of a store); graphs whose stored
        value cannot be decoded are listed in ``damaged`` and skipped."""
        from gbc.store.reader import iter_graphs

        return iter_graphs(self.reader, validate=self.validate,
                           on_damaged=lambda key, message: self.damaged.append((key, message)))

    def _checked(self, key: str, graph: GbcGraph) -> GbcGraph:
        if self.validate and self.is_store:  # a graph file's graphs were checked while parsing
            graph.validate(strict=True, name=repr(key))
        return graph

    def entries(self, status: Optional[str] = None) -> Iterator[Entry]:
        """Every image with its status and position, in key order for stores; files hold only ``done`` graphs."""
        if status == "failed" and not self.is_store:
            return  # a file records no failure: nothing to read
        for i, (key, record) in enumerate(self.reader.statuses()):
            if status is None or record.status == status:
                yield Entry(key, record.status, getattr(record, "reason", None), getattr(record, "error_type", None),
                            index=i)

    @property
    def n_failed(self) -> Optional[int]:
        """Number of failed images of a store; ``None`` for files (they hold no failures)."""
        from gbc.store.reader import failed_count

        return failed_count(self.reader)

    def total(self) -> Optional[int]:
        """Number of graphs when known without reading them all (stores)."""
        from gbc.store.reader import known_count

        return known_count(self.reader)

    def find(self, key: str) -> Tuple[str, GbcGraph]:
        """The graph named ``key``: its image key, else its file name, else its 0-based position
        (among the graphs, in key order for a store)."""
        from gbc.store.keys import key_from_name

        key = key_from_name(key)  # a name typed as its raw bytes (not UTF-8) finds its escaped key
        reader = self.reader
        graph = reader.get(key)
        if graph is not None:
            return key, self._checked(key, graph)
        record = reader.status(key) if self.is_store else None  # a file records no failure
        if record is not None and record.status == "failed":
            why = f"{record.error_type}: {record.reason}" if record.error_type else (record.reason or "no reason")
            raise click.ClickException(f"image {key!r} failed ({one_line(why)}); it has no graph")
        by_name: List[str] = []
        by_index: Optional[str] = None
        n = 0
        for i, k in enumerate(reader.keys()):
            n = i + 1
            if _basename(k) == key:
                by_name.append(k)
            elif key.isdigit() and int(key) == i:
                by_index = k
        if not by_name and by_index is not None:
            by_name = [by_index]
        if len(by_name) == 1:
            return by_name[0], self._checked(by_name[0], reader.get(by_name[0]))
        if len(by_name) > 1:
            names = ", ".join(repr(m) for m in by_name[:5])
            raise click.ClickException(f"{key!r} names {len(by_name)} graphs ({names}); give the full key")
        raise click.ClickException(
            f"no graph named {key!r} in {self.path} ({n} graphs); `gbc ls {self.path}` lists the keys"
        )


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


def check_graph_output(src: Path, dst: Path, overwrite: bool, same_path: click.ClickException) -> None:
    """Refuse an output that is the source (``same_path``), exists without ``overwrite``, or
    whose folder does not exist."""
    if dst.exists() and src.resolve() == dst.resolve():
        raise same_path
    if dst.exists() and not overwrite:
        raise click.ClickException(f"{dst} already exists; pass --overwrite to replace it")
    if not dst.parent.exists():
        raise FileNotFoundError(f"{dst.parent}: no such directory")


def write_whole(dst: Path, items: Iterator[Tuple[str, GbcGraph]], layout: str = "auto", failed_from=None) -> int:
    """Write ``(key, graph)`` items to ``dst``, a store or a graph file (the format follows the
    path); returns the number of graphs written. A store ``dst`` also gets the failed records
    of ``failed_from`` (a ``GraphReader``).

    The output is written beside ``dst`` under a temporary name and replaces ``dst`` only when
    complete, so an error never leaves a half-written ``dst`` (nor loses an old one).
    """
    def write(tmp: Path) -> int:
        if detect_format(dst) == STORE_FORMAT:
            converted = items if layout == "auto" else ((k, GbcGraph.from_dict(g.to_dict(layout))) for k, g in items)
            return _write_store(tmp, converted, failed_from=failed_from)
        from gbc.store.files import write_graphs

        return write_graphs(tmp, (graph for _, graph in items), layout=layout)

    return _replace_whole(dst, write)


def _replace_whole(dst: Path, write: Callable[[Path], int]) -> int:
    """``write(tmp)`` into a temporary sibling of ``dst``, then replace ``dst`` with it (see ``write_whole``)."""
    from gbc.store.writer_lock import WriterLock

    # A store that a run, a merge or a scoring is writing is not replaced under it: refused
    # before anything is written, and locked until the new store is in place.
    ctx = click.get_current_context(silent=True)
    command = f"{ctx.command_path if ctx is not None else 'gbc'} (replacing the store)"
    lock = WriterLock(dst, command=command).acquire() if (dst / "data.mdb").is_file() else None
    tmp = _temporary_sibling(dst)
    try:
        written = write(tmp)
        if dst.exists():
            _remove(dst)
        os.replace(tmp, dst)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(dst)  # name the output in a disk-full message
        raise
    finally:
        if lock is not None:
            lock.release()
    return written


def convert_graphs(src: Path, dst: Path, layout: str = "auto", validate: bool = True, overwrite: bool = False,
                   show_progress: Optional[bool] = None, workers: int = 1) -> Tuple[int, Optional[int]]:
    """Copy every graph of ``src`` into ``dst`` (formats follow the paths); returns (written, failed skipped).

    The output is written beside ``dst`` under a temporary name and moved into place only when
    complete, so an error never leaves a half-written ``dst``. From a JSONL file into a store,
    ``workers`` > 1 parses and serialises the records in that many processes
    (``gbc.store.parallel_ingest``); the store written is the same.
    """
    src, dst = Path(src), Path(dst)
    check_graph_output(src, dst, overwrite, click.ClickException("SRC and DST are the same path"))
    to_store = detect_format(dst) == STORE_FORMAT  # an output of no known format is refused before anything is read
    if workers > 1 and to_store and src.is_file() and detect_format(src) == "jsonl":
        return _convert_jsonl_in_workers(src, dst, layout, validate, show_progress, workers), None

    with GraphSource(src, validate=validate) as source:
        failed = source.n_failed
        bar = progress(source.graphs(), total=source.total(), desc=f"{src.name} -> {dst.name}", unit=" graphs",
                       disable=None if show_progress is None else not show_progress)
        try:
            written = write_whole(dst, iter(bar), layout=layout, failed_from=source.reader)
        finally:
            bar.close()
    return written, failed


def _convert_jsonl_in_workers(src: Path, dst: Path, layout: str, validate: bool, show_progress: Optional[bool],
                              workers: int) -> int:
    from gbc.store.lmdb_store import GraphStore
    from gbc.store.parallel_ingest import encoded_jsonl

    def write(tmp: Path) -> int:
        with GraphStore(tmp, readonly=False) as store:
            encoded = encoded_jsonl(src, workers, validate=validate, layout=layout,
                                    settings=lambda: store.writer_settings)
            bar = progress(encoded, total=None, desc=f"{src.name} -> {dst.name}", unit=" graphs",
                           disable=None if show_progress is None else not show_progress)
            try:
                return store.put_payloads(iter(bar))
            finally:
                bar.close()
                encoded.close()  # stops the workers at once when the store fails

    return _replace_whole(dst, write)


def _write_store(path: Path, items, failed_from=None) -> int:
    """Write ``(key, graph)`` items into a new store; copy the failed records of ``failed_from`` (a ``GraphReader``)."""
    from gbc.store.shards import open_store

    store = open_store(path, readonly=False)
    try:
        n = store.put_many(items)
        if failed_from is not None:
            # keys(status="failed") of a graph file is empty at once: the file is not read again
            for key in failed_from.keys(status="failed"):
                record = failed_from.status(key)
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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="From a JSONL file into a store: parse, check and serialise the graphs in this many "
                   "processes (one process writes the store). Other conversions use one process.")
@handle_errors
def convert(src: Path, dst: Path, layout: str, overwrite: bool, no_validate: bool, show_progress: Optional[bool],
            workers: int):
    """Convert graphs between JSONL, JSON, Parquet files and LMDB stores.

    The formats follow the paths: .jsonl, .json, .parquet, or a .lmdb store directory.
    A store's failed images are copied (with their reasons) into a store DST and left out
    of a file DST (their count is reported).

    \b
    Examples:
      gbc convert graphs.jsonl graphs.parquet
      gbc convert run.lmdb graphs.jsonl --layout gbc10m
      gbc convert gbc10m.jsonl gbc10m.lmdb --workers 8
    """
    written, failed = convert_graphs(src, dst, layout=layout, validate=not no_validate, overwrite=overwrite,
                                     show_progress=show_progress, workers=workers)
    line = f"Wrote {plural(written, 'graph')} to {dst} ({detect_format(dst)})"
    if failed:
        verb = "copied" if detect_format(dst) == STORE_FORMAT else "not copied"
        line += f"; {plural(failed, 'failed image')} of {src} {verb}"
    click.echo(line + ".")
