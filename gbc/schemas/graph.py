"""The GBC graph: vertices with captions, edges labelled by the phrase that names the child.

A graph read from the released data (GBC10M records, or the reference "full" layout with
``sub_masks``/``super_masks``, caption scores and ``img_size``) is written back unchanged:
``GbcGraph.from_dict(d).to_dict() == d``. Fields that were absent stay absent.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from gbc.errors import GbcError
from gbc.schemas.bbox import Bbox
from gbc.schemas.description import Description
from gbc.schemas.geometry import mask_lists

VertexLabel = Literal["image", "entity", "composition", "relation"]
VERTEX_LABELS: tuple[str, ...] = ("image", "entity", "composition", "relation")

Layout = Literal["auto", "full", "gbc10m"]

_GBC10M_GRAPH_FIELDS = ("vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption")


_DEFAULTED_VERTEX_LISTS = ("descs", "in_edges", "out_edges")


def child_id(parent_id: str, name: str) -> str:
    """Id grammar of the released graphs: ``name`` under the image, ``parent_name`` below."""
    return name if parent_id == "" else f"{parent_id}_{name}"


class GraphValidationError(GbcError, ValueError):
    """Raised by ``GbcGraph.validate(strict=True)``; ``problems`` lists every violation."""

    def __init__(self, problems: Sequence[str], name: str = "graph"):
        self.problems = list(problems)
        super().__init__(f"{name} is invalid: " + "; ".join(self.problems))


class EdgeSpan(BaseModel):
    """Where the edge's phrase occurs in the parent's captions (``descs[desc_index].text[start:end]``)."""

    desc_index: int
    start: int
    end: int


class Edge(BaseModel):
    """A directed edge ``source -> target`` named by ``text``, the phrase for the child."""

    model_config = ConfigDict(extra="allow")

    source: str
    text: str
    target: str
    span: Optional[EdgeSpan] = None

    def key(self) -> Tuple[str, str, str]:
        return (self.source, self.text, self.target)


class Vertex(BaseModel):
    """A region of the image with its captions and edges (each edge is kept on both ends)."""

    model_config = ConfigDict(extra="allow")

    vertex_id: str
    bbox: Bbox
    label: VertexLabel
    # default_factory rather than a ``[]`` default: pydantic deep-copies a mutable default for
    # every vertex that lacks the field, which costs about a microsecond each when parsing.
    descs: List[Description] = Field(default_factory=list)
    in_edges: List[Edge] = Field(default_factory=list)
    out_edges: List[Edge] = Field(default_factory=list)
    sub_masks: Optional[List[str]] = None
    super_masks: Optional[List[str]] = None


    @property
    def is_leaf(self) -> bool:
        return not self.out_edges

    def captions(self, desc_labels: Optional[Iterable[str]] = None) -> List[str]:
        wanted = None if desc_labels is None else set(desc_labels)
        return [d.text for d in self.descs if wanted is None or d.label in wanted]


def index_vertices(vertices: Iterable[Any]) -> Dict[str, Any]:
    """``vertex id -> vertex``; of several vertices with one id, the first."""
    index: Dict[str, Any] = {}
    for v in vertices:
        index.setdefault(v.vertex_id, v)
    return index


class GraphQueries:
    """Lookup and traversal shared by ``GbcGraph`` and the read-only ``GraphView``.

    Needs ``vertices`` (objects with ``vertex_id``, ``label``, ``descs``, ``in_edges`` and
    ``out_edges``) and ``vertex_dict`` (id -> vertex, first of duplicate ids).
    """

    def vertex(self, vertex_id: str) -> Vertex:
        try:
            return self.vertex_dict[vertex_id]
        except KeyError:
            raise KeyError(f"no vertex {vertex_id!r} in this graph") from None

    def __contains__(self, vertex_id: object) -> bool:
        return vertex_id in self.vertex_dict

    @property
    def root(self) -> Vertex:
        """The image vertex (the first one when the graph is invalid and has several)."""
        for v in self.vertices:
            if v.label == "image":
                return v
        raise ValueError("graph has no image vertex")

    @property
    def roots(self) -> List[Vertex]:
        """Image vertices first, then any other vertex without in-edges."""
        images = [v for v in self.vertices if v.label == "image"]
        others = [v for v in self.vertices if v.label != "image" and not v.in_edges]
        return images + others

    @property
    def leaves(self) -> List[Vertex]:
        return [v for v in self.vertices if not v.out_edges]

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_edges(self) -> int:
        return sum(len(v.out_edges) for v in self.vertices)

    @property
    def n_captions(self) -> int:
        return sum(len(v.descs) for v in self.vertices)

    @property
    def image_key(self) -> Optional[str]:
        """The path of the image, else its URL."""
        return self.img_path or self.img_url

    # ------------------------------------------------------------------ navigation
    def children(self, vertex_id: str) -> List[Tuple[Vertex, str]]:
        """``(child, edge text)`` for each out-edge of ``vertex_id`` whose target exists."""
        index = self.vertex_dict
        return [(index[e.target], e.text) for e in self.vertex(vertex_id).out_edges if e.target in index]

    def parents(self, vertex_id: str) -> List[Tuple[Vertex, str]]:
        """``(parent, edge text)`` for each in-edge of ``vertex_id`` whose source exists."""
        index = self.vertex_dict
        return [(index[e.source], e.text) for e in self.vertex(vertex_id).in_edges if e.source in index]

    def _child_ids(self, vertex_id: str) -> List[str]:
        seen: Dict[str, None] = {}
        index = self.vertex_dict
        for e in index[vertex_id].out_edges:
            if e.target in index:
                seen.setdefault(e.target)
        return list(seen)

    def descendants(self, vertex_id: str) -> List[str]:
        """Ids reachable from ``vertex_id`` (excluding it), in BFS order."""
        order = self._bfs([vertex_id])
        return [v for v in order if v != vertex_id]

    def _bfs(self, starts: Sequence[str]) -> List[str]:
        seen = set(starts)
        order: List[str] = []
        queue = deque(starts)
        while queue:
            vid = queue.popleft()
            order.append(vid)
            for child in self._child_ids(vid):
                if child not in seen:
                    seen.add(child)
                    queue.append(child)
        return order

    def bfs_order(self) -> List[str]:
        """Vertex ids level by level from the roots; unreachable vertices are appended."""
        order = self._bfs([v.vertex_id for v in self.roots])
        return _append_missing(order, self.vertices)

    def dfs_order(self) -> List[str]:
        """Pre-order depth-first from the roots, children in edge order."""
        seen: set = set()
        order: List[str] = []
        for root in self.roots:
            stack = [root.vertex_id]
            while stack:
                vid = stack.pop()
                if vid in seen:
                    continue
                seen.add(vid)
                order.append(vid)
                stack.extend(reversed([c for c in self._child_ids(vid) if c not in seen]))
        return _append_missing(order, self.vertices)

    def topological_order(self) -> List[str]:
        """Parents before children (Kahn's algorithm, ties in vertex order). Raises on a cycle."""
        indegree = {v.vertex_id: 0 for v in self.vertices}
        for v in self.vertices:
            for child in self._child_ids(v.vertex_id):
                indegree[child] += 1
        queue = deque(vid for vid, d in indegree.items() if d == 0)
        order = []
        while queue:
            vid = queue.popleft()
            order.append(vid)
            for child in self._child_ids(vid):
                indegree[child] -= 1
                if indegree[child] == 0:
                    queue.append(child)
        if len(order) != len(indegree):
            raise ValueError("graph has a cycle; no topological order exists")
        return order

    def depths(self) -> Dict[str, int]:
        """Depth of each reachable vertex: the BFS level of its first visit (roots are 0)."""
        result: Dict[str, int] = {}
        frontier = [v.vertex_id for v in self.roots]
        for vid in frontier:
            result[vid] = 0
        level = 0
        while frontier:
            level += 1
            nxt = []
            for vid in frontier:
                for child in self._child_ids(vid):
                    if child not in result:
                        result[child] = level
                        nxt.append(child)
            frontier = nxt
        return result

    @property
    def depth(self) -> int:
        """The largest vertex depth (0 for a graph with only the image vertex)."""
        d = self.depths()
        return max(d.values()) if d else 0

    def captions(
        self,
        vertex_labels: Optional[Iterable[str]] = None,
        desc_labels: Optional[Iterable[str]] = None,
        order: Literal["graph", "bfs", "dfs", "topological"] = "graph",
    ) -> List[Tuple[Vertex, Description]]:
        """``(vertex, description)`` pairs, filtered by vertex and description labels."""
        vl = None if vertex_labels is None else set(vertex_labels)
        dl = None if desc_labels is None else set(desc_labels)
        if order == "graph":
            vertices: Iterable[Vertex] = self.vertices
        else:
            ids = {"bfs": self.bfs_order, "dfs": self.dfs_order, "topological": self.topological_order}[order]()
            vertices = (self.vertex_dict[i] for i in ids)
        out = []
        for v in vertices:
            if vl is not None and v.label not in vl:
                continue
            for d in v.descs:
                if dl is None or d.label in dl:
                    out.append((v, d))
        return out


class GbcGraph(GraphQueries, BaseModel):
    """A graph-based caption of one image.

    >>> g = GbcGraph(vertices=[Vertex(vertex_id="", bbox=Bbox.full(), label="image",
    ...     descs=[Description(text="A dog.", label="short")])], img_path="dog.jpg")
    >>> g.root.vertex_id, g.n_vertices, g.validate()
    ('', 1, [])
    """

    model_config = ConfigDict(extra="allow")

    vertices: List[Vertex] = []
    img_url: Optional[str] = None
    img_path: Optional[str] = None
    original_caption: Optional[str] = None
    short_caption: Optional[str] = None
    detail_caption: Optional[str] = None
    img_size: Optional[Tuple[int, int]] = None
    mask_inside_threshold: Optional[float] = None

    _index: Optional[Dict[str, Vertex]] = PrivateAttr(default=None)

    def mark_filled_fields(self) -> "GbcGraph":
        """Count default lists that were filled in place (``v.out_edges.append(...)``) as set.

        ``to_dict("auto")`` writes only the fields that were read or set; pydantic does not see
        in-place changes, so without this edges appended to a defaulted list would be dropped.
        Lists still empty and never set stay absent, so sparse records round-trip unchanged.
        """
        if self.vertices:
            self.__pydantic_fields_set__.add("vertices")
        for v in self.vertices:
            fields_set = v.__pydantic_fields_set__
            for name in _DEFAULTED_VERTEX_LISTS:
                if name not in fields_set and getattr(v, name):
                    fields_set.add(name)
        return self

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "GbcGraph":
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, data: bytes | str) -> "GbcGraph":
        return cls.model_validate_json(data)

    def to_dict(self, layout: Layout = "auto") -> Dict[str, Any]:
        """Plain JSON-ready dict.

        ``auto`` writes exactly the fields that were read or set (lossless round trip);
        ``full`` writes every field; ``gbc10m`` keeps only the fields of the released GBC10M
        records.
        """
        if layout == "auto":
            return self.mark_filled_fields().model_dump(mode="json", exclude_unset=True)
        if layout == "full":
            return self.model_dump(mode="json")
        if layout == "gbc10m":
            data = self.model_dump(mode="json")
            out = {k: data.get(k) for k in _GBC10M_GRAPH_FIELDS}
            out["vertices"] = [_strip_vertex(v) for v in data["vertices"]]
            return out
        raise ValueError(f"unknown layout {layout!r}; expected auto, full or gbc10m")

    def to_json(self, layout: Layout = "auto") -> bytes:
        if layout == "auto":
            return self.mark_filled_fields().model_dump_json(exclude_unset=True).encode()
        import msgspec

        return msgspec.json.encode(self.to_dict(layout))

    # ------------------------------------------------------------------ lookup
    def invalidate_caches(self) -> None:
        """Call after changing ``vertices`` in place."""
        self._index = None

    @property
    def vertex_dict(self) -> Dict[str, Vertex]:
        if self._index is None or len(self._index) != len(self.vertices):
            self._index = index_vertices(self.vertices)
        return self._index

    def to_networkx(self):
        """A ``networkx.MultiDiGraph``: vertex attributes ``label``, ``bbox``, ``descs``; edge ``text``."""
        import networkx as nx

        g = nx.MultiDiGraph(img_path=self.img_path, img_url=self.img_url)
        for v in self.vertices:
            g.add_node(
                v.vertex_id,
                label=v.label,
                bbox=v.bbox.to_xyxy(),
                confidence=v.bbox.confidence,
                descs=[d.model_dump(exclude_unset=True) for d in v.descs],
            )
        for v in self.vertices:
            for e in v.out_edges:
                attrs = {"text": e.text}
                if e.span is not None:
                    attrs["span"] = e.span.model_dump()
                g.add_edge(e.source, e.target, key=e.text, **attrs)
        return g

    # ------------------------------------------------------------------ invariants
    def validate(self, strict: bool = False, name: Optional[str] = None) -> List[str]:  # type: ignore[override]
        """List every violated invariant; with ``strict=True`` raise ``GraphValidationError`` instead."""
        problems = find_problems(self)
        if strict and problems:
            raise GraphValidationError(problems, name or repr(self.image_key or "graph"))
        return problems

    def compute_masks(self, threshold: Optional[float] = None) -> None:
        """Fill ``sub_masks``/``super_masks``: ids of vertices whose box is mostly inside / around this one."""
        thr = threshold if threshold is not None else (self.mask_inside_threshold or 0.85)
        vertices = self.vertices
        subs, supers = mask_lists([v.bbox.to_xyxy() for v in vertices], thr)
        for v, sub, sup in zip(vertices, subs, supers):
            v.sub_masks = sorted(vertices[k].vertex_id for k in sub)
            v.super_masks = sorted(vertices[k].vertex_id for k in sup)


def _append_missing(order: List[str], vertices: Sequence[Vertex]) -> List[str]:
    if len(order) == len(vertices):
        return order
    seen = set(order)
    return order + [v.vertex_id for v in vertices if v.vertex_id not in seen]


def _strip_vertex(v: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v[k] for k in ("vertex_id", "bbox", "label", "descs", "in_edges", "out_edges")}
    out["descs"] = [{"text": d["text"], "label": d["label"]} for d in v["descs"]]
    out["in_edges"] = [{k: e[k] for k in ("source", "text", "target")} for e in v["in_edges"]]
    out["out_edges"] = [{k: e[k] for k in ("source", "text", "target")} for e in v["out_edges"]]
    return out


def find_problems(graph: GbcGraph) -> List[str]:
    """Every invariant ``graph`` violates, as readable sentences (empty when valid)."""
    problems: List[str] = []
    ids = Counter(v.vertex_id for v in graph.vertices)
    for vid, n in ids.items():
        if n > 1:
            problems.append(f"duplicate vertex id {vid!r} ({n} vertices)")

    images = [v for v in graph.vertices if v.label == "image"]
    if len(images) != 1:
        problems.append(f"expected exactly one image vertex, found {len(images)}")
    for v in images:
        if v.in_edges:
            problems.append(f"image vertex {v.vertex_id!r} has {len(v.in_edges)} in-edge(s)")

    outs: Counter = Counter()
    ins: Counter = Counter()
    for v in graph.vertices:
        not_finite = _non_finite_fields(v.bbox)
        if not_finite:
            # JSON has no NaN or Infinity: writers would turn them into null silently.
            problems.append(f"vertex {v.vertex_id!r} has a box with non-finite {', '.join(not_finite)}")
        elif not v.bbox.is_valid():
            problems.append(f"vertex {v.vertex_id!r} has a box outside [0,1] or inverted: {v.bbox.to_xyxy()}")
        for e in v.out_edges:
            if e.source != v.vertex_id:
                problems.append(f"out-edge {e.key()} is stored on vertex {v.vertex_id!r}, not on its source")
            if e.target not in ids:
                problems.append(f"edge {e.source!r} -> {e.target!r} ({e.text!r}) points to a missing vertex")
            outs[e.key()] += 1
        for e in v.in_edges:
            if e.target != v.vertex_id:
                problems.append(f"in-edge {e.key()} is stored on vertex {v.vertex_id!r}, not on its target")
            if e.source not in ids:
                problems.append(f"edge {e.source!r} -> {e.target!r} ({e.text!r}) comes from a missing vertex")
            ins[e.key()] += 1
    for key in sorted(set(outs) | set(ins)):
        if outs[key] != ins[key]:
            problems.append(
                f"edge {key[0]!r} -> {key[2]!r} ({key[1]!r}) is listed {outs[key]} time(s) in out_edges "
                f"but {ins[key]} time(s) in in_edges"
            )

    cycle = _find_cycle(graph)
    if cycle:
        problems.append("cycle: " + " -> ".join(repr(c) for c in cycle))
    return problems


def _non_finite_fields(bbox: Bbox) -> List[str]:
    """``name=value`` of the box coordinates and confidence that are NaN or infinite."""
    values = (("left", bbox.left), ("top", bbox.top), ("right", bbox.right), ("bottom", bbox.bottom),
              ("confidence", bbox.confidence))
    return [f"{name}={value!r}" for name, value in values if value is not None and not math.isfinite(value)]


def _find_cycle(graph: GbcGraph) -> Optional[List[str]]:
    children: Dict[str, List[str]] = {}
    for v in graph.vertices:
        children.setdefault(v.vertex_id, []).extend(e.target for e in v.out_edges)
    state: Dict[str, int] = {}
    for start in children:
        if state.get(start):
            continue
        stack: List[Tuple[str, Iterator[str]]] = [(start, iter(children.get(start, [])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            s = state.get(nxt, 0)
            if s == 1:
                return path[path.index(nxt):] + [nxt]
            if s == 0 and nxt in children:
                state[nxt] = 1
                stack.append((nxt, iter(children[nxt])))
                path.append(nxt)
    return None
