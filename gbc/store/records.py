"""One graph record from a file: parsing it, and the error a damaged or invalid record raises.

Kept apart from the format readers (``files``, ``parquet_io``) so that each of them depends on
this module and none on another.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Tuple, Union

from gbc.errors import GbcError, describe_validation_error
from gbc.schemas.graph import GbcGraph

__all__ = ["GraphFormatError", "graph_key", "keyed", "parse_graph_record"]


class GraphFormatError(GbcError, ValueError):
    """A graph file cannot be read or written: unknown format, missing file, damaged or invalid record."""


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
        raise GraphFormatError(f"{where}: not a valid graph: {describe_validation_error(exc, limit=1)}") from None


def graph_key(graph: GbcGraph, index: int) -> str:
    """The key of a graph read from a file: its image path, else its URL, else ``#<index>``."""
    return graph.image_key or f"#{index}"


def keyed(graphs: Iterable[Union[GbcGraph, Tuple[str, GbcGraph]]]) -> Iterator[Tuple[str, GbcGraph]]:
    """``(key, graph)`` pairs from graphs (named by :func:`graph_key`) or pairs (passed through)."""
    for i, item in enumerate(graphs):
        if isinstance(item, GbcGraph):
            yield graph_key(item, i), item
        else:
            key, graph = item
            yield str(key), graph
