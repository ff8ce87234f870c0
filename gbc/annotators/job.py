"""The state of one image being annotated, and the rules that turn answers into new tasks.

Work proceeds per image, level by level (the image is level 0, its objects level 1, their
features level 2, ...): once every query and detection of level ``d`` is back, the boxes found
at that level are minted into level ``d+1`` vertices in a canonical order (parent order, phrase
order, box order), which makes duplicate merging, id minting and the vertex budget independent
of batch composition and timing. Composition and relation queries of a vertex start as soon
as its children are minted. Nothing here waits for other images.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from gbc.annotators.backends.base import DetectionRequest, GenerationOptions, MllmRequest
from gbc.annotators.kinds import ImageFailure, QueryKind, query_kinds
from gbc.annotators.kinds import composition as composition_kind
from gbc.annotators.kinds import entity as entity_kind
from gbc.annotators.kinds import relation as relation_kind
from gbc.annotators.kinds.composition import CompositionQuery  # noqa: F401 - the records of job.compositions
from gbc.annotators.kinds.relation import RelationQuery  # noqa: F401 - the records of job.relations
from gbc.annotators.regions import FULL, Region
from gbc.annotators.scheduler import Task
from gbc.schemas import geometry
from gbc.schemas.bbox import Bbox, union_bboxes
from gbc.schemas.graph import child_id

Box = Tuple[float, float, float, float]

#: The kind of the detection tasks (every other task's kind is its ``QueryKind``).
DETECTION = "detect"

__all__ = ["DETECTION", "Group", "ImageFailure", "ImageJob", "Node", "stable_int"]


def stable_int(*parts: Any) -> int:
    """A 63-bit integer derived from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class Group:
    """The boxes kept for one phrase of a parent: ``targets`` are the vertices they became."""

    phrase: str
    label: str
    prefix: str  # child_id(parent, phrase): the composition id and relation member id
    targets: List[str] = field(default_factory=list)  # unique vertex ids in box order


@dataclass
class Node:
    """The image vertex or an entity vertex."""

    vertex_id: str
    level: int
    bbox: Bbox
    name: str = ""
    label: str = "image"
    aliases: List[str] = field(default_factory=list)  # names of boxes merged into this vertex
    parents: List[str] = field(default_factory=list)  # detection parents (incl. merged duplicates)
    descs: List[Tuple[str, str]] = field(default_factory=list)
    answered: bool = False
    present: bool = True
    features: List[Any] = field(default_factory=list)  # TaggedEntity to detect inside this vertex
    groups: List[Group] = field(default_factory=list)
    # stage 2 of this vertex: planned when its children are minted, sent once they have answered
    planned_compositions: List[str] = field(default_factory=list)
    planned_relation: bool = False
    waiting_for: set = field(default_factory=set)

    @property
    def names(self) -> List[str]:
        return [self.name] + self.aliases


class ImageJob:
    """Everything known about one in-flight image; methods return the tasks to submit next.

    All methods run on the engine thread; task ``build`` closures (run by backend workers)
    only read immutable values captured when the task was made.
    """

    def __init__(self, key: str, image: Any, settings: Any, seq: int):
        # settings: a JobSettings (gbc.annotators.job_settings), resolved once per run
        self.key = key
        self.image = image  # an ImageHandle: pixels are decoded when a backend asks for them
        self.size = image.size
        self.charged_pixels = 0  # reserved from the engine's pixel budget while in flight
        self.settings = settings
        self.seq = seq
        self.finished = False
        self.nodes: Dict[str, Node] = {}
        self.order: List[str] = []
        self.compositions: List[CompositionQuery] = []
        self.relations: List[RelationQuery] = []
        self.open: Dict[int, int] = {}  # stage-1 queries and detections not yet back, by level
        self.detections: Dict[int, List[Tuple[str, List[Tuple[str, str, List[Bbox]]]]]] = {}
        self.stage2_pending = 0  # composition and relation queries not yet back
        self.queries_out = 0  # MLLM queries sent and not yet answered, of every kind
        self.stage1_done = False
        self.waiters: Dict[str, List[Node]] = {}  # child id -> parents whose stage 2 waits for its answer
        self.waiting_parents = 0
        self.reserved = 1  # vertex budget used (the image vertex)
        self.answers: List[dict] = []
        self.raw_detections: List[dict] = []
        self.notes: List[str] = []
        # From the input, when it says (a URL list's URL, a tar sample's alt-text and position).
        self.img_url: Optional[str] = None
        self.original_caption: Optional[str] = None
        self.origin: Optional[str] = None

    # ------------------------------------------------------------------ helpers
    @property
    def done(self) -> bool:
        return self.stage1_done and self.stage2_pending == 0 and self.waiting_parents == 0 and self.queries_out == 0

    def release(self) -> None:
        """Drop pixel data (after commit or failure) so nothing big outlives the image."""
        release = getattr(self.image, "release", None)
        if release is not None:
            release()
        self.image = None

    def _crop(self, box: Box, draw=None) -> Region:
        """The region a model sees for ``box``: nothing is cut or scaled until a backend asks."""
        s = self.settings
        whole = box == FULL
        return Region(self.image, box, s.max_image_side, 1 if whole else s.min_crop_side, draw=draw)

    def margin_box(self, box: Box) -> Box:
        """``box`` widened by ``crop_margin`` of its size per side (the context an MLLM crop gets)."""
        m = self.settings.crop_margin
        if m <= 0:
            return box
        w, h = box[2] - box[0], box[3] - box[1]
        return (max(0.0, box[0] - m * w), max(0.0, box[1] - m * h), min(1.0, box[2] + m * w), min(1.0, box[3] + m * h))

    def _options(self, kind: QueryKind, vertex_id: str) -> GenerationOptions:
        gen = self.settings.generation[kind.name]
        return GenerationOptions(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            seed=stable_int(self.settings.seed, self.key, vertex_id, kind.name),
        )

    def rng(self, vertex_id: str, purpose: str) -> random.Random:
        """Randomness tied to (seed, image, vertex, purpose): independent of timing and batch order."""
        return random.Random(stable_int(self.settings.seed, self.key, vertex_id, purpose))

    def query_task(self, kind: QueryKind, vertex_id: str, user_prompt: str, context: dict, box: Box,
                   draw=None, payload: Any = None) -> Task:
        """An MLLM query of ``kind`` about ``vertex_id``, asked on the region ``box`` (with
        ``draw(image, owned)`` applied to its pixels, when given); ``on_answer`` routes its answer."""
        prompt = self.settings.prompts[kind.name]
        options = self._options(kind, vertex_id)
        key, name = self.key, kind.name

        def build():
            # the drawing is done on the pixels a backend asks for (a new image it owns)
            return MllmRequest(image=self._crop(box, draw), system_prompt=prompt.system, user_prompt=user_prompt, kind=name,
                               image_key=key, context=context, options=options)

        self.queries_out += 1
        return Task(job=self, kind=kind, vertex_id=vertex_id, build=build, priority=self.seq, payload=payload)

    def on_answer(self, task: Task, text: str) -> List[Task]:
        """The MLLM answered ``task``: recorded, then handled by its kind; returns the follow-up tasks."""
        kind: QueryKind = task.kind
        self.queries_out -= 1
        self.answers.append({"kind": kind.name, "vertex_id": task.vertex_id, "text": text})
        return kind.handle(self, task, text)

    # ------------------------------------------------------------------ stage 1
    def start(self) -> List[Task]:
        """The root vertex, and the queries the kinds send first (the image query: level 0's one open query)."""
        root = Node(vertex_id="", level=0, bbox=Bbox.full())
        self.nodes[""] = root
        self.order.append("")
        self.open[0] = 1
        return [task for kind in query_kinds() if kind.start is not None for task in kind.start(self)]

    def child_answered(self, vertex_id: str) -> List[Task]:
        """The stage-2 queries of parents that were waiting only for ``vertex_id``'s answer."""
        tasks: List[Task] = []
        for parent in self.waiters.pop(vertex_id, []):
            parent.waiting_for.discard(vertex_id)
            if not parent.waiting_for:
                self.waiting_parents -= 1
                tasks.extend(self._stage2_tasks(parent))
        return tasks

    def detectable(self, entities) -> List[Any]:
        """The answer's tagged entities worth a detection: named, suitable, each name once."""
        text = self.settings.text
        seen = set()
        out = []
        for ent in entities:
            name = ent.text.strip().lower()
            if name and name not in seen and text.suitable_for_detection(name):
                seen.add(name)
                out.append(ent)
        return out

    def after_answer(self, node: Node) -> List[Task]:
        """Stage-1 bookkeeping once ``node``'s query is answered: detect its features, close its level."""
        s = self.settings
        tasks: List[Task] = []
        self.open[node.level] -= 1  # this vertex's query is answered
        if node.features and s.include_entity and node.level < s.max_depth:
            self.open[node.level] = self.open.get(node.level, 0) + 1
            tasks.append(self._detection_task(node))
        return tasks + self._close_task(node.level)

    def _detection_task(self, node: Node) -> Task:
        box = node.bbox.to_xyxy()
        phrases = [f.text.strip().lower() for f in node.features]
        labels = {p: f.label for p, f in zip(phrases, node.features)}
        context = {"vertex_id": node.vertex_id, "crop_box": list(box), "labels": labels}
        key = self.key

        def build():
            return DetectionRequest(image=self._crop(box), phrases=list(phrases), image_key=key, context=context)

        return Task(job=self, kind=DETECTION, vertex_id=node.vertex_id, build=build, priority=self.seq,
                    payload=(box, phrases, labels))

    def on_detections(self, task: Task, result: Dict[str, Any]) -> List[Task]:
        s = self.settings
        node = self.nodes[task.vertex_id]
        box, phrases, labels = task.payload
        settings = s.detection_from_image if node.level == 0 else s.detection_from_entity
        W, H = self.size
        crop_px = (max(1, round((box[2] - box[0]) * W)), max(1, round((box[3] - box[1]) * H)))
        crop_rel = max((box[2] - box[0]) * (box[3] - box[1]), 1e-12)
        outer = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        found: List[Tuple[str, str, List[Bbox]]] = []
        raw: Dict[str, dict] = {}
        for phrase in phrases:
            det = (result or {}).get(phrase)
            if det is None or not det.boxes:
                continue
            raw[phrase] = {"boxes": [list(map(float, b)) for b in det.boxes], "scores": [float(x) for x in det.scores]}
            kept = s.detection.select_boxes(list(det.boxes), list(det.scores), labels[phrase], settings, crop_px, crop_rel)
            boxes = []
            for b, score in kept:  # found in the crop: mapped to image coordinates
                boxes.append(Bbox.from_xyxy(geometry.to_global(_clamp(b), outer), confidence=float(score)))
            if boxes:
                found.append((phrase, labels[phrase], boxes))
        self.raw_detections.append({"vertex_id": node.vertex_id, "crop_box": list(box), "phrases": raw})
        self.detections.setdefault(node.level, []).append((node.vertex_id, found))
        self.open[node.level] -= 1
        return self._close_task(node.level)

    def _close_task(self, level: int) -> List[Task]:
        """Called after each stage-1 result of ``level``; mints the next level once it is complete."""
        if self.open.get(level, 0) > 0:
            return []
        return self._mint_level(level)

    def _mint_level(self, level: int) -> List[Task]:
        s = self.settings
        thr = s.merge_overlap_threshold
        # canonical order: parents in minting order, then phrases, then boxes by score
        rank = {vid: i for i, vid in enumerate(self.order)}
        found = sorted(self.detections.pop(level, []), key=lambda item: rank[item[0]])
        new_nodes: List[Node] = []
        parents_with_groups: List[Node] = []
        for parent_id, phrases in found:
            parent = self.nodes[parent_id]
            blocked = self._ancestors(parent_id)
            for phrase, label, boxes in phrases:
                group = Group(phrase=phrase, label=label, prefix=child_id(parent_id, phrase))
                for i, box in enumerate(boxes):
                    target = self._find_duplicate(box, phrase, blocked, thr)
                    if target is not None:
                        other = self.nodes[target]
                        other.bbox = union_bboxes([other.bbox, box])
                        if phrase not in other.names:
                            other.aliases.append(phrase)
                        if parent_id not in other.parents:
                            other.parents.append(parent_id)
                    else:
                        vid = group.prefix if len(boxes) == 1 else f"{group.prefix}_{i}"
                        if vid in self.nodes:
                            self.notes.append(f"box {i} of {phrase!r} under {parent_id!r} skipped: id {vid!r} already used")
                            continue
                        if self.reserved >= s.max_vertices_per_image:
                            self.notes.append(f"vertex budget reached: box {i} of {phrase!r} under {parent_id!r} skipped")
                            continue
                        self.reserved += 1
                        node = Node(vertex_id=vid, level=level + 1, bbox=box, name=phrase, label=label, parents=[parent_id])
                        self.nodes[vid] = node
                        self.order.append(vid)
                        new_nodes.append(node)
                        target = vid
                    if target not in group.targets:
                        group.targets.append(target)
                if group.targets:
                    parent.groups.append(group)
            if parent.groups:
                parents_with_groups.append(parent)

        tasks: List[Task] = []
        if new_nodes:
            self.open[level + 1] = len(new_nodes)
        for node in new_nodes:
            tasks.append(entity_kind.query(self, node))
        for parent in parents_with_groups:
            tasks.extend(self._plan_stage2(parent))
        if not new_nodes:
            self.stage1_done = True
        return tasks

    def _ancestors(self, vertex_id: str) -> set:
        """``vertex_id`` and every vertex above it: merging a box into one of them would make a cycle."""
        seen = {vertex_id}
        stack = [vertex_id]
        while stack:
            for p in self.nodes[stack.pop()].parents:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def _find_duplicate(self, box: Bbox, phrase: str, blocked: set, thr: float) -> Optional[str]:
        xyxy = box.to_xyxy()
        for vid in self.order:
            node = self.nodes[vid]
            if node.level == 0 or vid in blocked or (node.answered and not node.present):
                continue
            if geometry.is_overlapped(xyxy, node.bbox.to_xyxy(), thr) and any(
                    self.settings.same_object(phrase, n) for n in node.names):
                return vid
        return None

    # ------------------------------------------------------------------ stage 2
    def _plan_stage2(self, parent: Node) -> List[Task]:
        """Reserve budget for the parent's composition and relation queries (in canonical
        order, so the budget never depends on timing) and send them once every child answered:
        members the MLLM found absent are then left out of the numbering and the relation."""
        s = self.settings
        if s.include_composition:
            for group in parent.groups:
                if len(group.targets) >= 2 and self.reserved < s.max_vertices_per_image and group.prefix not in self.nodes:
                    self.reserved += 1
                    parent.planned_compositions.append(group.prefix)
        if s.include_relation and len(parent.groups) >= 2 and self.reserved < s.max_vertices_per_image:
            self.reserved += 1
            parent.planned_relation = True
        if not parent.planned_compositions and not parent.planned_relation:
            return []
        parent.waiting_for = {t for g in parent.groups for t in g.targets if not self.nodes[t].answered}
        if not parent.waiting_for:
            return self._stage2_tasks(parent)
        self.waiting_parents += 1
        for child in parent.waiting_for:
            self.waiters.setdefault(child, []).append(parent)
        return []

    def _stage2_tasks(self, parent: Node) -> List[Task]:
        tasks: List[Task] = []
        live = []
        for group in parent.groups:
            present = [t for t in group.targets if self.nodes[t].present]
            if present:
                live.append((group, present))
        for group, present in live:
            if group.prefix in parent.planned_compositions and len(present) >= 2:
                tasks.append(composition_kind.query(self, parent, group, present))
        if parent.planned_relation and len(live) >= 2:
            tasks.append(relation_kind.query(self, parent, [g for g, _ in live]))
        self.stage2_pending += len(tasks)
        return tasks


def _clamp(box) -> Box:
    left, top, right, bottom = (min(max(float(v), 0.0), 1.0) for v in box)
    return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
