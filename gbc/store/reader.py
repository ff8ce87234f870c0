"""One way to read graphs from any source: ``GraphReader`` and :func:`open_graphs`.

A source is an LMDB store (``GraphStore``), a store with its unmerged shards or a folder of
stores (``MultiStore``), or a graph file (``.jsonl``, ``.json``, ``.parquet``: ``GraphFile``).
All three are ``GraphReader``s: the commands that read graphs (``gbc ls``, ``show``,
``stats``, ``validate``, ``convert``, ``filter``, ``export``, ``render``, ``score -o``) and the
replay backend read through this protocol and do not ask which kind of source they hold.

What differs stays honest: a graph file holds only graphs (every image is ``done``, there is
no provenance and no recorded metadata), and it is read from the start for anything but a
plain pass, so :func:`known_count` and :func:`failed_count` return ``None`` for it.

>>> with open_graphs("graphs.jsonl") as reader:          # doctest: +SKIP
...     for key, graph in reader.items():
...         print(key, graph.n_vertices)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union, runtime_checkable

from gbc.schemas.graph import GbcGraph
from gbc.store.files import detect_format, read_graphs
from gbc.store.records import GraphFormatError, graph_key

__all__ = [
    "Entry",
    "GraphFile",
    "GraphReader",
    "failed_count",
    "iter_graphs",
    "known_count",
    "open_graphs",
    "recorded_image_roots",
    "records_statuses",
]

PathLike = Union[str, "os.PathLike[str]"]
#: Called with ``(key, message)`` for a stored graph that cannot be decoded (it is skipped).
OnDamaged = Callable[[str, str], None]

_STATUSES = (None, "done", "failed")


@dataclass
class Entry:
    """One image of a source as the listing commands and the viewer show it: its key, its
    status (``done``/``failed``), why it failed, and (where known) its position."""

    key: str
    status: str = "done"
    reason: Optional[str] = None
    error_type: Optional[str] = None
    index: Optional[int] = None


@runtime_checkable
class GraphReader(Protocol):
    """What every source of graphs offers: ``GraphStore``, ``MultiStore`` and ``GraphFile``.

    - ``items(on_damaged=None, view=False)``: ``(key, graph)`` for every graph, in the source's
      order (key order for stores, file order for files); with ``on_damaged``, graphs that
      cannot be decoded are reported there and skipped instead of raising; with ``view``, stores
      give read-only ``GraphView``s (files still give ``GbcGraph``s, which answer the same
      queries), with ``view="json"`` views that carry their lossless JSON;
    - ``keys(status=None)``: the keys of the graphs (``None`` or ``"done"``) or of the
      ``"failed"`` images;
    - ``get(key, default=None)``, ``status(key)``, ``statuses()``: one graph, one image's status
      record (``.status`` is ``done`` or ``failed``, with ``reason`` and ``error_type``), every
      image with its record;
    - ``count(status=None)``: number of graphs, or of images with that status;
    - ``get_provenance(key)``: how the graph was made (``None`` where nothing was recorded);
    - ``meta``: the source's recorded metadata (``image_roots``, ...; empty for files);
    - ``close()`` and use as a context manager.
    """

    @property
    def meta(self) -> Dict[str, Any]: ...

    def items(self, on_damaged: Optional[OnDamaged] = None, view: Union[bool, str] = False) -> Iterator[Tuple[str, Any]]: ...

    def keys(self, status: Optional[str] = None) -> Iterator[str]: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def status(self, key: str) -> Any: ...

    def statuses(self) -> Iterator[Tuple[str, Any]]: ...

    def count(self, status: Optional[str] = None) -> int: ...

    def get_provenance(self, key: str) -> Optional[Dict[str, Any]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


def _done_record():
    # Lazily: the status type lives with the LMDB store, which a file reader does not open.
    from gbc.store.lmdb_store import StatusRecord

    return StatusRecord(status="done")


class GraphFile:
    """A ``.jsonl`` (also ``.gz``/``.zst``), ``.json`` or ``.parquet`` graph file as a ``GraphReader``.

    A graph is named by its image key (``img_path``, else ``img_url``, else ``#<position>``).
    Every pass reads the file again from the start, streaming: nothing is held in memory, so
    ``get``, ``status`` and ``count`` cost a read of the file. ``validate=True`` checks each
    graph's invariants while reading (``GraphFormatError`` names the line or row).

    >>> with GraphFile("graphs.jsonl") as graphs:   # doctest: +SKIP
    ...     graphs.get("images/horse.jpg").n_vertices
    """

    readonly = True

    def __init__(self, path: PathLike, validate: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            raise GraphFormatError(f"no such file: {str(self.path)!r}")
        self.format = detect_format(self.path)  # raises for a file of no known format
        if self.format == "lmdb":
            raise GraphFormatError(f"{str(self.path)!r} is a graph store, not a graph file; open it with open_graphs")
        self.validate = validate

    # ----------------------------------------------------------------- reading
    def graphs(self) -> Iterator[GbcGraph]:
        """Every graph in file order."""
        return read_graphs(self.path, validate=self.validate)

    def items(self, on_damaged: Optional[OnDamaged] = None,
              view: Union[bool, str] = False) -> Iterator[Tuple[str, GbcGraph]]:
        """``(key, graph)`` in file order. A damaged record raises ``GraphFormatError``: a file
        cannot be read past it, so ``on_damaged`` (for stores) is never called. ``view`` is
        accepted for the protocol's sake: a file's records are parsed as ``GbcGraph``s."""
        for i, graph in enumerate(self.graphs()):
            yield graph_key(graph, i), graph

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def keys(self, status: Optional[str] = None) -> Iterator[str]:
        if status not in _STATUSES:
            raise ValueError(f"status must be None, 'done' or 'failed'; got {status!r}")
        if status == "failed":
            return iter(())
        return (key for key, _ in self.items())

    def get(self, key: str, default: Any = None) -> Any:
        """The first graph named ``key``, or ``default``."""
        for k, graph in self.items():
            if k == key:
                return graph
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k in self.keys())

    def status(self, key: str):
        """A ``done`` record when the file holds ``key``, else ``None`` (a file records no failures)."""
        return _done_record() if key in self else None

    def statuses(self) -> Iterator[Tuple[str, Any]]:
        done = _done_record()
        return ((key, done) for key in self.keys())

    def count(self, status: Optional[str] = None) -> int:
        return sum(1 for _ in self.keys(status))

    def get_provenance(self, key: str) -> None:
        return None

    @property
    def meta(self) -> Dict[str, Any]:
        return {}

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Nothing stays open between passes; here for the protocol."""

    def __enter__(self) -> "GraphFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GraphFile({str(self.path)!r})"


def open_graphs(path: PathLike, validate: bool = True, readahead: bool = False) -> GraphReader:
    """Open ``path`` read-only as whatever it holds; the caller closes it (or uses ``with``).

    A store opens as a ``GraphStore``; a store with unmerged shards (``path/shards/*.lmdb``)
    or a folder of stores as a ``MultiStore`` over all of them; a ``.jsonl``/``.json``/
    ``.parquet`` file as a ``GraphFile`` (``validate``: check each graph while reading; for
    stores use :func:`iter_graphs`). Raises ``FileNotFoundError`` for a missing path and
    ``GraphFormatError`` or ``StoreError`` (both ``ValueError``) for anything else.
    ``readahead``: stores are opened for reading whole (see ``GraphStore``), which a store
    larger than the page cache reads several times faster.
    """
    from gbc.store.shards import find_shards, open_multi_store, open_store

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or store: {p}")
    if p.is_dir() and find_shards(p):
        return open_multi_store(p, readahead=readahead)
    if detect_format(p) == "lmdb":  # raises for a folder that is no store and an unknown format
        return open_store(p, readonly=True, readahead=readahead)
    return GraphFile(p, validate=validate)


def iter_graphs(reader: GraphReader, validate: bool = False,
                on_damaged: Optional[OnDamaged] = None, view: Union[bool, str] = False) -> Iterator[Tuple[str, Any]]:
    """``reader.items(on_damaged)``; with ``validate``, every graph's invariants are checked
    (``GraphValidationError`` names the key). A ``GraphFile`` opened with ``validate=True``
    has checked them while parsing and is not checked twice. With ``view`` (and without
    ``validate``, which checks full graphs) stores give read-only ``GraphView``s."""
    if view and not validate:
        return reader.items(on_damaged=on_damaged, view=view)
    items = reader.items(on_damaged=on_damaged)
    if not validate or (isinstance(reader, GraphFile) and reader.validate):
        return items
    return _validated(items)


def _validated(items: Iterator[Tuple[str, GbcGraph]]) -> Iterator[Tuple[str, GbcGraph]]:
    for key, graph in items:
        graph.validate(strict=True, name=repr(key))
        yield key, graph


def records_statuses(reader: GraphReader) -> bool:
    """True for stores, which record each image's status (failures too) and keep their graphs
    keyed; False for a graph file, which holds only graphs and is read from the start."""
    return not isinstance(reader, GraphFile)


def known_count(reader: GraphReader) -> Optional[int]:
    """Number of graphs when it is known without reading them all (stores); ``None`` for files."""
    return reader.count() if records_statuses(reader) else None


def failed_count(reader: GraphReader) -> Optional[int]:
    """Number of failed images of a store; ``None`` for a graph file (it holds no failures)."""
    return reader.count("failed") if records_statuses(reader) else None


def recorded_image_roots(reader: GraphReader) -> List[str]:
    """The input folders the store (or each store of a ``MultiStore``) recorded at annotate
    time (meta ``image_roots``), first seen first; empty for files and stores that recorded none."""
    metas = [store.meta for store in getattr(reader, "stores", None) or [reader]]
    roots: List[str] = []
    for meta in metas:
        for root in (meta or {}).get("image_roots") or []:
            if isinstance(root, str) and root not in roots:
                roots.append(root)
    return roots
