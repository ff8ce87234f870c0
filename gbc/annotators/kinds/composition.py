"""The composition query: how the boxes of one phrase (``trees`` -> tree 1, tree 2, ...) are
arranged, asked on their union with the boxes drawn and numbered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Tuple

from gbc.annotators.answers import format_composition_answer
from gbc.annotators.kinds.base import QueryKind
from gbc.annotators.parsers import parse_composition_answer
from gbc.annotators.prompts import composition_user_prompt
from gbc.schemas.bbox import Bbox, union_bboxes


@dataclass
class CompositionQuery:
    """A composition vertex in the making: its members and, once answered, its captions."""

    vertex_id: str
    parent_id: str
    name: str
    members: List[str]
    member_names: List[str]
    hints: List[str]
    descs: List[Tuple[str, str]] = field(default_factory=list)


def query(job: Any, parent: Any, group: Any, members: List[str]) -> Any:
    """The composition query of ``group`` (a phrase of ``parent``) over its present ``members``."""
    s = job.settings
    members = list(members)
    base = s.text.singular(group.phrase) or group.phrase
    member_names = [f"{base} {k}" for k in range(1, len(members) + 1)]
    member_boxes = [job.nodes[m].bbox for m in members]
    union = union_bboxes(member_boxes)
    crop = job.margin_box(union.to_xyxy())
    outer = Bbox.from_xyxy(crop)
    relative = [b.to_relative(outer).to_xyxy() for b in member_boxes]
    W, H = job.size
    crop_px = ((crop[2] - crop[0]) * W, (crop[3] - crop[1]) * H)
    hints = list(s.composition.spatial_hints(member_names, relative, job.rng(group.prefix, "composition-hints"),
                                             crop_size=crop_px))
    record = CompositionQuery(vertex_id=group.prefix, parent_id=parent.vertex_id, name=group.phrase,
                              members=members, member_names=member_names, hints=hints)
    job.compositions.append(record)
    context = {
        "vertex_id": group.prefix,
        "parent_id": parent.vertex_id,
        "name": group.phrase,
        "member_ids": list(members),
        "member_names": list(member_names),
        "crop_box": list(crop),
    }
    prompt = COMPOSITION.fill(job, len(members), group.phrase, member_names, hints)
    draw_fn = s.composition.draw_numbered_boxes

    def draw(image, owned):
        return draw_fn(image, relative, in_place=owned)

    return job.query_task(COMPOSITION, group.prefix, prompt, context, crop, draw=draw, payload=record)


def handle(job: Any, task: Any, text: str) -> List[Any]:
    """The composition text, the members' shared descriptions and the spatial hints become its captions."""
    record: CompositionQuery = task.payload
    answer = COMPOSITION.parse(text, record.member_names)
    if answer.composition:
        record.descs.append((answer.composition, "composition"))
    record.descs.extend((d, "short") for d in answer.descriptions if d)
    record.descs.extend((h, "hardcode") for h in record.hints if h)
    job.stage2_pending -= 1
    return []


COMPOSITION = QueryKind(
    name="composition",
    parse=parse_composition_answer,
    format=format_composition_answer,
    user_prompt=composition_user_prompt,
    handle=handle,
    empty_answer=lambda: format_composition_answer("", []),
)
