"""Read-only views of stored graphs: msgspec structs decoded straight from a store's bytes.

A ``GraphView`` has the fields and the queries of a ``GbcGraph`` (``vertices``, ``root``,
``captions()``, ``bfs_order()``, ...) but is built by msgspec in C, about three times faster
than pydantic builds a ``GbcGraph``. Reading a store's graphs as views is safe because the
store validated every graph when it wrote it, and each value's checksum is verified before it
is decoded: damaged bytes still raise ``StoreCorruptError``. msgspec still checks every type
(strings, numbers, vertex and caption labels) while decoding.

What a view leaves out: fields that are not part of the schema (a record's extra keys) are
not kept, and a view is not meant to be changed. ``store[key]`` gives the full, lossless
``GbcGraph``; ``view.to_graph()`` builds one from the view's fields. Views read with
``view="json"`` also carry the graph's lossless JSON (``view.lossless_json()``), made from the
stored bytes without parsing the graph, for writers of whole graphs.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Dict, List, Literal, Optional, Tuple

import msgspec

from gbc.schemas.bbox import BoxQueries
from gbc.schemas.graph import GbcGraph, GraphQueries, index_vertices

_VertexLabel = Literal["image", "entity", "composition", "relation"]
_DescLabel = Literal["short", "detail", "original", "relation", "composition", "hardcode", "bagofwords"]


class BboxView(BoxQueries, msgspec.Struct, gc=False, omit_defaults=True):
    """A box relative to the image, as ``Bbox`` (``left, top, right, bottom``, ``confidence``)."""

    left: float
    top: float
    right: float
    bottom: float
    confidence: Optional[float] = None


class EdgeSpanView(msgspec.Struct, gc=False, omit_defaults=True):
    desc_index: int
    start: int
    end: int


class EdgeView(msgspec.Struct, gc=False, omit_defaults=True):
    """An edge ``source -> target`` named by ``text``."""

    source: str
    text: str
    target: str
    span: Optional[EdgeSpanView] = None

    def key(self) -> Tuple[str, str, str]:
        return (self.source, self.text, self.target)


class DescriptionView(msgspec.Struct, gc=False, omit_defaults=True):
    """A caption: ``text`` and ``label`` (the scores of the "full" layout are left out)."""

    text: str
    label: _DescLabel
    full_label: Optional[str] = None


class VertexView(msgspec.Struct, gc=False, omit_defaults=True):
    """A vertex with its captions and edges; ``in_edges`` are rebuilt from the out-edges."""

    vertex_id: str
    bbox: BboxView
    label: _VertexLabel
    descs: List[DescriptionView] = []
    in_edges: List[EdgeView] = []
    out_edges: List[EdgeView] = []
    sub_masks: Optional[List[str]] = None
    super_masks: Optional[List[str]] = None

    @property
    def is_leaf(self) -> bool:
        return not self.out_edges

    def captions(self, desc_labels: Optional[List[str]] = None) -> List[str]:
        wanted = None if desc_labels is None else set(desc_labels)
        return [d.text for d in self.descs if wanted is None or d.label in wanted]


class GraphView(GraphQueries, msgspec.Struct, dict=True, omit_defaults=True):
    """A read-only graph decoded from a store (see the module's docstring)."""

    vertices: List[VertexView] = []
    img_url: Optional[str] = None
    img_path: Optional[str] = None
    original_caption: Optional[str] = None
    short_caption: Optional[str] = None
    detail_caption: Optional[str] = None
    img_size: Optional[Tuple[int, int]] = None
    mask_inside_threshold: Optional[float] = None

    @cached_property
    def vertex_dict(self) -> Dict[str, VertexView]:
        return index_vertices(self.vertices)

    def to_dict(self) -> Dict[str, Any]:
        """The view's fields as plain JSON values (fields at their default, None or [], are left out)."""
        return msgspec.to_builtins(self)

    def to_graph(self) -> GbcGraph:
        """A ``GbcGraph`` of the view's fields (validated by pydantic; extra keys were not kept)."""
        return GbcGraph.model_validate(self.to_dict())

    def lossless_json(self) -> bytes:
        """The stored graph's lossless JSON, the bytes ``store[key].to_json()`` gives (extra
        fields included), for views read with ``view="json"``; ``ValueError`` otherwise."""
        json = self.__dict__.get(_JSON)
        if json is None:
            raise ValueError('this view was read without its JSON: read it with view="json", or use store[key].to_json()')
        return json

    def __reduce__(self):
        # pickling a struct keeps its fields only: the JSON goes with it (to export workers)
        cls, args = super().__reduce__()[:2]
        json = self.__dict__.get(_JSON)
        return (cls, args) if json is None else (_view_with_json, (cls, args, json))


#: Where a view read with ``view="json"`` keeps its JSON (an instance attribute, not a field).
_JSON = "_lossless_json"


def wants_json(view: Any) -> bool:
    """Whether the ``view`` argument of a store's ``items`` asks for views with their JSON
    (``"json"``); any other string is refused rather than read as ``True``."""
    if isinstance(view, str) and view != "json":
        raise ValueError(f'view must be False, True or "json"; got {view!r}')
    return view == "json"


def with_json(view: GraphView, json: bytes) -> GraphView:
    """``view``, carrying ``json`` as its ``lossless_json()``."""
    view.__dict__[_JSON] = json
    return view


def _view_with_json(cls, args, json):
    return with_json(cls(*args), json)


_DECODER = msgspec.json.Decoder(GraphView)


def decode_graph_view(payload: bytes) -> GraphView:
    """The view of a graph's JSON; raises ``msgspec.ValidationError`` / ``DecodeError``."""
    return _DECODER.decode(payload)


def in_edge_lists(vertices: List[Any], sort_by_source: bool) -> List[List[Any]]:
    """The in-edges of each vertex (in vertex order) rebuilt from the out-edges, which the
    store writes alone: in the order of their source vertices, or stably sorted by source id.
    The same edge objects as the out-edges (of a ``GbcGraph`` or of a ``GraphView``).

    Raises ``ValueError`` when that cannot be done (duplicate ids, an edge to a missing vertex).
    """
    lists: Dict[str, List[Any]] = {v.vertex_id: [] for v in vertices}
    if len(lists) != len(vertices):
        raise ValueError("in-edges cannot be rebuilt: duplicate vertex ids")
    try:
        for v in vertices:
            for e in v.out_edges:
                lists[e.target].append(e)
    except KeyError as exc:
        raise ValueError(f"in-edges cannot be rebuilt: an edge points to missing vertex {exc}") from None
    if sort_by_source:
        for ins in lists.values():
            if len(ins) > 1:
                ins.sort(key=_source)
    return list(lists.values())


def restore_view_in_edges(view: GraphView, sort_by_source: bool) -> None:
    """Fill every vertex's ``in_edges`` from the out-edges (see ``in_edge_lists``)."""
    for v, ins in zip(view.vertices, in_edge_lists(view.vertices, sort_by_source)):
        v.in_edges = ins


def _source(e: Any) -> str:
    return e.source
