"""The entity query: is the named object in the crop, its description and its parts."""

from __future__ import annotations

from typing import Any, List

from gbc.annotators.answers import format_entity_answer
from gbc.annotators.kinds.base import QueryKind
from gbc.annotators.parsers import parse_entity_answer
from gbc.annotators.prompts import entity_user_prompt


def query(job: Any, node: Any) -> Any:
    """The entity query of a newly minted vertex, on its box with a margin."""
    crop = job.margin_box(node.bbox.to_xyxy())
    context = {
        "vertex_id": node.vertex_id,
        "parent_id": node.parents[0],
        "name": node.name,
        "label": node.label,
        "crop_box": list(crop),
    }
    return job.query_task(ENTITY, node.vertex_id, ENTITY.fill(job, node.name), context, crop)


def handle(job: Any, task: Any, text: str) -> List[Any]:
    """Descriptions go to the vertex (or it is absent); its parts are detected inside it next,
    and parents waiting for this child to plan their composition and relation queries go on."""
    s = job.settings
    node = job.nodes[task.vertex_id]
    answer = ENTITY.parse(text, node.name, max_entities=s.max_entities)
    node.answered = True
    if answer.present:
        if answer.detail:
            node.descs.append((answer.detail, "detail"))
        node.descs.extend((short, "short") for short in answer.shorts if short)
    node.present = bool(answer.present) and bool(node.descs)
    node.features = job.detectable(answer.entities) if node.present else []
    return job.after_answer(node) + job.child_answered(node.vertex_id)


ENTITY = QueryKind(
    name="entity",
    parse=parse_entity_answer,
    format=format_entity_answer,
    user_prompt=entity_user_prompt,
    handle=handle,
    empty_answer=lambda: format_entity_answer("", [], present=False),
)
