"""``scripted``: deterministic, rule-based MLLM and detector for tests, demos and benchmarks.

No model is involved. Answers follow the engine's prompt formats (written with the
``format_*`` functions of :mod:`gbc.annotators.parsers`, so the engine's parsers read them
back) and depend only on the request itself: the seed of the spec (``scripted:<seed>``),
the image key, the query context (vertex id, names) and simple statistics of the image
(mean colour and brightness). The same request therefore gets the same answer whatever
batch it arrives in, and different images give different graphs.

The graphs have about the size of GBC10M records (12 to 20 vertices, about 18 model calls
per image): the image answer names three to five objects, the detector finds one box for
most single objects, two to four boxes for plural ones (which become compositions) and
none for a few; entities at depth 1 list up to three parts; deeper entities list none, so
recursion ends by itself.

Answers are made by rules per query kind (image, entity, composition, relation); a kind
registered beyond those is answered with its own ``example_answer``.

Options (validated; unknown keys are errors)::

    gbc annotate images/ --mllm scripted:7 --mllm-option latency_s=0.05 --detector scripted

``odd_rate`` replaces that share of answers with malformed variants (markdown headers,
missing sections, untagged or empty answers) to exercise the parsers; ``fail_rate`` and
``fail_on`` make requests raise :class:`ScriptedFailure`, ``fail_times`` times each
(0: always), to exercise retries and failed images.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pydantic import Field, field_validator

from gbc.errors import GbcError
from gbc.annotators.backends.base import (
    BackendError,
    BackendOptions,
    DetectionRequest,
    MllmRequest,
    PhraseDetections,
)
from gbc.annotators.backends.registry import register_detector, register_mllm
from gbc.annotators.kinds import COMPOSITION, ENTITY, IMAGE, RELATION, QueryKind, get_kind
from gbc.annotators.answers import TaggedEntity

# ---------------------------------------------------------------------------- vocabulary
# Scenes are chosen from the image's colour; each lists (name, label) pairs. Plural names
# are tagged "multiple" and get several boxes; every name passes suitable_for_detection.
_SCENES: Dict[str, List[Tuple[str, str]]] = {
    "outdoor": [
        ("sky", "single"), ("trees", "multiple"), ("house", "single"), ("mountain", "single"),
        ("clouds", "multiple"), ("road", "single"), ("people", "multiple"), ("dog", "single"),
        ("river", "single"), ("birds", "multiple"),
    ],
    "indoor": [
        ("table", "single"), ("chairs", "multiple"), ("lamp", "single"), ("window", "single"),
        ("books", "multiple"), ("sofa", "single"), ("cups", "multiple"), ("cat", "single"),
        ("painting", "single"), ("plants", "multiple"),
    ],
    "night": [
        ("moon", "single"), ("stars", "multiple"), ("street", "single"), ("cars", "multiple"),
        ("building", "single"), ("lights", "multiple"), ("bridge", "single"), ("boat", "single"),
    ],
    "nature": [
        ("field", "single"), ("flowers", "multiple"), ("horse", "single"), ("fence", "single"),
        ("hills", "multiple"), ("barn", "single"), ("sheep", "multiple"), ("pond", "single"),
    ],
}

# Parts named in entity answers (keyed by the singular name); generic parts otherwise.
_PARTS: Dict[str, List[Tuple[str, str]]] = {
    "house": [("roof", "single"), ("windows", "multiple"), ("door", "single"), ("chimney", "single")],
    "building": [("windows", "multiple"), ("entrance", "single"), ("balconies", "multiple")],
    "barn": [("roof", "single"), ("doors", "multiple")],
    "tree": [("trunk", "single"), ("branches", "multiple"), ("canopy", "single")],
    "dog": [("head", "single"), ("ears", "multiple"), ("tail", "single"), ("collar", "single")],
    "cat": [("head", "single"), ("whiskers", "single"), ("tail", "single")],
    "horse": [("mane", "single"), ("saddle", "single"), ("legs", "multiple")],
    "person": [("hat", "single"), ("jacket", "single"), ("hands", "multiple")],
    "car": [("wheels", "multiple"), ("windshield", "single"), ("headlights", "multiple")],
    "table": [("legs", "multiple"), ("tabletop", "single"), ("vase", "single")],
    "chair": [("backrest", "single"), ("legs", "multiple")],
    "sofa": [("cushions", "multiple"), ("armrest", "single")],
    "lamp": [("lampshade", "single"), ("base", "single")],
    "bridge": [("arches", "multiple"), ("railing", "single")],
    "boat": [("sail", "single"), ("hull", "single"), ("oars", "multiple")],
    "mountain": [("peak", "single"), ("snowfield", "single")],
    "painting": [("frame", "single"), ("figures", "multiple")],
}
_GENERIC_PARTS: List[Tuple[str, str]] = [("surface", "single"), ("edge", "single"), ("pattern", "single")]

_TEXTURES = ["smooth", "weathered", "glossy", "rough", "soft", "worn", "bright", "muted"]
_PLACES = ["near the centre", "towards the left", "towards the right", "in the background", "in the foreground"]
_RELATIONS = [
    "stands next to", "is partly hidden behind", "is positioned in front of", "rests below",
    "rises above", "is framed by", "faces", "lies close to",
]

# Answer kinds for odd_rate: malformed variants of each query kind.
_ODD_KINDS = ("markdown", "truncated", "untagged", "empty", "noise")


class ScriptedFailure(GbcError, RuntimeError):
    """Raised by a scripted backend for requests selected by ``fail_rate`` / ``fail_on``."""


def _digest(*parts: Any) -> int:
    """A stable 64-bit hash of ``parts`` (Python's ``hash`` is salted per process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _pick(h: int, items: Sequence[Any], salt: int = 0) -> Any:
    return items[_digest(h, salt) % len(items)]


def _unit(h: int, salt: Any) -> float:
    """A deterministic number in [0, 1)."""
    return (_digest(h, salt) % 1_000_003) / 1_000_003.0


def image_statistics(image: Any) -> Tuple[int, int, int]:
    """Mean RGB of ``image`` (a PIL image or an engine region) quantised to steps of 16;
    ``(0, 0, 0)`` without an image.

    Computed on an 8x8 thumbnail; a region gives its preview, so no crop is ever cut or
    scaled at model size for a rule-based answer.
    """
    if image is None:
        return (0, 0, 0)
    preview = getattr(image, "preview", None)
    data = (preview((8, 8)) if preview is not None else image.convert("RGB").resize((8, 8))).tobytes()
    n = max(1, len(data) // 3)
    means = [sum(data[c::3]) / n for c in range(3)]
    return tuple(int(m) // 16 * 16 for m in means)  # type: ignore[return-value]


def _scene(stats: Tuple[int, int, int]) -> str:
    r, g, b = stats
    brightness = (r + g + b) / 3
    if brightness < 60:
        return "night"
    if g >= r and g >= b:
        return "nature"
    if b >= r:
        return "outdoor"
    return "indoor"


def _colour_word(stats: Tuple[int, int, int]) -> str:
    r, g, b = stats
    if max(r, g, b) - min(r, g, b) < 24:
        return "white" if r > 180 else "black" if r < 60 else "grey"
    return ("red", "green", "blue")[max(range(3), key=lambda c: stats[c])]


def _depth(vertex_id: str) -> int:
    """Depth of an entity from its id: the number of names in the path (box numbers skipped)."""
    if not vertex_id:
        return 0
    return sum(1 for part in vertex_id.split("_") if part and not part.isdigit())


def _singular(text: str) -> str:
    from gbc.annotators.text import singular

    return singular(text)


class _Common:
    """Options handling shared by the MLLM and the detector: seed, latency, failures."""

    options: Any

    def _init_common(self, argument: str, options: Any) -> None:
        argument = (argument or "").strip()
        if argument:
            try:
                self.seed = int(argument)
            except ValueError:
                raise BackendError(f"scripted backend: the spec argument must be an integer seed, got {argument!r}") from None
        else:
            self.seed = 0
        self.options = options
        self.max_batch_size = options.max_batch_size
        self.calls = 0
        self._lock = threading.Lock()
        self._failures: Dict[int, int] = {}

    def _sleep(self, n: int) -> None:
        delay = self.options.latency_s + self.options.latency_per_item_s * n
        if delay > 0:
            time.sleep(delay)

    def _check_failures(self, keys: Sequence[Tuple[str, int]]) -> None:
        """Raise for the batch when one of its requests is selected to fail."""
        opts = self.options
        failing = []
        for image_key, h in keys:
            chosen = any(s and s in image_key for s in opts.fail_on)
            if not chosen and opts.fail_rate > 0:
                chosen = _unit(h, "fail") < opts.fail_rate
            if not chosen:
                continue
            with self._lock:
                seen = self._failures.get(h, 0)
                if opts.fail_times and seen >= opts.fail_times:
                    continue
                self._failures[h] = seen + 1
            failing.append(image_key)
        if failing:
            raise ScriptedFailure(f"scripted failure for {', '.join(sorted(set(failing)))}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]  # locks do not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release."""


class _CommonOptions(BackendOptions):
    latency_s: float = Field(0.0, ge=0, description="seconds slept per call")
    latency_per_item_s: float = Field(0.0, ge=0, description="extra seconds slept per request in a call")
    fail_rate: float = Field(0.0, ge=0, le=1, description="share of requests (chosen by hash) that raise")
    fail_on: List[str] = Field(default_factory=list, description="requests whose image key contains one of these raise")
    fail_times: int = Field(0, ge=0, description="how many times a failing request fails before it succeeds (0: always)")
    max_batch_size: int = Field(16, ge=1, description="largest batch the engine forms")

    @field_validator("fail_on", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # "--mllm-option fail_on=a.jpg,b.jpg" on the command line gives one string.
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


# ---------------------------------------------------------------------------- MLLM
@register_mllm
class ScriptedMllm(_Common):
    """Rule-based MLLM: answers in the engine's formats, deterministic per request."""

    name = "scripted"

    class Options(_CommonOptions):
        odd_rate: float = Field(0.0, ge=0, le=1, description="share of answers replaced by malformed variants")
        max_image_entities: int = Field(5, ge=1, le=10, description="most objects named in an image answer")
        max_features: int = Field(3, ge=0, le=10, description="most parts listed by an entity answer at depth 1")
        feature_depth: int = Field(2, ge=1, description="entities at this depth or deeper list no parts")

    def __init__(self, argument: str = "", options: Optional["ScriptedMllm.Options"] = None):
        self._init_common(argument, options or self.Options())

    def generate(self, requests: Sequence[MllmRequest]) -> List[str]:
        """One answer per request; raises :class:`ScriptedFailure` for requests chosen to fail."""
        hashes = [self._request_hash(r) for r in requests]
        self._sleep(len(requests))
        self._check_failures([(r.image_key, h) for r, h in zip(requests, hashes)])
        with self._lock:
            self.calls += 1
        return [self._answer(r, h) for r, h in zip(requests, hashes)]

    # -------------------------------------------------------------- helpers
    def _request_hash(self, request: MllmRequest) -> int:
        ctx = request.context or {}
        return _digest(self.seed, request.kind, request.image_key, ctx.get("vertex_id", ""), ctx.get("name", ""),
                       "|".join(ctx.get("member_names", []) or []))

    def _answer(self, request: MllmRequest, h: int) -> str:
        kind = _kind_of(request, "scripted MLLM")
        if self.options.odd_rate > 0 and _unit(h, "odd") < self.options.odd_rate:
            return self._odd_answer(kind, request, h)
        return self._normal_answer(kind, request, h)

    def _normal_answer(self, kind: QueryKind, request: MllmRequest, h: int) -> str:
        rule = _RULES.get(kind)
        if rule is not None:
            return rule(self, request, h)
        if kind.example_answer is None:
            raise BackendError(f"scripted MLLM: no rule and no example answer for the query kind {kind.name!r}")
        return kind.example_answer(dict(request.context or {}))

    def _image_objects(self, h: int, stats: Tuple[int, int, int]) -> List[Tuple[str, str]]:
        vocab = _SCENES[_scene(stats)]
        n = 3 + _digest(h, "n") % (self.options.max_image_entities - 2) if self.options.max_image_entities > 3 else self.options.max_image_entities
        # A stable pseudo-random order of the vocabulary, then the first n.
        ranked = sorted(vocab, key=lambda item: _digest(h, "obj", item[0]))
        return ranked[:n]

    def _image_answer(self, request: MllmRequest, h: int) -> str:
        stats = image_statistics(request.image)
        objects = self._image_objects(h, stats)
        colour = _colour_word(stats)
        sentences = [f"The image shows a {_pick(h, _TEXTURES, 1)} {colour}-toned scene."]
        for i, (name, label) in enumerate(objects):
            verb = "There are" if label == "multiple" else "There is a"
            sentences.append(f"{verb} {_pick(h, _TEXTURES, 10 + i)} {name} {_pick(h, _PLACES, 20 + i)}.")
        detail = " ".join(sentences)
        # The concise caption tags the first objects; the rest go to the identification list.
        in_short = objects[: max(2, len(objects) - 1)]
        tagged = ", ".join(f"[{name}][{label}]" for name, label in in_short)
        short_tagged = f"A {colour}-toned view with {tagged}."
        listed = [TaggedEntity(text=name, label=label) for name, label in objects]
        return IMAGE.format(detail, short_tagged, listed)

    def _entity_answer(self, request: MllmRequest, h: int) -> str:
        stats = image_statistics(request.image)
        ctx = request.context or {}
        name = str(ctx.get("name") or "object")
        vertex_id = str(ctx.get("vertex_id") or "")
        noun = _singular(name) or name
        # A few crops hold nothing recognisable: the engine drops those vertices.
        if _unit(h, "absent") < 0.04:
            return ENTITY.format("", [], present=False)
        depth = _depth(vertex_id)
        features: List[Tuple[str, str]] = []
        if depth < self.options.feature_depth and self.options.max_features > 0:
            candidates = _PARTS.get(noun, _GENERIC_PARTS)
            # About a third of the entities are leaves, the others list one part or more; members
            # of a numbered group ("trees_1") rarely list parts, which keeps graphs GBC10M-sized.
            grouped = vertex_id.rsplit("_", 1)[-1].isdigit()
            most = 1 if grouped else min(self.options.max_features, len(candidates))
            leaf = _unit(h, "leaf") < (0.75 if grouped else 0.35)
            k = 0 if leaf else 1 + _digest(h, "k") % most
            features = sorted(candidates, key=lambda item: _digest(h, "part", item[0]))[:k]
        colour = _colour_word(stats)
        detail = f"The {noun} is {_pick(h, _TEXTURES, 2)} and mostly {colour}."
        if features:
            detail += " It has " + ", ".join(
                f"{'' if label == 'multiple' else 'a '}{_pick(h, _TEXTURES, 30 + i)} {feat}"
                for i, (feat, label) in enumerate(features)
            ) + "."
        detail += f" It sits {_pick(h, _PLACES, 3)} of the crop."
        return ENTITY.format(detail, [TaggedEntity(text=f, label=lab) for f, lab in features])

    def _composition_answer(self, request: MllmRequest, h: int) -> str:
        ctx = request.context or {}
        members = [str(m) for m in ctx.get("member_names") or []]
        group = str(ctx.get("name") or "objects")
        if not members:
            return COMPOSITION.format(f"The {group} form a loose group.", [])
        parts = [f"{members[0].capitalize()} is on the left"]
        for prev, cur in zip(members, members[1:]):
            parts.append(f"{cur} {_pick(h, _RELATIONS, len(parts))} {prev}")
        composition = "; ".join(parts) + "."
        descriptions = [
            f"The {group} look {_pick(h, _TEXTURES, 4)} and similar in size.",
            f"They are spread {_pick(h, _PLACES, 5)}.",
        ]
        return COMPOSITION.format(composition, descriptions)

    def _relation_answer(self, request: MllmRequest, h: int) -> str:
        ctx = request.context or {}
        members = [str(m) for m in ctx.get("member_names") or []]
        if len(members) < 2:
            return RELATION.format([])
        # Distinct pairs in a stable pseudo-random order; one sentence may name three members.
        pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
        pairs.sort(key=lambda ab: _digest(h, "pair", ab[0], ab[1]))
        n = 1 + _digest(h, "n") % min(3, len(pairs))
        sentences = []
        for i, (a, b) in enumerate(pairs[:n]):
            sentence = f"The [{a}] {_pick(h, _RELATIONS, 40 + i)} the [{b}]"
            third = [m for m in members if m not in (a, b)]
            if third and _unit(h, ("third", i)) < 0.3:
                sentence += f" near the [{_pick(h, third, 50 + i)}]"
            sentences.append(sentence + ".")
        return RELATION.format(list(dict.fromkeys(sentences)))

    def _odd_answer(self, kind: QueryKind, request: MllmRequest, h: int) -> str:
        """A malformed answer of the kind a real model sometimes writes (never the normal one)."""
        normal = self._normal_answer(kind, request, h)
        first = _digest(h, "odd-kind") % len(_ODD_KINDS)
        for i in range(len(_ODD_KINDS)):
            odd = _malformed(normal, _ODD_KINDS[(first + i) % len(_ODD_KINDS)])
            if odd != normal:
                return odd
        return "I'm sorry, I cannot help with that image."


# The rules of the built-in kinds, by kind.
_RULES: Dict[QueryKind, Callable[[ScriptedMllm, MllmRequest, int], str]] = {
    IMAGE: ScriptedMllm._image_answer,
    ENTITY: ScriptedMllm._entity_answer,
    COMPOSITION: ScriptedMllm._composition_answer,
    RELATION: ScriptedMllm._relation_answer,
}


def _kind_of(request: MllmRequest, backend: str) -> QueryKind:
    try:
        return get_kind(request.kind)
    except KeyError as exc:
        raise BackendError(f"{backend}: {exc.args[0]}") from None


def _malformed(normal: str, variant: str) -> str:
    if variant == "empty":
        return ""
    if variant == "noise":
        return "I'm sorry, I cannot help with that image."
    if variant == "markdown":
        # Bold headers: "Detailed Caption:" -> "**Detailed Caption:**".
        lines = []
        for line in normal.splitlines():
            head, sep, rest = line.partition(":")
            lines.append(f"**{head}:**{rest}" if sep and not line.startswith("-") else line)
        return "\n".join(lines)
    if variant == "truncated":
        return normal[: len(normal) // 2]
    # untagged: brackets removed, so no entity is tagged and no relation member bracketed.
    return normal.replace("[", "").replace("]", "")


# ---------------------------------------------------------------------------- detector
@register_detector
class ScriptedDetector(_Common):
    """Rule-based detector: deterministic boxes for each phrase, relative to the request image.

    Single objects get one box (a few get none); plural ones two to four side by side,
    which the engine turns into compositions; parts lie inside their entity's crop.
    """

    name = "scripted"

    class Options(_CommonOptions):
        miss_rate: float = Field(0.1, ge=0, le=1, description="share of phrases with no box")
        max_boxes: int = Field(4, ge=2, le=12, description="most boxes for a phrase labelled multiple")

    def __init__(self, argument: str = "", options: Optional["ScriptedDetector.Options"] = None):
        self._init_common(argument, options or self.Options())

    def detect(self, requests: Sequence[DetectionRequest]) -> List[Dict[str, PhraseDetections]]:
        """For each request, ``{phrase: PhraseDetections}`` (phrases without a box are absent)."""
        hashes = [_digest(self.seed, r.image_key, (r.context or {}).get("vertex_id", ""), "|".join(r.phrases))
                  for r in requests]
        self._sleep(len(requests))
        self._check_failures([(r.image_key, h) for r, h in zip(requests, hashes)])
        with self._lock:
            self.calls += 1
        return [self._detect_one(r) for r in requests]

    def _detect_one(self, request: DetectionRequest) -> Dict[str, PhraseDetections]:
        ctx = request.context or {}
        parent = str(ctx.get("vertex_id", ""))
        labels = ctx.get("labels") or {}
        stats = image_statistics(request.image)
        out: Dict[str, PhraseDetections] = {}
        for phrase in request.phrases:
            h = _digest(self.seed, request.image_key, parent, phrase, stats)
            if _unit(h, "miss") < self.options.miss_rate:
                continue
            label = labels.get(phrase, "single")
            if label == "multiple":
                # Two boxes most often, fewer the more there are (2: 1/2, 3: 1/4, 4: 1/8, ...).
                n = 2
                while n < self.options.max_boxes and _unit(h, ("more", n)) < 0.5:
                    n += 1
            else:
                n = 1
            out[phrase] = self._boxes(h, n, inside=bool(parent))
        return out

    @staticmethod
    def _boxes(h: int, n: int, inside: bool) -> PhraseDetections:
        """``n`` disjoint boxes laid out in a row (scores strictly decreasing)."""
        boxes: List[Tuple[float, float, float, float]] = []
        scores: List[float] = []
        # Parts stay well inside the crop and below 80 % of its area.
        lo, hi = (0.1, 0.9) if inside else (0.02, 0.98)
        slot = (hi - lo) / n
        top = lo + (hi - lo) * 0.4 * _unit(h, "top")
        height = (hi - top) * (0.45 + 0.5 * _unit(h, "height"))
        for i in range(n):
            width = slot * (0.55 + 0.4 * _unit(h, ("w", i)))
            left = lo + i * slot + (slot - width) * _unit(h, ("x", i))
            dy = 0.05 * _unit(h, ("y", i))
            boxes.append((round(left, 4), round(top + dy, 4), round(left + width, 4), round(min(top + dy + height, hi), 4)))
            scores.append(round(0.9 - 0.12 * i - 0.05 * _unit(h, ("s", i)), 4))
        return PhraseDetections(boxes=boxes, scores=scores)
