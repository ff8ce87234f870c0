"""Pure parsers of MLLM answers (text in, typed answer out; they never raise).

Each parser reads the layout its prompt asks for (see ``gbc/annotators/prompts/``) and
tolerates what models actually write around it: markdown bold or ``#`` headings on the
section headers, numbered / starred / indented bullets, chatter before and after, sections in
another order or missing, truncated answers and plain garbage. A parser always returns a
valid (possibly empty) answer with the raw text kept, so an improved parser can be re-run on
stored answers later.

Compatibility rules kept from the released GBC data (they decide vertex ids and edge texts):
entity names are lower-cased; an image tag loses a trailing number or "on left/right"
(``[Dog 2][single]`` -> ``dog``, label ``multiple``); a feature whose singular equals its
parent's is dropped; every entity must be mentioned (word-bounded) in the detail or short
text; at most ``max_entities`` entities; duplicates are dropped; a detail written over several
lines is joined with single spaces. Composition texts and relation sentences keep the
trailing whitespace of their last line, as the released graphs do, so recorded graphs replay
byte for byte.

>>> a = parse_image_answer("**Detailed Caption:** A horse in snow.\\n"
...                        "Concise Formatted Caption: A [horse][single] in [snow][single].")
>>> a.short, [(e.text, e.label) for e in a.entities]
('A horse in snow.', [('horse', 'single'), ('snow', 'single')])
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

# The answer types live with their formatters (gbc.annotators.answers); each query kind
# (gbc.annotators.kinds) pairs a parser here with its formatter there.
from gbc.annotators.answers import CompositionAnswer, EntityAnswer, ImageAnswer, RelationAnswer, TaggedEntity
from gbc.annotators.text import find_mentions, mention_pattern, singular

__all__ = [
    "DEFAULT_MAX_ENTITIES",
    "parse_image_answer",
    "parse_entity_answer",
    "parse_composition_answer",
    "parse_relation_answer",
]

#: Most entities (image tags or entity features) kept from one answer.
DEFAULT_MAX_ENTITIES = 10

# Section headers by key; each value is a regex alternative matched case-insensitively.
_HEADER_PATTERNS: dict[str, str] = {
    "detail": r"detailed\s+(?:caption|description)",
    "elements": (
        r"(?:identification\s+of\s+(?:the\s+)?)?top[\s-]*level\s+elements?(?:\s+identification)?"
        r"|elements?\s+identification"
    ),
    "short": r"concise\s+(?:formatted\s+)?caption|formatted\s+caption",
    "presence": r"object\s+presen(?:ce|t)",
    "features": (
        r"identification\s+of\s+(?:the\s+)?(?:prominent\s+)?features"
        r"|prominent\s+features?\s+identification"
    ),
    "features_flag": r"prominent\s+features?",
    "shorts": r"short\s+captions?",
    "composition": r"composition",
    "general": r"general\s+descriptions?",
}

_KIND_HEADERS: dict[str, tuple[str, ...]] = {
    "image": ("detail", "elements", "short"),
    "entity": ("presence", "detail", "features", "features_flag", "shorts"),
    "composition": ("composition", "general"),
}


def _header_regex(keys: Sequence[str]) -> re.Pattern[str]:
    # Matched against lines without leading whitespace. Every whitespace run is separated from
    # the next one by a required character, so long runs cannot make the match quadratic.
    names = "|".join(f"(?P<{k}>{_HEADER_PATTERNS[k]})" for k in keys)
    return re.compile(
        r"^(?:#{1,6}[ \t]*)?(?:(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+)?(?:[*_`]+[ \t]*)?"
        rf"(?:{names})(?![\w-])[ \t]*(?:[*_`]+[ \t]*)?"
        r"(?P<colon>[:\uff1a]|(?<=[ \t])[-\u2013\u2014](?=[ \t]))?(?:[ \t]*(?:\*\*|__))?(?P<rest>.*)$",
        re.IGNORECASE,
    )


_HEADER_RES = {kind: _header_regex(keys) for kind, keys in _KIND_HEADERS.items()}
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s*```")
_TAG = re.compile(r"\[([^\[\]\n]+)\]\s*\[([^\[\]\n]*)\]")
_LONE_TAG = re.compile(r"\[([^\[\]\n]+)\](?!\s*\[)")
_BRACKETED = re.compile(r"\[([^\[\]\n]*)\]")
_LABEL_ONLY = re.compile(r"\[\s*(?:single|multiple)\s*\]", re.IGNORECASE)
_TRAILING_COUNT = re.compile(r"^(.+?)\s+\d+$")
_TRAILING_SIDE = re.compile(r"^(.+?)\s+on\s+(?:the\s+)?(?:left|right)$")
_FLAG_NO = re.compile(r"^(?:no|not|false|absent|none)\b")
_FLAG_YES = re.compile(r"^(?:yes|true|present)\b")
_FLAG_NEGATED = re.compile(r"\bnot\s+(?:present|visible|shown|found)\b|\babsent\b")
_NA_VALUES = frozenset({"n/a", "na", "none", "-", "", "null", "not applicable"})
_BARE_NAME_MAX_WORDS = 5


def _split_sections(text: str, kind: str) -> dict[str, list[str]]:
    """Lines of each section of ``text``: the header's inline remainder first, then the body
    lines up to the next header. Only the first occurrence of a header counts; lines before
    the first header are chatter."""
    header_re = _HEADER_RES[kind]
    sections: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    for line in text.splitlines():
        if _FENCE.match(line):
            continue
        m = header_re.match(line.lstrip())
        if m:
            key = next(k for k in _KIND_HEADERS[kind] if m.group(k) is not None)
            rest = m.group("rest")
            accepted = m.group("colon") is not None or not _clean_flag(rest)
            if accepted:
                if key in sections:
                    current = None  # a repeated section (answer written twice): keep the first
                else:
                    current = sections[key] = [rest.lstrip()]
                continue
        if current is not None:
            current.append(line)
    return sections


def _join(lines: Iterable[str], keep_trailing: bool = False, strip_bullets: bool = False) -> str:
    """Non-blank lines joined with single spaces; the last line keeps its trailing
    whitespace when ``keep_trailing``."""
    parts = []
    for line in lines:
        if not line.strip():
            continue
        line = line.lstrip()
        if strip_bullets:
            line = _BULLET.sub("", line, count=1)
        parts.append(line)
    if not parts:
        return ""
    if not keep_trailing:
        return " ".join(p.strip() for p in parts)
    return " ".join([p.strip() for p in parts[:-1]] + [parts[-1]])


def _paragraph_end(lines: Sequence[str]) -> int:
    """Index just past the first paragraph (lines up to the first blank line after content)."""
    seen_content = False
    for index, line in enumerate(lines):
        if line.strip():
            seen_content = True
        elif seen_content:
            return index
    return len(lines)


def _bullets(lines: Sequence[str]) -> list[str]:
    """Bullet items: a bullet line starts an item, following non-blank, non-bullet lines
    continue it, and a non-bullet line after a blank line ends the list (trailing chatter).
    Items keep the trailing whitespace of their last line."""
    items: list[list[str]] = []
    blank_since_item = False
    for line in lines:
        if not line.strip():
            blank_since_item = bool(items)
            continue
        m = _BULLET.match(line)
        if m:
            items.append([line[m.end():]])
            blank_since_item = False
        elif items and not blank_since_item:
            items[-1].append(line)
        elif items:
            break
    return [_join(item, keep_trailing=True) for item in items]


def _clean_flag(text: str) -> str:
    return text.strip().strip("*_`.:;!,\"' ").strip().lower()


def _is_na(text: Optional[str]) -> bool:
    return text is None or _clean_flag(text) in _NA_VALUES


def _flag(lines: Optional[Sequence[str]]) -> Optional[bool]:
    """Yes/No value of a flag section (``Object Presence: No``); None when absent or unclear."""
    if not lines:
        return None
    first = next((line for line in lines if line.strip()), "")
    value = _clean_flag(first)
    if _FLAG_YES.match(value):
        return True
    if _FLAG_NO.match(value) or _FLAG_NEGATED.search(value):
        return False
    return None


def _clean_name(name: str) -> str:
    name = name.replace("*", "").replace("`", "")
    name = name.strip().strip("\"'\u201c\u201d\u2018\u2019[](){}").strip()
    name = name.rstrip(".,;:!?").strip()
    return " ".join(name.split()).lower()


def _clean_label(label: str) -> str:
    label = _clean_flag(label)
    return label if label in ("single", "multiple") else "entity"


def _parse_item(item: str) -> list[tuple[str, str]]:
    """``(name, label)`` pairs of one list item: ``[name][label]`` tags, ``name: [label]``,
    ``name: label`` or a bare short name (label ``entity``)."""
    tags = _TAG.findall(item)
    if tags:
        return [(n, l) for n, l in tags]
    # "name: [label]" / "[name]: [label]": the first bracket with a name before it
    for m in _BRACKETED.finditer(item):
        name = item[: m.start()].rstrip().rstrip(":\uff1a").strip()
        if name:
            return [(name, m.group(1))]
    # "name: label" and "name (label)"
    for separator in (":", "\uff1a", "("):
        name, found, rest = item.partition(separator)
        if not found or not name.strip():
            continue
        if separator == "(":
            name = name.rstrip().rstrip(":\uff1a")
            m = re.match(r"(single|multiple)\)", rest, re.IGNORECASE)
        else:
            m = re.match(r"[ \t*_`]*(single|multiple)\b", rest, re.IGNORECASE)
        if m:
            return [(name, m.group(1))]
    stripped = item.strip()
    if (
        stripped
        and ":" not in stripped
        and len(stripped.split()) <= _BARE_NAME_MAX_WORDS
        and not stripped.endswith((".", "!", "?"))
    ):
        return [(stripped, "entity")]
    return []


def _list_items(lines: Sequence[str]) -> list[tuple[str, str]]:
    """Named items of an identification list: bullet items, plus unbulleted lines that
    carry ``[name][label]`` tags."""
    pairs: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        m = _BULLET.match(line)
        if m:
            pairs.extend(_parse_item(line[m.end():]))
        elif _TAG.search(line):
            pairs.extend(_TAG.findall(line))
        elif _LABEL_ONLY.search(line):  # "name: [single]" written without a bullet
            pairs.extend(_parse_item(line.strip()))
    return pairs


def _normalize_image_entity(name: str, label: str) -> Optional[TaggedEntity]:
    text = _clean_name(name)
    label = _clean_label(label)
    if _is_na(text):
        return None
    if " " in text:
        for pattern in (_TRAILING_COUNT, _TRAILING_SIDE):
            m = pattern.match(text)
            if m:  # "dog 2" / "dog on left": one of several similar objects
                text, label = m.group(1), "multiple"
    return TaggedEntity(text, label) if text else None


def _keep_mentioned(
    entities: Iterable[TaggedEntity], texts: Sequence[Optional[str]], limit: int
) -> list[TaggedEntity]:
    """Entities (first occurrence of each text) mentioned in ``texts``, at most ``limit``."""
    present = [t for t in texts if t]
    seen: set[str] = set()
    kept: list[TaggedEntity] = []
    for entity in entities:
        if len(kept) >= max(limit, 0):
            break
        if entity.text in seen:
            continue
        seen.add(entity.text)
        if find_mentions(present, entity.text):
            kept.append(entity)
    return kept


def _untag(text: str) -> str:
    """Caption text with ``[name][label]`` and lone ``[name]`` tags replaced by the name."""
    text = _TAG.sub(lambda m: m.group(1), text)
    return _LONE_TAG.sub(lambda m: m.group(1), text)


def _normalized(pairs: Iterable[tuple[str, str]]) -> list[TaggedEntity]:
    entities = (_normalize_image_entity(name, label) for name, label in pairs)
    return [e for e in entities if e is not None]


def parse_image_answer(text: str, max_entities: int = DEFAULT_MAX_ENTITIES, reference_rules: bool = False) -> ImageAnswer:
    """Parse the image answer (detail, identification list, tagged concise caption).

    Entities come from the identification list first, then from tags of the concise caption
    not already listed; a name listed in both keeps the list's label; at most ``max_entities``.

    ``reference_rules`` reads the answer as the reference pipeline does: only the list is cut
    to ``max_entities`` names, every object tagged in the concise caption is kept besides
    (those not listed come first), and only ``[name][label]`` tags are untagged.
    """
    raw = text if isinstance(text, str) else ""
    sections = _split_sections(raw, "image")
    detail = _join(sections.get("detail", ()))
    detail = None if _is_na(detail) else detail
    short_lines = sections.get("short", [])
    tagged = _join(short_lines[: _paragraph_end(short_lines)])
    listed = _normalized(_list_items(sections.get("elements", ())))
    if reference_rules:
        short = None if _is_na(tagged) else _TAG.sub(lambda m: m.group(1), tagged).strip()
        kept_list: list[TaggedEntity] = []
        for entity in listed:  # the cut counts distinct names, mentioned or not
            if len(kept_list) < max(max_entities, 0) and all(e.text != entity.text for e in kept_list):
                kept_list.append(entity)
        names = {e.text for e in kept_list}
        in_caption = _normalized(_TAG.findall(tagged)) if short is not None else []
        candidates = [e for e in in_caption if e.text not in names] + kept_list
        entities = _keep_mentioned(candidates, [detail, short], len(candidates))
        return ImageAnswer(detail=detail, short=short or None, entities=entities, raw=raw)
    short = None if _is_na(tagged) else _untag(tagged).strip()
    candidates = list(listed)
    if short is not None:
        candidates += _normalized(_TAG.findall(tagged) + [(n, "entity") for n in _LONE_TAG.findall(tagged)])
    entities = _keep_mentioned(candidates, [detail, short], max_entities)
    return ImageAnswer(detail=detail, short=short or None, entities=entities, raw=raw)


def parse_entity_answer(
    text: str, parent_name: str, max_entities: int = DEFAULT_MAX_ENTITIES
) -> EntityAnswer:
    """Parse the entity answer (presence, detail, prominent features).

    ``present`` is False only when the presence header itself says no. Features naming the
    parent (same singular form) are dropped; names keep their numbers (unlike image tags).
    """
    raw = text if isinstance(text, str) else ""
    sections = _split_sections(raw, "entity")
    if _flag(sections.get("presence")) is False:
        return EntityAnswer(present=False, detail=None, entities=[], shorts=[], raw=raw)
    detail = _join(sections.get("detail", ()))
    detail = None if _is_na(detail) else detail
    shorts = [s.strip() for s in _bullets(sections.get("shorts", ())) if not _is_na(s)]
    flag_lines = sections.get("features_flag", [])
    pairs: list[tuple[str, str]] = []
    if _flag(flag_lines[:1]) is not False:
        pairs = _list_items(sections.get("features", ())) + _list_items(flag_lines[1:])
    parent = singular(parent_name or "")
    candidates = []
    for name, label in pairs:
        name = _clean_name(name)
        if _is_na(name) or (parent and singular(name) == parent):
            continue
        candidates.append(TaggedEntity(name, _clean_label(label)))
    entities = _keep_mentioned(candidates, [detail, *shorts], max_entities)
    return EntityAnswer(present=True, detail=detail, entities=entities, shorts=shorts, raw=raw)


def parse_composition_answer(
    text: str, member_names: Sequence[str], append_missing_members: bool = True
) -> CompositionAnswer:
    """Parse the composition answer (arrangement text and general descriptions).

    With ``append_missing_members`` each member name (``"tree 2"``) the composition text does
    not mention is appended to it (``" tree 2"``), so every member edge has a mention.
    """
    raw = text if isinstance(text, str) else ""
    sections = _split_sections(raw, "composition")
    body = sections.get("composition", [])
    general = sections.get("general")
    overflow: list[str] = []
    if general is None:
        # No "General descriptions:" header: bullets after the first paragraph are descriptions.
        end = _paragraph_end(body)
        body, overflow = body[:end], body[end:]
    composition: Optional[str] = _join(body, keep_trailing=True, strip_bullets=True)
    if _is_na(composition):
        composition = None
    descriptions: list[str] = []
    if general is not None:
        inline = general[0].strip() if general else ""
        if inline and not _is_na(inline):
            descriptions.append(inline)
        descriptions += [d.strip() for d in _bullets(general[1:])]
    else:
        descriptions += [d.strip() for d in _bullets(overflow)]
    descriptions = [d for d in descriptions if not _is_na(d)]
    if composition is not None and append_missing_members:
        for name in member_names:
            if name.strip() and not mention_pattern(name.strip()).search(composition):
                composition += " " + name.strip()
    return CompositionAnswer(composition=composition, descriptions=descriptions, raw=raw)


def _named_members(sentence: str, brackets: Sequence[str], member_names: Sequence[str]) -> list[int]:
    """Indices of the members a sentence names: word-bounded mentions (a mention inside a
    longer member's mention does not count) or a bracketed phrase of the same singular."""
    claimed = bytearray(len(sentence))  # characters already inside a longer member's mention
    found: set[int] = set()
    order = sorted(range(len(member_names)), key=lambda i: -len(member_names[i].strip()))
    for i in order:
        name = member_names[i].strip()
        if not name:
            continue
        for m in mention_pattern(name).finditer(sentence):
            if not any(claimed[m.start():m.end()]):
                found.add(i)
                claimed[m.start():m.end()] = b"\x01" * (m.end() - m.start())
    bracket_forms = {singular(b) for b in brackets if b.strip()}
    for i, name in enumerate(member_names):
        if name.strip() and singular(name) in bracket_forms:
            found.add(i)
    return sorted(found)


def _reference_members(item: str, member_names: Sequence[str]) -> tuple[str, list[int]]:
    """The reference pipeline's reading of one relation sentence: a member counts where its own
    name is written (bracketed or not; ``[bowl]`` is not the member ``bowls``), each member on
    its own; only the brackets around members' names are removed."""
    found = [i for i, name in enumerate(member_names)
             if name.strip() and mention_pattern(name.strip()).search(item)]
    names = {member_names[i].strip().lower() for i in found}
    sentence = _BRACKETED.sub(lambda m: m.group(1) if m.group(1).strip().lower() in names else m.group(0), item)
    return sentence, found


def parse_relation_answer(text: str, member_names: Sequence[str], reference_rules: bool = False) -> RelationAnswer:
    """Parse the relation answer: bullet sentences naming two or more members.

    Brackets are removed from the sentence (keeping their content and capitalisation);
    repeated sentences are kept once, in answer order. A member is named by a word-bounded
    mention (not inside a longer member's) or a bracketed phrase of the same singular form;
    with ``reference_rules`` only by its own name, and other brackets stay (as the reference
    pipeline reads relation answers).
    """
    raw = text if isinstance(text, str) else ""
    lines = [line for line in raw.splitlines() if not _FENCE.match(line)]
    items = _bullets(lines)
    if not items:  # no bullets: lines that bracket two or more names
        items = [line.lstrip() for line in lines if len(_BRACKETED.findall(line)) >= 2]
    relations: list[tuple[str, list[int]]] = []
    seen: set[str] = set()
    for item in items:
        if reference_rules:
            sentence, members = _reference_members(item, member_names)
        else:
            brackets = [b for b, _ in _TAG.findall(item)] + _BRACKETED.findall(item)
            sentence = _BRACKETED.sub(lambda m: m.group(1), _TAG.sub(lambda m: m.group(1), item))
        if not sentence.strip() or sentence in seen:
            continue
        if not reference_rules:
            members = _named_members(sentence, brackets, member_names)
        if len(members) >= 2:
            seen.add(sentence)
            relations.append((sentence, members))
    return RelationAnswer(relations=relations, raw=raw)
