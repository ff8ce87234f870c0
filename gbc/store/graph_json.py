"""A stored graph's lossless JSON (``GbcGraph.to_json()``) made from its payload, without a graph.

A store keeps each graph as its lossless JSON, less the in-edges when the out-edges imply them
(see ``gbc.store.codec``). Writing whole graphs out (WebDataset samples with the graph) used to
parse that payload into a ``GbcGraph`` and serialise it again. ``view_with_lossless_json``
gives the same bytes by putting each vertex's in-edges back into the payload: the JSON of an
in-edge is the JSON of the out-edge it mirrors (the store only leaves in-edges out when they
serialise exactly like those out-edges), so it is copied from the payload, as is everything
else. The payload is decoded twice by msgspec, as a ``GraphView`` and as the JSON of each
field and edge; one walk over the out-edges rebuilds the view's in-edges and their JSON
together, and no value is parsed or formatted again.

Payloads this cannot reproduce byte for byte raise ``NotSpliceable``, and the caller parses
the graph instead: a graph or a vertex with fields outside the schema (field names are
written again here), or a payload that is not the shape the store writes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

import msgspec

from gbc.schemas.graph import GbcGraph, Vertex
from gbc.schemas.views import decode_graph_view

__all__ = ["NotSpliceable", "view_with_lossless_json"]

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


def view_with_lossless_json(payload: bytes, sort_by_source: bool) -> Tuple[Any, bytes]:
    """``(view, json)`` of a payload stored without its in-edges (one whose in-edge mode is not
    explicit: with explicit in-edges the payload is the JSON already): the ``GraphView`` with
    its in-edges rebuilt, as ``restore_view_in_edges`` rebuilds them, and the graph's
    ``GbcGraph.to_json()``. One walk over the edges fills both: each in-edge of the view and
    its JSON are the out-edge it mirrors and that out-edge's JSON.

    Raises ``NotSpliceable`` when the JSON cannot be made here, and ``msgspec`` errors or
    ``ValueError`` (duplicate vertex ids, an edge to a missing vertex) when the payload is not
    a valid graph, as reading the view alone would."""
    view = decode_graph_view(payload)
    seen_vertices = view.vertices
    try:
        graph = _graph_json(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise NotSpliceable(f"not a stored graph payload: {exc}") from None
    vertices = graph.vertices
    if vertices is msgspec.UNSET or len(vertices) != len(seen_vertices):
        raise NotSpliceable("the view does not match the payload")
    # per target vertex: its in-edges in the view and their JSON, in source-vertex order
    ins: Dict[str, Tuple[List[Any], List[_Raw]]] = {v.vertex_id: ([], []) for v in seen_vertices}
    if len(ins) != len(seen_vertices):
        raise ValueError("in-edges cannot be rebuilt: duplicate vertex ids")
    unset = msgspec.UNSET
    try:
        for vertex, seen in zip(vertices, seen_vertices):
            raws = vertex.out_edges
            if raws is unset:
                if seen.out_edges:
                    raise NotSpliceable("the view does not match the payload")
                continue
            edges = seen.out_edges
            if len(raws) != len(edges):
                raise NotSpliceable("the view does not match the payload")
            for edge, raw in zip(edges, raws):
                pair = ins[edge.target]
                pair[0].append(edge)
                pair[1].append(raw)
    except KeyError as exc:
        raise ValueError(f"in-edges cannot be rebuilt: an edge points to missing vertex {exc}") from None
    for vertex, seen, (edges, raws) in zip(vertices, seen_vertices, ins.values()):
        if sort_by_source and len(edges) > 1:
            # stably by source id, the edges and their JSON alike
            order = sorted(range(len(edges)), key=[e.source for e in edges].__getitem__)
            edges = [edges[i] for i in order]
            raws = [raws[i] for i in order]
        seen.in_edges = edges
        vertex.in_edges = raws  # encoded as a list
    return view, _encode(graph)
