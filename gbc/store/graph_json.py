"""A stored graph's lossless JSON (``GbcGraph.to_json()``) made from its payload, without a graph.

A store keeps each graph as its lossless JSON, less the in-edges when the out-edges imply them
(see ``gbc.store.codec``). Writing whole graphs out (WebDataset samples with the graph) used to
parse that payload into a ``GbcGraph`` and serialise it again. ``lossless_json`` gives the same
bytes by putting each vertex's in-edges back into the payload: the JSON of an in-edge is the
JSON of the out-edge it mirrors (the store only leaves in-edges out when they serialise exactly
like those out-edges), so it is copied from the payload, as is everything else. The graph's
``GraphView`` (decoded anyway by a reader) tells which out-edge each in-edge is; msgspec finds
the pieces of the payload and joins them, and no value is parsed or formatted again.

Payloads this cannot reproduce byte for byte raise ``NotSpliceable``, and the caller parses
the graph instead: an object key outside plain printable ASCII (its escaping would be
re-encoded here), or a payload that is not the shape the store writes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Union

import msgspec

from gbc.schemas.graph import Vertex

__all__ = ["NotSpliceable", "lossless_json"]

#: Modes of ``gbc.store.codec`` (repeated here: that module imports this one).
_EXPLICIT, _SOURCE_ORDER, _SORTED_BY_SOURCE = 0, 1, 2

_Raw = msgspec.Raw
_object = msgspec.json.Decoder(Dict[str, _Raw]).decode
_items = msgspec.json.Decoder(List[_Raw]).decode
_encode = msgspec.json.Encoder().encode


class NotSpliceable(ValueError):
    """The payload cannot be turned into the graph's JSON here; parse the graph instead."""


# A vertex as its fields' JSON, declared in the order pydantic writes them (absent ones are
# left out again); a vertex with fields outside the schema is refused (``NotSpliceable``).
_VertexJson = msgspec.defstruct(
    "_VertexJson", [(name, Union[_Raw, msgspec.UnsetType], msgspec.UNSET) for name in Vertex.model_fields],
    forbid_unknown_fields=True, omit_defaults=True,
)
_vertices_json = msgspec.json.Decoder(List[_VertexJson]).decode


def lossless_json(payload: bytes, mode: int, view: Any) -> bytes:
    """``GbcGraph.to_json()`` of the graph stored as ``(payload, in-edge mode)``; ``view`` is
    the ``GraphView`` decoded from that payload, its in-edges rebuilt (it tells which out-edge
    each in-edge is)."""
    if mode == _EXPLICIT:
        return payload  # the payload is that JSON already
    if mode not in (_SOURCE_ORDER, _SORTED_BY_SOURCE):
        raise NotSpliceable(f"unknown in-edge mode {mode}")
    try:
        graph = _object(payload)
        vertices = _vertices_json(graph["vertices"])
        # the JSON of each out-edge, by the identity of its edge in the view
        edge_json: Dict[int, bytes] = {}
        for vertex, seen in zip(vertices, view.vertices):
            if vertex.out_edges is not msgspec.UNSET:
                raws = _items(vertex.out_edges)
                if len(raws) != len(seen.out_edges):
                    raise NotSpliceable("the view does not match the payload")
                edge_json.update(zip(map(id, seen.out_edges), map(bytes, raws)))
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
        raise NotSpliceable(f"not a stored graph payload: {exc}") from None
    if len(vertices) != len(view.vertices):
        raise NotSpliceable("the view does not match the payload")
    for key in graph:
        if not (key.isascii() and key.isprintable()) or '"' in key or "\\" in key:
            raise NotSpliceable(f"graph field {key!r} would be escaped differently")
    try:
        for vertex, seen in zip(vertices, view.vertices):
            vertex.in_edges = _Raw(b"[" + b",".join([edge_json[id(e)] for e in seen.in_edges]) + b"]")
    except KeyError:
        raise NotSpliceable("an in-edge of the view is none of its out-edges") from None
    graph["vertices"] = _Raw(_encode(vertices))
    return _encode(graph)
