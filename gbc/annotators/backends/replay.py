"""``replay:<graphs file>``: answer every query from recorded GBC graphs.

Both an MLLM and a detector. Given graphs made earlier (by this engine or by the reference
pipeline; a graph file or a store, read through :func:`gbc.store.reader.open_graphs`), the replay backends answer the
engine's queries with what the recorded graph says, in the engine's own answer formats:

- image query: the root's detail and short captions; the short caption re-tags the names
  of the root's children (``[name][single|multiple]``) and the identification list names
  them all in the recorded order;
- entity query (by vertex id): the vertex's detail and the names of its children as
  features; an id the record does not have is answered ``Object Presence: No``;
- detection (by parent id and phrase): the recorded children of the parent reached by an
  edge with that phrase (for a composition, its numbered members) with their boxes made
  relative to the crop; gaps in the recorded numbering (boxes the reference later dropped)
  get tiny placeholder boxes, so the engine mints the same ``_k`` ids and learns from the
  entity query that nothing is there;
- composition and relation queries: the recorded captions, with relation members put back
  in brackets.

This makes it possible to test the engine's orchestration, id minting and graph assembly
against real graphs without any model, and to re-assemble recorded answers offline::

    gbc annotate images/ --mllm replay:graphs.jsonl --detector replay:graphs.jsonl

Records are matched to requests by the image file name (the base name of the request's
``image_key`` against the base name of the record's ``img_path`` or ``img_url``), falling
back to the full key. A key with no record raises :class:`BackendError` (that image fails); a
graphs file that cannot be read, or that holds no graph, raises :class:`BackendUnavailable` at
first use (no request can be answered, so the run stops instead of failing every image).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pydantic import Field

from gbc.annotators.backends.base import (
    BackendError,
    BackendOptions,
    BackendUnavailable,
    DetectionRequest,
    MllmRequest,
    PhraseDetections,
)
from gbc.annotators.answers import TaggedEntity, tag_mentions
from gbc.annotators.backends.registry import register_detector, register_mllm
from gbc.annotators.kinds import COMPOSITION, ENTITY, IMAGE, RELATION, QueryKind, get_kind
from gbc.schemas import Bbox, GbcGraph, Vertex
from gbc.schemas.graph import child_id

_NUMBERED = re.compile(r"^(?P<prefix>.+)_(?P<index>\d+)$")

#: Names an identification list holds in the reference pipeline (and ``limits.max_entities``
#: by default); an image with more children had the others tagged in its concise caption.
LISTED_NAMES = 10

#: Sides tried for the placeholder boxes of numbering gaps, largest first (relative to the
#: crop): a placeholder takes the largest free square, so that it survives the engine's area
#: filters, NMS and containment removal when those are on; the last size is the fallback.
PLACEHOLDER_SIDES = (0.4, 0.25, 0.15, 0.1, 0.05, 0.02, 0.004)


def _basename(key: str) -> str:
    return key.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _read_graph_file(path: Path) -> List[GbcGraph]:
    from gbc.store.reader import iter_graphs, open_graphs

    # Without its graphs the backend can answer nothing: the run must stop, not fail each image.
    try:
        with open_graphs(path, validate=True) as reader:
            graphs = [graph for _, graph in iter_graphs(reader, validate=True)]
    except Exception as exc:  # the reader's own error, with the backend and the path in front
        raise BackendUnavailable(f"replay: cannot read graphs from {path}: {type(exc).__name__}: {exc}") from exc
    if not graphs:
        raise BackendUnavailable(f"replay: {path} holds no graph")
    return graphs


# ---------------------------------------------------------------------------- recorded image
@dataclass(eq=False)
class RecordedImage:
    """One recorded graph with the lookups the replay answers need."""

    graph: GbcGraph
    vertices: Dict[str, Vertex] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = {v.vertex_id: v for v in self.graph.vertices}

    def vertex(self, vertex_id: str) -> Optional[Vertex]:
        return self.vertices.get(vertex_id)

    def child_names(self, vertex_id: str) -> List[Tuple[str, str]]:
        """``(name, label)`` of the non-relation children of a vertex, first occurrence order.

        The label is ``multiple`` when the name leads to a composition or to numbered boxes.
        """
        v = self.vertices.get(vertex_id)
        if v is None:
            return []
        targets: Dict[str, List[Vertex]] = {}
        for e in v.out_edges:
            target = self.vertices.get(e.target)
            if target is not None and target.label != "relation":
                targets.setdefault(e.text, []).append(target)
        names: Dict[str, str] = {}
        for name, found in targets.items():
            several = len(found) > 1 or any(
                t.label == "composition" or _NUMBERED.match(t.vertex_id) for t in found)
            names[name] = "multiple" if several else "single"
        return list(names.items())

    def members(self, composition_id: str) -> List[str]:
        """Member ids of a composition in the recorded numbering order."""
        v = self.vertices.get(composition_id)
        if v is None:
            return []
        ids = [e.target for e in v.out_edges if e.target in self.vertices]
        return sorted(dict.fromkeys(ids), key=_number_key)

    def detection_targets(self, parent: str, phrase: str) -> List[str]:
        """Recorded entity ids found for ``phrase`` inside ``parent``, in numbering order."""
        v = self.vertices.get(parent)
        if v is None:
            return []
        ids: List[str] = []
        for e in v.out_edges:
            if e.text != phrase:
                continue
            target = self.vertices.get(e.target)
            if target is None or target.label == "relation":
                continue
            if target.label == "composition":
                ids.extend(self.members(target.vertex_id))
            else:
                ids.append(target.vertex_id)
        return sorted(dict.fromkeys(ids), key=_number_key)

    def relations_of(self, parent: str) -> List[Vertex]:
        """Relation vertices whose in-edges come from ``parent`` (the relation query's vertex)."""
        out = []
        for v in self.graph.vertices:
            if v.label == "relation" and any(e.source == parent for e in v.in_edges):
                out.append(v)
        if not out:
            # Records without in-edges: find them from the parent's out-edges instead.
            p = self.vertices.get(parent)
            targets = {e.target for e in p.out_edges} if p is not None else set()
            out = [v for v in self.graph.vertices if v.label == "relation" and v.vertex_id in targets]
        return out


def _number_key(vertex_id: str) -> Tuple[str, int]:
    m = _NUMBERED.match(vertex_id)
    return (m.group("prefix"), int(m.group("index"))) if m else (vertex_id, -1)


# ---------------------------------------------------------------------------- shared index
class ReplayIndex:
    """The recorded graphs of one file, indexed by image key and file name.

    Loaded once per process per file and shared by the MLLM and detector backends
    (:meth:`for_file`); thread-safe to read.
    """

    _shared: Dict[str, Tuple[Tuple[int, int], "ReplayIndex"]] = {}
    _shared_lock = threading.Lock()

    def __init__(self, graphs: Sequence[GbcGraph], source: str = "<memory>"):
        self.source = source
        self.images: List[RecordedImage] = [RecordedImage(g) for g in graphs]
        self._by_key: Dict[str, RecordedImage] = {}
        self._by_name: Dict[str, List[RecordedImage]] = {}
        for rec in self.images:
            for key in (rec.graph.img_path, rec.graph.img_url):
                if key:
                    self._by_key.setdefault(key, rec)
                    same_name = self._by_name.setdefault(_basename(key), [])
                    if all(other is not rec for other in same_name):
                        same_name.append(rec)

    @classmethod
    def for_file(cls, path: str | os.PathLike) -> "ReplayIndex":
        """The index of ``path``, read on first use in this process (re-read if the file changed)."""
        p = Path(path).expanduser()
        try:
            st = p.resolve().stat()
        except OSError as exc:
            raise BackendUnavailable(f"replay: cannot read graphs file {str(path)!r}: {exc.strerror}") from exc
        key, version = str(p.resolve()), (st.st_mtime_ns, st.st_size)
        with cls._shared_lock:
            cached = cls._shared.get(key)
            if cached is None or cached[0] != version:
                cls._shared[key] = cached = (version, cls(_read_graph_file(p), source=str(p)))
        return cached[1]

    def __len__(self) -> int:
        return len(self.images)

    def find(self, image_key: str) -> Optional[RecordedImage]:
        """The record of ``image_key``, or None."""
        candidates = self._by_name.get(_basename(image_key), [])
        if len(candidates) == 1:
            return candidates[0]
        exact = self._by_key.get(image_key)
        if exact is not None:
            return exact
        # Several records share the file name: the one whose path ends with the key, or the
        # key ends with its path (records and requests rooted at different folders).
        def tail_match(rec: RecordedImage) -> bool:
            path = rec.graph.img_path or rec.graph.img_url or ""
            return path.endswith("/" + image_key) or image_key.endswith("/" + path)

        suffix = [c for c in candidates if tail_match(c)]
        return suffix[0] if len(suffix) == 1 else None

    def get(self, image_key: str) -> RecordedImage:
        """The record of ``image_key``; raises :class:`BackendError` naming the key when there is none."""
        rec = self.find(image_key)
        if rec is None:
            n = len(self._by_name.get(_basename(image_key), []))
            why = f"{n} records share its file name" if n > 1 else "no record has this file name"
            raise BackendError(f"replay: image {image_key!r} is not in {self.source} ({why})")
        return rec


class _ReplayBase:
    class Options(BackendOptions):
        max_batch_size: int = Field(64, ge=1, description="largest batch the engine forms")

    def __init__(self, argument: str, options: Optional[BackendOptions] = None):
        if not argument:
            raise BackendError("replay backend needs a graphs file: replay:<path to .jsonl/.json/.parquet/.lmdb>")
        if not Path(argument).expanduser().exists():
            raise BackendError(f"replay: cannot read graphs file {argument!r}: no such file or folder")
        self.path = argument
        self.options = options or self.Options()
        self.max_batch_size = self.options.max_batch_size
        self._index: Optional[ReplayIndex] = None

    @property
    def index(self) -> ReplayIndex:
        """The recorded graphs, read on first use (once per process, shared by all replay backends)."""
        if self._index is None:
            self._index = ReplayIndex.for_file(self.path)
        return self._index

    def __getstate__(self) -> dict:
        # Sent to worker processes without the graphs: each process reads the file once.
        state = dict(self.__dict__)
        state["_index"] = None
        return state

    def close(self) -> None:
        """Nothing to release (the index is shared)."""


# ---------------------------------------------------------------------------- MLLM
def _bracket_all(sentence: str, names: Sequence[str]) -> str:
    """Put every mention of every name in brackets (longest names first, no nesting)."""
    from gbc.annotators.text import find_mentions

    taken: List[Tuple[int, int]] = []
    for name in sorted(set(names), key=len, reverse=True):
        for _, s, e in find_mentions([sentence], name):
            if all(e <= a or s >= b for a, b in taken):
                taken.append((s, e))
    out = sentence
    for s, e in sorted(taken, reverse=True):
        out = f"{out[:s]}[{out[s:e]}]{out[e:]}"
    return out


def _first_desc(v: Vertex, label: str) -> str:
    for d in v.descs:
        if d.label == label:
            return d.text
    return ""


@register_mllm
class ReplayMllm(_ReplayBase):
    """Answers MLLM queries from recorded graphs (see the module docstring)."""

    name = "replay"

    def generate(self, requests: Sequence[MllmRequest]) -> List[str]:
        """One answer per request; raises :class:`BackendError` for an image with no record."""
        return [self._answer(r) for r in requests]

    def _answer(self, request: MllmRequest) -> str:
        try:
            kind = get_kind(request.kind)
        except KeyError as exc:
            raise BackendError(f"replay: {exc.args[0]}") from None
        rec = self.index.get(request.image_key)
        ctx = request.context or {}
        rule = _RULES.get(kind)
        if rule is not None:
            return rule(rec, str(ctx.get("vertex_id", "")), ctx)
        if kind.empty_answer is None:
            raise BackendError(f"replay: the query kind {kind.name!r} has no recorded answers and no empty answer")
        return kind.empty_answer()  # a record holds nothing for kinds it was not made with


def _image_answer(rec: RecordedImage, vertex_id: str, ctx: dict) -> str:
    root = rec.vertex("")
    if root is None:
        root = rec.graph.root
    names = rec.child_names(root.vertex_id)
    short = _first_desc(root, "short")
    if len(names) > LISTED_NAMES:
        # More children than a list may hold: the rest were tagged in the concise
        # caption. List first those it does not mention, so that no cut loses them.
        from gbc.annotators.text import find_mentions

        names = sorted(names, key=lambda item: bool(find_mentions([short], item[0])))
    entities = [TaggedEntity(text=n, label=lab) for n, lab in names]
    # Every name is also listed, in the recorded edge order: the parser takes the list
    # first, so the engine mints the children in the order the record has them.
    tagged = tag_mentions(short, entities)
    return IMAGE.format(_first_desc(root, "detail"), tagged, entities)


def _entity_answer(rec: RecordedImage, vertex_id: str, ctx: dict) -> str:
    v = rec.vertex(vertex_id)
    if v is None or v.label != "entity":
        return ENTITY.empty_answer()
    features = [TaggedEntity(text=n, label=lab) for n, lab in rec.child_names(vertex_id)]
    shorts = [d.text for d in v.descs if d.label == "short"]
    return ENTITY.format(_first_desc(v, "detail"), features, shorts=shorts)


def _composition_answer(rec: RecordedImage, vertex_id: str, ctx: dict) -> str:
    v = rec.vertex(vertex_id)
    if v is None or v.label != "composition":
        return COMPOSITION.empty_answer()
    shorts = [d.text for d in v.descs if d.label == "short"]
    return COMPOSITION.format(_first_desc(v, "composition"), shorts)


def _relation_answer(rec: RecordedImage, vertex_id: str, ctx: dict) -> str:
    names = [str(n) for n in ctx.get("member_names") or []]
    sentences: List[str] = []
    for rel in rec.relations_of(vertex_id):
        recorded = [e.text for e in rel.out_edges]
        for d in rel.descs:
            if d.label == "relation":
                sentences.append(_bracket_all(d.text, names + recorded))
    return RELATION.format(list(dict.fromkeys(sentences)))


# What a record answers for each built-in kind: (record, vertex id, request context) -> answer.
_RULES: Dict[QueryKind, Callable[[RecordedImage, str, dict], str]] = {
    IMAGE: _image_answer,
    ENTITY: _entity_answer,
    COMPOSITION: _composition_answer,
    RELATION: _relation_answer,
}


# ---------------------------------------------------------------------------- detector
@register_detector
class ReplayDetector(_ReplayBase):
    """Returns the recorded boxes of each phrase inside the request's crop (see the module docstring)."""

    name = "replay"

    def detect(self, requests: Sequence[DetectionRequest]) -> List[Dict[str, PhraseDetections]]:
        """For each request, ``{phrase: PhraseDetections}`` relative to the request's crop."""
        return [self._detect_one(r) for r in requests]

    def _detect_one(self, request: DetectionRequest) -> Dict[str, PhraseDetections]:
        rec = self.index.get(request.image_key)
        ctx = request.context or {}
        parent = str(ctx.get("vertex_id", ""))
        crop = Bbox.from_xyxy(ctx.get("crop_box") or (0.0, 0.0, 1.0, 1.0))
        out: Dict[str, PhraseDetections] = {}
        for phrase in request.phrases:
            targets = rec.detection_targets(parent, phrase)
            if targets:
                out[phrase] = self._boxes(rec, parent, phrase, targets, crop)
        return out

    @staticmethod
    def _boxes(rec: RecordedImage, parent: str, phrase: str, targets: List[str], crop: Bbox) -> PhraseDetections:
        prefix = child_id(parent, phrase)
        numbered: Dict[int, Vertex] = {}
        others: List[Vertex] = []
        for t in targets:
            m = _NUMBERED.match(t)
            if m and m.group("prefix") == prefix:
                numbered[int(m.group("index"))] = rec.vertices[t]
            else:
                others.append(rec.vertices[t])
        slots: List[Optional[Vertex]] = []
        if numbered:
            # Boxes the reference numbered but later dropped (answered "not present") are
            # replaced by placeholders so the engine mints the same _k ids for the others.
            # A lone "_0" had a sibling: keep two slots so the id stays numbered.
            slots = [numbered.get(i) for i in range(max(max(numbered) + 1, 2))]
        slots.extend(others)
        scores = _monotone_scores([s.bbox.confidence if s is not None else None for s in slots])
        real = {i: tuple(min(1.0, max(0.0, c)) for c in slot.bbox.to_relative(crop).to_xyxy())
                for i, slot in enumerate(slots) if slot is not None}
        taken = list(real.values())
        boxes: List[Tuple[float, float, float, float]] = []
        for i in range(len(slots)):
            if i in real:
                boxes.append(real[i])  # type: ignore[arg-type]
            else:
                box = _free_square(taken)
                taken.append(box)
                boxes.append(box)
        return PhraseDetections(boxes=boxes, scores=scores)


def _free_square(taken: Sequence[Tuple[float, ...]]) -> Tuple[float, float, float, float]:
    """The largest square of ``PLACEHOLDER_SIDES`` that touches none of ``taken`` (top-left first)."""
    for side in PLACEHOLDER_SIDES:
        steps = int(round((1.0 - side) / (side / 2))) if side < 1 else 0
        for row in range(steps + 1):
            for col in range(steps + 1):
                left, top = col * side / 2, row * side / 2
                box = (left, top, left + side, top + side)
                if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
                    return box
    side = PLACEHOLDER_SIDES[-1]
    return (0.0, 0.0, side, side)


def _monotone_scores(confidences: Sequence[Optional[float]]) -> List[float]:
    """Strictly decreasing scores in the given order, the recorded ones kept where possible.

    Missing confidences (boxes widened by a merge, placeholders) get a value between their
    neighbours, so an engine that sorts boxes by score keeps the recorded numbering.
    """
    if len(confidences) == 1:
        return [1.0 if confidences[0] is None else float(confidences[0])]
    out: List[float] = []
    for i, c in enumerate(confidences):
        upper = out[-1] if out else None
        if c is not None and (upper is None or c < upper):
            out.append(float(c))
            continue
        later = next((x for x in confidences[i + 1:] if x is not None and (upper is None or x < upper)), None)
        if upper is None:
            # Just above the next recorded score: within the engine's high-confidence tolerance.
            out.append(1.0 if later is None else float(later) + 0.01 * (1.0 - float(later)))
        elif later is None:
            out.append(upper * 0.999)  # just below: stays above any threshold the previous passed
        else:
            out.append((upper + float(later)) / 2)
    return out
