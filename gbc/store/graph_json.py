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
the graph instead: a graph or a vertex with fields outside the schema (field names are
written again here), or a payload that is not the shape the store writes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Union

import msgspec

from gbc.schemas.graph import GbcGraph, Vertex

__all__ = ["NotSpliceable", "lossless_json"]

_Raw = msgspec.Raw
_encode = msgspec.json.Encoder().encode


class NotSpliceable(ValueError):
    """The payload cannot be turned into the graph's JSON here; parse the graph instead."""


def _fields_json(name: str, fields, **kinds):
    """A struct of the JSON of each of ``fields``, declared in the order pydantic writes them
    (absent ones are left out again); fields outside the schema are refused (``NotSpliceable``)."""
    return msgspec.defstruct(name, [(field, Union[kinds.get(field, _Raw), msgspec.UnsetType], msgspec.UNSET)
                                    for field in fields], forbid_unknown_fields=True, omit_defaults=True)


# out-edges as the list of each edge's JSON (pydantic writes lists without spaces: re-joined
# with commas, they are the same bytes)
_VertexJson = _fields_json("_VertexJson", Vertex.model_fields, out_edges=List[_Raw])
_GraphJson = _fields_json("_GraphJson", GbcGraph.model_fields, vertices=List[_VertexJson])
_graph_json = msgspec.json.Decoder(_GraphJson).decode


def lossless_json(payload: bytes, view: Any) -> bytes:
    """``GbcGraph.to_json()`` of a graph stored without its in-edges (a payload whose in-edge
    mode is not explicit: one with explicit in-edges is that JSON already); ``view`` is the
    ``GraphView`` decoded from that payload, its in-edges rebuilt (it tells which out-edge each
    in-edge is)."""
    seen_vertices = view.vertices
    try:
        graph = _graph_json(payload)
        vertices = graph.vertices
        if vertices is msgspec.UNSET or len(vertices) != len(seen_vertices):
            raise NotSpliceable("the view does not match the payload")
        # the JSON of each out-edge, by the identity of its edge in the view
        edge_json: Dict[int, _Raw] = {}
        unset = msgspec.UNSET
        for vertex, seen in zip(vertices, seen_vertices):
            raws = vertex.out_edges
            if raws is not unset:
                if len(raws) != len(seen.out_edges):
                    raise NotSpliceable("the view does not match the payload")
                edge_json.update(zip(map(id, seen.out_edges), raws))
        for vertex, seen in zip(vertices, seen_vertices):
            vertex.in_edges = [edge_json[id(e)] for e in seen.in_edges]  # encoded as a list
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
        raise NotSpliceable(f"not a stored graph payload: {exc}") from None
    except KeyError:
        raise NotSpliceable("an in-edge of the view is none of its out-edges") from None
    return _encode(graph)
