"""Typed MLLM answers and their text layout.

The four query kinds (image, entity, composition, relation) each have one answer layout,
taught by the prompts in ``gbc/annotators/prompts/``. This module holds the typed results the
parsers return (``ImageAnswer`` ...) and the inverse direction: formatters that write the
answer a model following our prompts would give. ``parse_*(format_*(...))`` gives back the
formatted content exactly when it obeys the parsers' rules (lower-case entity names that
the captions mention; relation sentences naming two or more members), which is how recorded
graphs are replayed through the same code path as live model answers. To keep the entity
order on a round trip, list every entity in ``format_image_answer`` (the parser returns the
identification list first, then names tagged only in the concise caption).

>>> print(format_image_answer("A horse in snow.", "A [horse][single] in [snow][single].",
...                           [TaggedEntity("horse", "single"), TaggedEntity("snow", "single")]))
Detailed Caption: A horse in snow.
Top-Level Element Identification:
- [horse][single]
- [snow][single]
Concise Formatted Caption: A [horse][single] in [snow][single].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from gbc.annotators.text import mention_pattern

__all__ = [
    "ENTITY_LABELS",
    "NOT_AVAILABLE",
    "TaggedEntity",
    "ImageAnswer",
    "EntityAnswer",
    "CompositionAnswer",
    "RelationAnswer",
    "format_image_answer",
    "format_entity_answer",
    "format_composition_answer",
    "format_relation_answer",
    "tag_mentions",
    "bracket_mentions",
]

#: Labels an entity can carry; anything else a model writes becomes ``"entity"``.
ENTITY_LABELS: tuple[str, ...] = ("single", "multiple", "entity")

#: What the layouts write for a missing value (and what parsers read as "no value").
NOT_AVAILABLE = "N/A"


@dataclass
class TaggedEntity:
    """A name the model tagged for detection: lower-cased, stripped text and its label.

    ``label`` is ``"single"`` (one object), ``"multiple"`` (a group of similar objects) or
    ``"entity"`` (no usable label given).
    """

    text: str
    label: str = "entity"


@dataclass
class ImageAnswer:
    """Parsed answer to the image query. ``short`` has its ``[name][label]`` tags removed."""

    detail: Optional[str]
    short: Optional[str]
    entities: list[TaggedEntity] = field(default_factory=list)
    raw: str = ""


@dataclass
class EntityAnswer:
    """Parsed answer to the entity query; ``present`` is False when the model says the
    object is not in the crop (then ``detail`` is None and ``entities`` empty)."""

    present: bool
    detail: Optional[str]
    entities: list[TaggedEntity] = field(default_factory=list)
    shorts: list[str] = field(default_factory=list)
    raw: str = ""


@dataclass
class CompositionAnswer:
    """Parsed answer to the composition query: the arrangement text and general descriptions."""

    composition: Optional[str]
    descriptions: list[str] = field(default_factory=list)
    raw: str = ""


@dataclass
class RelationAnswer:
    """Parsed answer to the relation query.

    ``relations`` holds ``(sentence, member indices)``: the sentence with its ``[brackets]``
    removed and the sorted indices (into the member names given to the parser) of the two or
    more members it names.
    """

    relations: list[tuple[str, list[int]]] = field(default_factory=list)
    raw: str = ""


def _value(text: Optional[str]) -> str:
    return NOT_AVAILABLE if text is None or not text.strip() else text


def format_image_answer(
    detail: Optional[str], short_tagged: Optional[str], entities: Sequence[TaggedEntity]
) -> str:
    """The image answer in our layout: detail, one ``- [name][label]`` line per entity, and
    the concise caption with its tags (see ``tag_mentions`` to tag a plain caption)."""
    lines = [f"Detailed Caption: {_value(detail)}", "Top-Level Element Identification:"]
    lines.extend(f"- [{e.text}][{e.label}]" for e in entities)
    lines.append(f"Concise Formatted Caption: {_value(short_tagged)}")
    return "\n".join(lines)


def format_entity_answer(
    detail: Optional[str],
    entities: Sequence[TaggedEntity],
    present: bool = True,
    shorts: Sequence[str] = (),
) -> str:
    """The entity answer in our layout (``Object Presence: No`` and ``N/A`` values when
    ``present`` is False). ``shorts`` writes the optional ``Short Captions:`` list."""
    if not present:
        return "\n".join(
            [
                "Object Presence: No",
                f"Detailed Caption: {NOT_AVAILABLE}",
                f"Prominent Features: {NOT_AVAILABLE}",
                f"Identification of Prominent Features: {NOT_AVAILABLE}",
            ]
        )
    lines = ["Object Presence: Yes", f"Detailed Caption: {_value(detail)}"]
    if shorts:
        lines.append("Short Captions:")
        lines.extend(f"- {s}" for s in shorts)
    if entities:
        lines.append("Prominent Features: Yes")
        lines.append("Identification of Prominent Features:")
        lines.extend(f"- {e.text}: [{e.label}]" for e in entities)
    else:
        lines.append("Prominent Features: No")
        lines.append(f"Identification of Prominent Features: {NOT_AVAILABLE}")
    return "\n".join(lines)


def format_composition_answer(composition: Optional[str], descriptions: Sequence[str]) -> str:
    """The composition answer in our layout: ``Composition:`` then ``General descriptions:``
    bullets."""
    lines = [f"Composition: {_value(composition)}", "General descriptions:"]
    lines.extend(f"- {d}" for d in descriptions)
    return "\n".join(lines)


def format_relation_answer(sentences: Sequence[str]) -> str:
    """The relation answer in our layout: one ``- `` bullet per sentence (sentences already
    carry their ``[member]`` brackets, see ``bracket_mentions``)."""
    return "\n".join(f"- {s}" for s in sentences)


def _first_mentions(text: str, names: Sequence[str]) -> list[tuple[int, int, int]]:
    """First non-overlapping mention ``(start, end, name index)`` of each name, longest
    names claiming their text first."""
    taken: list[tuple[int, int, int]] = []
    order = sorted(range(len(names)), key=lambda i: -len(names[i]))
    for i in order:
        name = names[i].strip()
        if not name:
            continue
        for m in mention_pattern(name).finditer(text):
            if all(m.end() <= s or m.start() >= e for s, e, _ in taken):
                taken.append((m.start(), m.end(), i))
                break
    return sorted(taken)


def tag_mentions(text: str, entities: Sequence[TaggedEntity]) -> str:
    """Tag the first word-bounded mention of each entity as ``[mention][label]``.

    The mention keeps its spelling in ``text``, so removing the tags gives ``text`` back.

    >>> tag_mentions("Two Horses in snow.", [TaggedEntity("horses", "multiple")])
    'Two [Horses][multiple] in snow.'
    """
    names = [e.text for e in entities]
    out, last = [], 0
    for start, end, i in _first_mentions(text, names):
        out.append(text[last:start])
        out.append(f"[{text[start:end]}][{entities[i].label}]")
        last = end
    out.append(text[last:])
    return "".join(out)


def bracket_mentions(text: str, names: Sequence[str]) -> str:
    """Put ``[ ]`` around the first word-bounded mention of each name.

    >>> bracket_mentions("The horse stands in snow.", ["snow", "horse"])
    'The [horse] stands in [snow].'
    """
    out, last = [], 0
    for start, end, _ in _first_mentions(text, names):
        out.append(text[last:start])
        out.append(f"[{text[start:end]}]")
        last = end
    out.append(text[last:])
    return "".join(out)
