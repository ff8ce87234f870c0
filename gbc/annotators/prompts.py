"""Prompts of the query kinds (the built-in ones: image, entity, composition, relation).

Each kind (see :mod:`gbc.annotators.kinds`) has a system prompt (instructions and worked examples of the answer layout the
parsers in :mod:`gbc.annotators.parsers` read) and a user template with named slots. They ship
as package data, ``gbc/annotators/prompts/<kind>.txt``.

Prompt file format (also for your own overrides): the system prompt, then a line holding only
``---``, then the user template. The template may use these slots (written with braces; any
other text, braces included, is kept as is):

============  =================================================================
kind          slots
============  =================================================================
image         (none)
entity        ``{name}``: the object the crop should show (singular form)
composition   ``{count}``, ``{name}`` (the group name, e.g. ``trees``), ``{members}``
              (``tree 1, tree 2, ...``), ``{hints}`` (one ``- hint`` line each)
relation      ``{count}`` (how many relations to list), ``{members}`` (``[a], [b]``)
============  =================================================================

>>> prompts = load_prompts()
>>> sorted(prompts)
['composition', 'entity', 'image', 'relation']
>>> entity_user_prompt(prompts["entity"], "trees").count("tree")
2
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from gbc.annotators.text import singular

__all__ = [
    "PROMPT_VERSION",
    "SEPARATOR",
    "PromptPair",
    "load_prompts",
    "parse_prompt_file",
    "prompts_fingerprint",
    "image_user_prompt",
    "entity_user_prompt",
    "composition_user_prompt",
    "relation_user_prompt",
]

#: Version of the shipped prompts; recorded with every annotation run. Bump it whenever a
#: shipped prompt file changes.
PROMPT_VERSION = "gbc-prompts-1"

#: The line that separates the system prompt from the user template in a prompt file.
SEPARATOR = "---"


@dataclass(frozen=True)
class PromptPair:
    """A system prompt and the user template of one query kind."""

    system: str
    user_template: str


def parse_prompt_file(text: str, source: str = "<prompt>") -> PromptPair:
    """Split prompt-file text at its first ``---`` line into system prompt and user template.

    Raises ``ValueError`` when the separator is missing or a part is empty.
    """
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == SEPARATOR:
            system = "\n".join(lines[:index]).strip()
            user = "\n".join(lines[index + 1:]).strip()
            if not system or not user:
                raise ValueError(f"{source}: the system prompt and the user template must both be non-empty")
            return PromptPair(system=system, user_template=user)
    raise ValueError(
        f"{source}: a prompt file needs a line '{SEPARATOR}' between the system prompt and the user template"
    )


def _shipped(kind) -> tuple[str, str]:
    """The prompt-file text of ``kind`` (a ``QueryKind``) and where it comes from."""
    if kind.prompt_text is not None:
        return kind.prompt_text, f"<prompt of the {kind.name} kind>"
    path = f"prompts/{kind.name}.txt"
    return resources.files("gbc.annotators").joinpath(path).read_text(encoding="utf-8"), f"gbc/annotators/{path}"


def load_prompts(overrides: Optional[Mapping[str, Union[str, Path]]] = None) -> dict[str, PromptPair]:
    """The prompts of every registered kind: the shipped ones, replaced by ``overrides``
    (kind name -> path of a prompt file in the format described in the module docstring).

    Raises ``ValueError`` for an unknown kind or a malformed file, ``OSError`` when a file
    cannot be read.
    """
    from gbc.annotators.kinds import query_kinds  # the kinds import this module's fillers

    kinds = query_kinds()
    names = [kind.name for kind in kinds]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown prompt kind(s) {unknown}; known kinds: {names}")
    prompts: dict[str, PromptPair] = {}
    for kind in kinds:
        if kind.name in overrides:
            path = Path(overrides[kind.name])
            prompts[kind.name] = parse_prompt_file(path.read_text(encoding="utf-8"), str(path))
        else:
            prompts[kind.name] = parse_prompt_file(*_shipped(kind))
    return prompts


def prompts_fingerprint(prompts: Mapping[str, PromptPair]) -> str:
    """Short digest of the prompt texts, to record which prompts (shipped or overridden)
    produced an annotation."""
    digest = hashlib.sha256()
    for kind in sorted(prompts):
        pair = prompts[kind]
        for part in (kind, pair.system, pair.user_template):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def _fill(template: str, **slots: str) -> str:
    # Plain replacement, not str.format: templates may hold literal braces.
    for key, value in slots.items():
        template = template.replace("{" + key + "}", value)
    return template


def image_user_prompt(p: PromptPair) -> str:
    """The user prompt of the image query (the template has no slot)."""
    return p.user_template


def entity_user_prompt(p: PromptPair, name: str, singularize: bool = True) -> str:
    """The user prompt of the entity query for the object ``name`` (made singular, as the
    crop shows one box of a possibly plural tag, unless ``singularize`` is False)."""
    return _fill(p.user_template, name=singular(name) if singularize else name.strip())


def composition_user_prompt(
    p: PromptPair, count: int, name: str, member_names: Sequence[str], hints: Sequence[str]
) -> str:
    """The user prompt of the composition query: ``count`` boxes of the group ``name``, the
    members' names (``tree 1`` ...) and the spatial hints, one ``- hint`` line each."""
    return _fill(
        p.user_template,
        count=str(count),
        name=name.strip(),
        members=", ".join(member_names),
        hints="\n".join(f"- {h}" for h in hints),
    )


def relation_user_prompt(p: PromptPair, count: int, member_names: Sequence[str]) -> str:
    """The user prompt of the relation query: list ``count`` relations between the members,
    given as ``[a], [b], [c]``."""
    return _fill(p.user_template, count=str(count), members=", ".join(f"[{n}]" for n in member_names))
