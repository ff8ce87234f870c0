"""Where exports read graphs from: an LMDB store, a graph file, or any iterable of graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple, Union

from gbc.schemas import GbcGraph

KeyedGraph = Tuple[str, GbcGraph]


def graph_key(graph: GbcGraph, index: int) -> str:
    """The key of a graph read from a file: its image path, else its URL, else its position."""
    return graph.image_key or f"{index:09d}"


def keyed(graphs: Iterable[Union[GbcGraph, KeyedGraph]]) -> Iterator[KeyedGraph]:
    """``(key, graph)`` pairs from graphs or pairs (pairs pass through unchanged)."""
    for i, item in enumerate(graphs):
        if isinstance(item, GbcGraph):
            yield graph_key(item, i), item
        else:
            key, graph = item
            yield str(key), graph


def _is_store(path: Path) -> bool:
    return path.suffix == ".lmdb" or (path.is_dir() and (path / "data.mdb").exists())


def open_source(path: Union[str, Path]) -> Tuple[Iterator[KeyedGraph], Optional[int]]:
    """``(pairs, total)`` for a store (``total`` = its size) or a graph file (``total`` None)."""
    import gbc

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or store: {path}")
    if _is_store(path):
        store = gbc.open_store(str(path))
        return _store_items(store), len(store)
    return keyed(_read_file(path)), None


def _store_items(store) -> Iterator[KeyedGraph]:
    try:
        for key, graph in store.items():
            yield key, graph
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def _read_file(path: Path) -> Iterator[GbcGraph]:
    try:
        from gbc.store import files  # noqa: F401
    except ImportError:
        files = None
    if files is not None:
        import gbc

        yield from gbc.read_graphs(str(path))
        return
    # Without the store package only JSON Lines and JSON arrays can be read.
    if path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield GbcGraph.from_json(line)
    elif path.suffix == ".json":
        import json

        with open(path, "rb") as fh:
            for record in json.load(fh):
                yield GbcGraph.from_dict(record)
    else:
        raise ValueError(f"cannot read graphs from {path}: expected .jsonl or .json")
