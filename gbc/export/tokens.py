"""Counting CLIP tokens and splitting long captions at sentence boundaries.

CLIP text encoders read at most 77 tokens (start and end tokens included). The exact
tokenizer is a byte-level BPE whose merge table (``bpe_simple_vocab_16e6.txt.gz``) ships
inside the ``open_clip`` and ``clip`` packages, not with this one. ``clip_token_counter()``
therefore picks:

1. the exact BPE count when a merge table is found: the file named by the environment
   variable ``GBC_CLIP_BPE``, or the one inside an installed ``open_clip`` package (found
   without importing it, so torch is not loaded);
2. otherwise ``estimate_clip_tokens``, a conservative estimate (see its docstring) that
   over-counts rather than under-counts, so a caption it accepts fits the real limit.

Both counts include the start and end tokens, as ``len(tokenizer(text))`` does for CLIP.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

#: CLIP's context length, start and end tokens included.
CLIP_MAX_TOKENS = 77
#: Environment variable naming a CLIP BPE merge table (``bpe_simple_vocab_16e6.txt.gz``).
CLIP_BPE_ENV = "GBC_CLIP_BPE"
#: Merges of the CLIP vocabulary actually used (49408 tokens = 256 bytes x 2 + merges + 2 specials).
_N_CLIP_MERGES = 49152 - 256 - 2

# ------------------------------------------------------------------ the estimate
# Calibrated against the exact tokenizer on 2,194 texts (the 459 captions of the reference
# wiki graphs, 360 synthetic captions, and all their sentences): a lower-case word of up to 6
# letters is almost always one token; longer words cost about one more token per 5 letters;
# capitalised words are often rarer names and are split more; every digit and every
# punctuation character is its own token (CLIP splits digits singly; punctuation runs such
# as "..." may merge, so counting each character over-counts). With a 10 % margin on top the
# estimate never under-counted a text of that set and over-counts by 24 % on average.
_WORD_RE = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_", re.UNICODE)
_ESTIMATE_MARGIN = 1.10
_SHORT_WORD = 6
_LETTERS_PER_EXTRA_TOKEN = 5
_CAPITALISED_LETTERS_PER_EXTRA_TOKEN = 3


@functools.lru_cache(maxsize=65536)
def _estimate_word(word: str) -> int:
    if not word[0].isalpha():
        return 1
    n = len(word)
    if word[0].isupper() and n > 3:
        return 1 + math.ceil((n - 3) / _CAPITALISED_LETTERS_PER_EXTRA_TOKEN)
    if n <= _SHORT_WORD:
        return 1
    return 1 + math.ceil((n - _SHORT_WORD) / _LETTERS_PER_EXTRA_TOKEN)


#: Distinct whitespace-separated chunks whose estimated cost is remembered (new chunks are
#: still counted once the table is full, just not stored).
ESTIMATE_CACHE_SIZE = 1 << 18
# A plain dict read through ``map(dict.__getitem__, ...)`` costs a fraction of an
# ``lru_cache`` hit (no key building, no recency bookkeeping); most chunks of any caption
# are common words already in the table.
_CHUNK_COSTS: Dict[str, int] = {}


def _estimate_chunk(chunk: str) -> int:
    cost = _CHUNK_COSTS.get(chunk)
    if cost is None:
        cost = sum(map(_estimate_word, _WORD_RE.findall(chunk)))
        if len(_CHUNK_COSTS) < ESTIMATE_CACHE_SIZE:
            _CHUNK_COSTS[chunk] = cost
    return cost


def estimate_clip_tokens(text: str) -> int:
    """A conservative estimate of the CLIP token count of ``text`` (start/end tokens included).

    >>> estimate_clip_tokens("A dog on a sofa.")
    9
    """
    return 2 + math.ceil(_estimate_body(text) * _ESTIMATE_MARGIN)


def _estimate_body(text: str) -> int:
    # Tokens never span whitespace, so the cost is a sum over whitespace-separated chunks;
    # caching chunk costs makes repeated words (most of any caption) nearly free.
    chunks = text.split()
    try:
        return sum(map(_CHUNK_COSTS.__getitem__, chunks))
    except KeyError:  # some chunk not seen yet: count (and remember) them one by one
        return sum(map(_estimate_chunk, chunks))


@functools.lru_cache(maxsize=64)
def estimate_body_limit(max_tokens: int) -> int:
    """The largest sum of chunk costs whose estimate is at most ``max_tokens``: a text whose
    cached chunk costs add up to no more fits (``estimate_clip_tokens`` written out for the
    caption loop, which then needs no rounding per text)."""
    body = -1
    while 2 + math.ceil((body + 1) * _ESTIMATE_MARGIN) <= max_tokens:
        body += 1
    return body


def cached_chunk_costs() -> Dict[str, int]:
    """The table of remembered chunk costs (read-only for callers; see ``estimate_clip_tokens``)."""
    return _CHUNK_COSTS


# ------------------------------------------------------------------ the exact BPE count
def _byte_alphabet() -> Dict[int, str]:
    # CLIP's byte-level BPE works on printable stand-ins for the 256 bytes: printable latin-1
    # bytes stand for themselves, the others are moved to code points from 256 upwards.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class ClipBpeCounter:
    """Exact CLIP token counts from a BPE merge table (the ``bpe_simple_vocab_16e6.txt.gz`` file).

    Follows CLIP's text pipeline: HTML unescape, whitespace collapse, lower case, the CLIP
    pre-tokenisation pattern, byte-level BPE with an end-of-word marker. ``ftfy`` repair is
    applied only when ``ftfy`` is installed (it changes nothing on clean text).
    """

    def __init__(self, merges_path: str | os.PathLike):
        import regex

        self.path = Path(merges_path)
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")[1 : _N_CLIP_MERGES + 1]
        self._ranks: Dict[Tuple[str, str], int] = {}
        for line in lines:
            pair = line.split()
            if len(pair) == 2:
                self._ranks[(pair[0], pair[1])] = len(self._ranks)
        self._bytes = _byte_alphabet()
        self._pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache: Dict[str, int] = {}
        try:
            import ftfy  # type: ignore

            self._fix = ftfy.fix_text
        except ImportError:
            self._fix = None

    def _bpe_length(self, word: str) -> int:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        ranks = self._ranks
        while len(parts) > 1:
            best = None
            best_rank = None
            for pair in zip(parts, parts[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            merged: List[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._cache) < 200_000:
            self._cache[word] = len(parts)
        return len(parts)

    def __call__(self, text: str) -> int:
        import html

        if self._fix is not None:
            text = self._fix(text)
        text = html.unescape(html.unescape(text))
        text = " ".join(text.split()).lower()
        n = 0
        for piece in self._pattern.findall(text):
            word = "".join(self._bytes[b] for b in piece.encode("utf-8"))
            n += self._bpe_length(word)
        return n + 2


def find_clip_bpe() -> Optional[Path]:
    """The CLIP merge table to use: ``$GBC_CLIP_BPE``, else the one inside ``open_clip``, else None."""
    env = os.environ.get(CLIP_BPE_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{CLIP_BPE_ENV}={env} is not a file")
        return path
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def _default_counter() -> Tuple[Callable[[str], int], str]:
    path = find_clip_bpe()
    if path is not None:
        return ClipBpeCounter(path), f"exact CLIP BPE ({path})"
    return estimate_clip_tokens, "estimate (no CLIP BPE table found; conservative)"


def clip_token_counter(exact: Optional[bool] = None) -> Tuple[Callable[[str], int], str]:
    """``(count, description)``: the exact counter when available, else the estimate.

    ``exact=True`` raises when no merge table is found; ``exact=False`` forces the estimate.
    """
    if exact is False:
        return estimate_clip_tokens, "estimate (forced)"
    counter, how = _default_counter()
    if exact and counter is estimate_clip_tokens:
        raise FileNotFoundError(
            f"no CLIP BPE merge table found: set {CLIP_BPE_ENV} to bpe_simple_vocab_16e6.txt.gz "
            "or install open_clip"
        )
    return counter, how


# ------------------------------------------------------------------ splitting
# A sentence ends at . ! or ? followed by space(s) and a capital letter, digit or quote; this
# keeps "e.g. the" and "3.5 m" intact, which a plain split on ". " would not.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(\s+)(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> List[str]:
    """Split ``text`` into sentences (stripped, empty ones dropped); closing quotes stay with their sentence."""
    out: List[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.start(1)])
        start = m.end(1)
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


#: Texts longer than this many characters per token of the limit seldom fit whole (every
#: whitespace-separated chunk costs a token): under the estimate they are counted sentence by
#: sentence straight away (``estimate_split_to_fit``), not once whole and again per sentence.
#: For CLIP's 77 tokens, 308 characters. The chunks are the same either way.
LONG_TEXT_CHARS_PER_TOKEN = 4


def split_to_fit(text: str, count: Callable[[str], int], max_tokens: int = CLIP_MAX_TOKENS) -> Tuple[List[str], int]:
    """Pack the sentences of ``text`` greedily into chunks of at most ``max_tokens`` tokens.

    Returns ``(chunks, n_dropped)``: a single sentence longer than the limit is dropped rather
    than cut mid-sentence (``n_dropped`` counts them). Text that fits is returned whole.
    Each sentence is counted once: joining sentences with a space adds their counts (less
    the start/end tokens of all but one), exactly for the BPE tokenizer and conservatively
    for the estimate.
    """
    if count is estimate_clip_tokens and len(text) > LONG_TEXT_CHARS_PER_TOKEN * max_tokens:
        return estimate_split_to_fit(text, max_tokens)
    if count(text) <= max_tokens:
        return [text], 0
    return split_long(text, count, max_tokens)


def split_long(text: str, count: Callable[[str], int], max_tokens: int = CLIP_MAX_TOKENS) -> Tuple[List[str], int]:
    """``split_to_fit`` for a text already known not to fit whole (its count is not taken again)."""
    sentences = split_sentences(text)
    return _pack(sentences, [count(sentence) - 2 for sentence in sentences], max_tokens)


def estimate_split_to_fit(text: str, max_tokens: int = CLIP_MAX_TOKENS) -> Tuple[List[str], int]:
    """``split_to_fit(text, estimate_clip_tokens, max_tokens)``, counting each sentence once,
    for texts that seldom fit whole (long ones): the chunk costs of a text are those of its
    sentences (sentences end at whitespace), so their sum decides whether it fits, and each
    sentence's count is the one ``split_long`` would take."""
    sentences = split_sentences(text)
    bodies = list(map(_estimate_body, sentences))
    if sum(bodies) <= estimate_body_limit(max_tokens):
        return [text], 0
    margin = _ESTIMATE_MARGIN
    return _pack(sentences, [math.ceil(body * margin) for body in bodies], max_tokens)


def _pack(sentences: List[str], bodies: List[int], max_tokens: int) -> Tuple[List[str], int]:
    # Greedy packing of sentences whose counts less the start/end tokens are ``bodies``.
    chunks: List[str] = []
    dropped = 0
    current: List[str] = []
    used = 2  # start and end tokens of the chunk being filled
    for sentence, body in zip(sentences, bodies):
        if body + 2 > max_tokens:
            dropped += 1
            continue
        if current and used + body > max_tokens:
            chunks.append(" ".join(current))
            current, used = [], 2
        current.append(sentence)
        used += body
    if current:
        chunks.append(" ".join(current))
    return chunks, dropped
