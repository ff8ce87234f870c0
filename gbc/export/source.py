"""Where exports read graphs from: an LMDB store, a graph file, or any iterable of graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

from gbc.schemas import GbcGraph
from gbc.store.records import graph_key

KeyedGraph = Tuple[str, GbcGraph]


def keyed(graphs: Iterable[Union[GbcGraph, KeyedGraph]]) -> Iterator[KeyedGraph]:
    """``(key, graph)`` pairs from graphs or pairs (pairs pass through unchanged)."""
    for i, item in enumerate(graphs):
        if isinstance(item, GbcGraph):
            yield graph_key(item, i), item
        else:
            key, graph = item
            yield str(key), graph


def open_source(path: Union[str, Path], validate: bool = False,
                on_damaged: Optional[Callable[[str, str], None]] = None) -> Tuple[Iterator[KeyedGraph], Optional[int]]:
    """``(pairs, total)`` for a store or a folder of store shards (``total`` = number of graphs)
    or a graph file (``.jsonl``, ``.json``, ``.parquet``; ``total`` None).

    Graphs are not validated by default: an export is a view and needs only parseable
    records (``validate=True`` checks every graph's invariants, about twice as slow).
    """
    from gbc.store.files import read_graphs
    from gbc.store.shards import open_store

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or store: {path}")
    if path.is_dir() or path.suffix == ".lmdb":
        store = open_store(str(path))
        return _store_items(store, validate, on_damaged), len(store)
    return keyed(read_graphs(str(path), validate=validate)), None


def recorded_image_roots(path: Union[str, Path]) -> List[str]:
    """The input folders a store (or each of its shards) recorded at annotate time (meta
    ``image_roots``, absolute paths); empty for graph files and stores that recorded none."""
    from gbc.store.shards import open_store

    path = Path(path)
    if not path.exists() or not (path.is_dir() or path.suffix == ".lmdb"):
        return []
    from gbc.store.lmdb_store import GraphStore

    store = open_store(str(path))
    try:
        paths = [str(p) for p in getattr(store, "paths", None) or [path]]  # a shard view lists its stores
    finally:
        store.close()
    roots: List[str] = []
    for one in paths:
        with GraphStore(one, readonly=True) as shard:
            for root in (shard.meta or {}).get("image_roots") or []:
                if isinstance(root, str) and root not in roots:
                    roots.append(root)
    return roots


def _store_items(store, validate: bool, on_damaged=None) -> Iterator[KeyedGraph]:
    try:
        # on_damaged: graphs that cannot be decoded are reported there and skipped
        for key, graph in (store.items(on_damaged=on_damaged) if on_damaged else store.items()):
            if validate:
                graph.validate(strict=True, name=repr(key))
            yield key, graph
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
