"""The image query: a detailed and a concise caption of the whole image and the objects in it."""

from __future__ import annotations

from typing import Any, List

from pydantic import Field

from gbc.annotators.answers import format_image_answer
from gbc.annotators.kinds.base import GenerationConfig, ImageFailure, QueryKind
from gbc.annotators.parsers import parse_image_answer
from gbc.annotators.prompts import image_user_prompt

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


class ImageGenerationConfig(GenerationConfig):
    max_new_tokens: int = Field(1024, ge=1, description="answer length limit in tokens (the image answer is the longest)")


def start(job: Any) -> List[Any]:
    """The image query, sent when the image starts (it is the root vertex's stage-1 query)."""
    return [job.query_task(IMAGE, "", IMAGE.fill(job), {"vertex_id": ""}, WHOLE_IMAGE)]


def handle(job: Any, task: Any, text: str) -> List[Any]:
    """Captions go to the root; the tagged objects it names are detected next."""
    s = job.settings
    answer = IMAGE.parse(text, max_entities=s.max_entities, reference_rules=s.reference_parsing)
    root = job.nodes[""]
    root.answered = True
    if answer.detail:
        root.descs.append((answer.detail, "detail"))
    if answer.short:
        root.descs.append((answer.short, "short"))
    if not root.descs:
        snippet = " ".join(text.split())[:80]
        raise ImageFailure(f"image query gave no usable caption (answer: {snippet!r})")
    root.features = job.detectable(answer.entities)
    return job.after_answer(root)


IMAGE = QueryKind(
    name="image",
    parse=parse_image_answer,
    format=format_image_answer,
    user_prompt=image_user_prompt,
    handle=handle,
    generation=ImageGenerationConfig,
    start=start,
    empty_answer=lambda: format_image_answer("", "", []),
)
