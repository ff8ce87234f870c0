"""Where exports read graphs from: an LMDB store, a graph file, or any iterable of graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

from gbc.schemas import GbcGraph
from gbc.store.records import graph_key, keyed

__all__ = ["graph_key", "keyed", "open_source", "reads_views", "recorded_image_roots"]

KeyedGraph = Tuple[str, GbcGraph]


def open_source(path: Union[str, Path], validate: bool = False,
                on_damaged: Optional[Callable[[str, str], None]] = None,
                view: Union[bool, str] = False) -> Tuple[Iterator[KeyedGraph], Optional[int]]:
    """``(pairs, total)`` for a store or a folder of store shards (``total`` = number of graphs)
    or a graph file (``.jsonl``, ``.json``, ``.parquet``; ``total`` None).

    Graphs are not validated by default: an export is a view and needs only parseable
    records (``validate=True`` checks every graph's invariants, about twice as slow). The
    source is closed when ``pairs`` is exhausted or closed. With ``view`` (see ``reads_views``)
    a store's graphs come as read-only ``GraphView``s, about three times faster to read.
    """
    from gbc.store.reader import known_count, open_graphs

    reader = open_graphs(path, validate=validate, readahead=True)  # every graph is read, in key order
    try:
        total = known_count(reader)
    except BaseException:
        reader.close()
        raise
    return _read_and_close(reader, validate, on_damaged, view), total


def recorded_image_roots(path: Union[str, Path]) -> List[str]:
    """The input folders a store (or each of its shards) recorded at annotate time (meta
    ``image_roots``, absolute paths); empty for graph files and stores that recorded none."""
    from gbc.store.reader import open_graphs, recorded_image_roots as roots_of

    path = Path(path)
    if not path.exists() or not (path.is_dir() or path.suffix == ".lmdb"):
        return []
    with open_graphs(path) as reader:
        return roots_of(reader)


def reads_views(options, validate: bool = False, rewrites_graphs: bool = False) -> Union[bool, str]:
    """How an export with ``options`` reads a store's graphs: the ``view`` of ``open_source``.

    Views carry every field a caption strategy, a caption filter or an image crop reads. When
    the output holds whole graphs (WebDataset samples with the graph's JSON), they are read
    with ``"json"``: each view also carries the graph's lossless JSON, extra fields included,
    made from the stored bytes. Full graphs (False) are read when every graph is validated, or
    when something rewrites the graphs before they are exported (score filters read and drop
    caption scores, which views leave out).
    """
    if validate or rewrites_graphs:
        return False
    return "json" if options.fmt == "wds" and options.graph_json != "none" else True


def _read_and_close(reader, validate: bool, on_damaged=None, view: Union[bool, str] = False) -> Iterator[KeyedGraph]:
    from gbc.store.reader import iter_graphs

    try:
        # on_damaged: graphs that cannot be decoded are reported there and skipped
        yield from iter_graphs(reader, validate=validate, on_damaged=on_damaged, view=view)
    finally:
        reader.close()
