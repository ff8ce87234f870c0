"""The relation query: sentences relating the child groups of a vertex to each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Tuple

from gbc.annotators.answers import format_relation_answer
from gbc.annotators.kinds.base import QueryKind
from gbc.annotators.parsers import parse_relation_answer
from gbc.annotators.prompts import relation_user_prompt


@dataclass
class RelationQuery:
    """The relation vertices of one parent in the making: once answered, each sentence with the
    indexes of the members it names."""

    parent_id: str
    member_ids: List[str]  # group prefixes
    member_names: List[str]  # group phrases
    relations: List[Tuple[str, List[int]]] = field(default_factory=list)


def query(job: Any, parent: Any, groups: List[Any]) -> Any:
    """The relation query of ``parent`` over its child ``groups`` (on the parent's box)."""
    member_ids = [g.prefix for g in groups]
    member_names = [g.phrase for g in groups]
    record = RelationQuery(parent_id=parent.vertex_id, member_ids=member_ids, member_names=member_names)
    job.relations.append(record)
    count = job.rng(parent.vertex_id, "relation-count").randint(2, len(member_names))
    box = parent.bbox.to_xyxy()
    context = {"vertex_id": parent.vertex_id, "member_ids": list(member_ids),
               "member_names": list(member_names), "crop_box": list(box)}
    prompt = RELATION.fill(job, count, member_names)
    return job.query_task(RELATION, parent.vertex_id, prompt, context, box, payload=record)


def handle(job: Any, task: Any, text: str) -> List[Any]:
    """Each sentence that names members becomes a relation vertex (at assembly)."""
    record: RelationQuery = task.payload
    answer = RELATION.parse(text, record.member_names, reference_rules=job.settings.reference_parsing)
    record.relations = [(sentence, list(idx)) for sentence, idx in answer.relations if sentence]
    job.stage2_pending -= 1
    return []


RELATION = QueryKind(
    name="relation",
    parse=parse_relation_answer,
    format=format_relation_answer,
    user_prompt=relation_user_prompt,
    handle=handle,
    empty_answer=lambda: format_relation_answer([]),
)
