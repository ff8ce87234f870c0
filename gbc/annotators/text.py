"""Text helpers for entity names: singular forms, detectability and mentions in captions.

Entity names come from the MLLM (``"trees"``, ``"two men"``, ``"pots and pans"``). The
annotator compares them by their singular form (duplicate merging, dropping a feature that
names its own parent), names composition members ``"<singular> <k>"`` (``"tree 1"``) and
checks that every tagged name is actually mentioned in the caption that introduced it.

The singular form is computed by a rule table with irregular forms, written for the nouns an
image caption uses; only the last word of a phrase is inflected (``"pots and pans"`` ->
``"pots and pan"``, as the released GBC data names its composition members).

>>> singular("two men"), singular("leaves"), singular("glasses"), singular("series")
('man', 'leaf', 'glass', 'series')
>>> find_mentions(["A tree and two Trees.", "tree"], "trees")
[(0, 15, 20)]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

__all__ = [
    "QUANTIFIERS",
    "NOT_DETECTABLE",
    "singular",
    "suitable_for_detection",
    "same_object",
    "find_mentions",
    "mention_pattern",
]

#: Leading words dropped from a multi-word name before it is made singular.
QUANTIFIERS: frozenset[str] = frozenset(
    "a an some many several few one two three four five six seven eight nine ten eleven "
    "twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
)

#: Names that are positions, not objects: never sent to the detector.
NOT_DETECTABLE: frozenset[str] = frozenset({"right", "left", "top", "bottom", "front", "back", "side"})

# Plural -> singular forms that no suffix rule produces.
_IRREGULAR: dict[str, str] = {
    "men": "man", "women": "woman", "people": "person", "persons": "person",
    "children": "child", "feet": "foot", "teeth": "tooth", "geese": "goose",
    "mice": "mouse", "lice": "louse", "oxen": "ox", "dice": "die",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "alumni": "alumnus",
    "radii": "radius", "stimuli": "stimulus", "nuclei": "nucleus", "foci": "focus",
    "loci": "locus", "syllabi": "syllabus", "hippopotami": "hippopotamus",
    "leaves": "leaf", "knives": "knife", "wives": "wife", "lives": "life",
    "wolves": "wolf", "halves": "half", "calves": "calf", "shelves": "shelf",
    "scarves": "scarf", "thieves": "thief", "loaves": "loaf", "hooves": "hoof",
    "elves": "elf", "selves": "self", "sheaves": "sheaf", "dwarves": "dwarf",
    "wharves": "wharf", "midwives": "midwife", "housewives": "housewife",
    "penknives": "penknife", "jackknives": "jackknife",
    "criteria": "criterion", "phenomena": "phenomenon", "bacteria": "bacterium",
    "strata": "stratum", "curricula": "curriculum", "memoranda": "memorandum",
    "analyses": "analysis", "crises": "crisis", "theses": "thesis",
    "hypotheses": "hypothesis", "diagnoses": "diagnosis", "oases": "oasis",
    "parentheses": "parenthesis", "synopses": "synopsis", "axes": "axe",
    "indices": "index", "vertices": "vertex", "matrices": "matrix",
    "appendices": "appendix", "quizzes": "quiz", "passers-by": "passer-by",
    "shoes": "shoe", "horseshoes": "horseshoe", "snowshoes": "snowshoe",
}

# Words that look plural but are their own singular (or have no singular in captions).
_INVARIANT: frozenset[str] = frozenset(
    """series species sheep fish deer moose news scissors pants jeans shorts trousers
    clothes aircraft spacecraft hovercraft salmon trout bison swine equipment furniture
    information means headquarters physics mathematics politics economics athletics
    gymnastics electronics graphics ethics corps chassis offspring cattle police
    tongs pliers binoculars goggles tights leggings overalls pajamas pyjamas sunglasses
    eyeglasses spectacles barracks gallows data media graffiti biceps triceps""".split()
)

# Singular nouns ending in "s" (their plural adds "es", handled below).
_S_SINGULARS: frozenset[str] = frozenset(
    """bus gas lens iris canvas atlas alias bias christmas pancreas tennis trellis
    pelvis debris marquis metropolis acropolis mantis ibis cannabis chaos cosmos kudos
    pathos ethos bonus circus campus cactus virus status lotus walrus octopus platypus
    hippopotamus asparagus hibiscus crocus chorus abacus citrus census nucleus stylus
    genus fungus fetus focus apparatus thesaurus sinus torus rhombus papyrus eucalyptus
    octopus cirrus cumulus stratus nimbus radius uterus mucus humus hummus couscous
    precipice""".split()
)

# Singulars ending in "u" (so "menus" -> "menu", not kept like "bus").
_U_SINGULARS: frozenset[str] = frozenset(
    "menu emu gnu tutu guru haiku bayou zebu caribou tofu snafu bijou kudzu tabu".split()
)

# Singulars ending in "ie" ("cookies" -> "cookie", not "cooky").
_IE_SINGULARS: frozenset[str] = frozenset(
    """movie cookie pie tie lie die brownie zombie calorie rookie selfie smoothie goalie
    collie hoodie veggie genie prairie birdie beanie boogie auntie magpie necktie bowtie
    hippie yuppie pixie sortie lingerie freebie newbie sweetie cutie kiddie doggie budgie
    walkie talkie specie eyrie coterie menagerie reverie rotisserie""".split()
)

# Singulars ending in "oe" ("canoes" -> "canoe", whereas "potatoes" -> "potato").
_OE_SINGULARS: frozenset[str] = frozenset(
    "toe canoe oboe foe floe hoe roe sloe throe tiptoe doe aloe woe mistletoe shoe".split()
)

# Singulars ending in "che" or "se" after "u" ("niches", "houses" keep the "e").
_CHE_SINGULARS: frozenset[str] = frozenset(
    """niche cache ache headache toothache moustache mustache avalanche cliche quiche
    creche psyche panache microfiche""".split()
)
_USE_SINGULARS: frozenset[str] = frozenset(
    "use fuse muse ruse excuse abuse refuse recluse misuse overuse hypotenuse".split()
)

# Nouns ending in "men" that are singular.
_MEN_SINGULARS: frozenset[str] = frozenset(
    "specimen abdomen omen stamen regimen hymen acumen semen ramen lumen".split()
)

# Irregular plurals that also end compound words ("grandchildren", "salespeople").
_COMPOUND_IRREGULAR: tuple[str, ...] = ("children", "people", "teeth", "feet", "geese", "mice")

_WORD_CHARS = re.compile(r"[a-z]")


def _singular_word(word: str) -> str:
    """Singular of one lower-case word; unknown shapes are returned unchanged."""
    if len(word) <= 2 or not _WORD_CHARS.search(word[-1]):
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _INVARIANT or word in _S_SINGULARS:
        return word
    if word.endswith("men") and word not in _MEN_SINGULARS:
        return word[:-3] + "man"  # firemen, policemen, women
    for plural in _COMPOUND_IRREGULAR:
        if word.endswith(plural):
            return word[: -len(plural)] + _IRREGULAR[plural]  # grandchildren, salespeople
    if not word.endswith("s") or word.endswith(("ss", "'s")):
        return word
    if word.endswith("us"):
        return word[:-1] if word[:-1] in _U_SINGULARS else word  # bus, cactus; menus -> menu
    if word.endswith("is"):
        if word.endswith(("sis", "xis", "itis")):
            return word
        return word[:-1]  # kiwis, skis, taxis
    if word.endswith("es"):
        stem = word[:-2]  # without "es"
        if stem in _S_SINGULARS:
            return stem  # buses, gases, lenses, cactuses
        if word.endswith("ies"):
            return word[:-1] if word[:-1] in _IE_SINGULARS else word[:-3] + "y"
        if word.endswith("oes"):
            return word[:-1] if word[:-1] in _OE_SINGULARS else word[:-2]
        if word.endswith(("sses", "shes", "xes", "zzes")):
            return stem
        if word.endswith("ches"):
            return word[:-1] if word[:-1] in _CHE_SINGULARS else stem
        if word.endswith("uses"):
            if word[:-1] in _USE_SINGULARS or word.endswith(("ouses", "auses")):
                return word[:-1]  # houses, causes, fuses
            return stem  # viruses, bonuses
        return word[:-1]  # trees, vases, waves, prizes
    return word[:-1]


@lru_cache(maxsize=65536)
def singular(text: str) -> str:
    """Lower-cased singular form of an entity name.

    A leading quantifier (``a``, ``some``, ``two`` ... ``twenty``) of a multi-word name is
    dropped; then the last word is made singular, keeping hyphenated prefixes.

    >>> [singular(t) for t in ("Trees", "people", "some apples", "cacti", "feet", "snow")]
    ['tree', 'person', 'apple', 'cactus', 'foot', 'snow']
    """
    words = text.strip().lower().split()
    if not words:
        return ""
    if len(words) > 1 and words[0] in QUANTIFIERS:
        words = words[1:]
    last = words[-1]
    if last in _IRREGULAR or "-" not in last:
        words[-1] = _singular_word(last)
    else:
        head, _, tail = last.rpartition("-")
        words[-1] = head + "-" + _singular_word(tail)
    return " ".join(words)


def suitable_for_detection(text: str) -> bool:
    """Whether a name can be sent to the detector and used in a vertex id.

    False for empty names, positions (``left``, ``top`` ...), pure digits (they would collide
    with the ``_k`` box numbering of ids) and names containing ``_`` (the id separator).
    """
    name = text.strip().lower()
    if not name or name in NOT_DETECTABLE or name.isdigit() or "_" in name:
        return False
    return True


def same_object(a: str, b: str) -> bool:
    """Rule-based test that two names denote the same kind of object (equal singular forms)."""
    sa, sb = singular(a), singular(b)
    return bool(sa) and sa == sb


@lru_cache(maxsize=16384)
def mention_pattern(phrase: str) -> re.Pattern[str]:
    """Case-insensitive pattern of ``phrase`` bounded by non-word characters at word ends."""
    left = r"(?<!\w)" if re.match(r"\w", phrase) else ""
    right = r"(?!\w)" if re.search(r"\w$", phrase) else ""
    return re.compile(left + re.escape(phrase) + right, re.IGNORECASE)


def first_mention(texts: Sequence[str], phrase: str) -> "tuple[int, int, int] | None":
    """The first ``(text index, start, end)`` of :func:`find_mentions`, found without looking further."""
    phrase = phrase.strip()
    if not phrase:
        return None
    pattern = mention_pattern(phrase)
    for index, text in enumerate(texts):
        if text:
            m = pattern.search(text)
            if m is not None:
                return index, m.start(), m.end()
    return None


def find_mentions(texts: Sequence[str], phrase: str) -> list[tuple[int, int, int]]:
    """All word-bounded, case-insensitive occurrences of ``phrase`` in ``texts``.

    Returns ``(text index, start, end)`` triples in order; ``None`` texts are skipped.
    """
    phrase = phrase.strip()
    if not phrase:
        return []
    pattern = mention_pattern(phrase)
    found: list[tuple[int, int, int]] = []
    for index, text in enumerate(texts):
        if not text:
            continue
        found.extend((index, m.start(), m.end()) for m in pattern.finditer(text))
    return found
