import gzip

import pytest

from gbc.export.tokens import (
    CLIP_BPE_ENV,
    ClipBpeCounter,
    clip_token_counter,
    estimate_clip_tokens,
    estimate_split_to_fit,
    split_sentences,
    split_to_fit,
)


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("A dog. A cat.", ["A dog.", "A cat."]),
        ("Is it? Yes! It is.", ["Is it?", "Yes!", "It is."]),
        ("e.g. the pole is 3.5 m tall. Next one.", ["e.g. the pole is 3.5 m tall.", "Next one."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("  no end punctuation  ", ["no end punctuation"]),
        ("", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def _texts(seed, n):
    # sentences of words of every length, capitalised or not, with digits, punctuation, odd
    # whitespace and letters outside ASCII; some texts fit whole, most long ones do not
    import random

    rng = random.Random(seed)
    words = ["a", "dog", "sofa", "window", "extraordinarily", "Shenzhou", "3.5", "e.g.", "naïve", "東京",
             '"quoted"', "(aside)", "x1", "well-known", "m", "____"]
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            body = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
            sentences.append(body[0].upper() + body[1:] + rng.choice([".", "!", "?", '."', ""]))
        yield rng.choice([" ", "  ", "\n", " \t"]).join(sentences)


@pytest.mark.parametrize("limit", [5, 12, 20, 40, 77])
def test_counting_sentence_by_sentence_gives_what_split_to_fit_gives(limit):
    # estimate_split_to_fit counts each sentence once; the chunks and drops are split_to_fit's
    def by_definition(text):  # not the estimate itself: split_to_fit counts it whole, then per sentence
        return estimate_clip_tokens(text)

    fit_whole = cut = 0
    for text in _texts(limit, 300):
        expected = split_to_fit(text, by_definition, limit)
        assert estimate_split_to_fit(text, limit) == expected
        assert split_to_fit(text, estimate_clip_tokens, limit) == expected
        fit_whole += expected == ([text], 0)
        cut += expected != ([text], 0)
    assert fit_whole and cut  # both outcomes were checked


@pytest.mark.parametrize(
    "text, low, high",
    [
        ("", 2, 2),
        ("a dog", 4, 5),
        ("A dog on a sofa.", 8, 10),
        ("1234", 6, 7),  # CLIP splits digits one by one
        ("Shenzhou", 4, 7),  # rare capitalised names split into several tokens
    ],
)
def test_estimate_is_in_expected_range(text, low, high):
    assert low <= estimate_clip_tokens(text) <= high


def test_estimate_counts_start_and_end_and_grows_with_text():
    one = estimate_clip_tokens("The horse walks through the snow.")
    assert estimate_clip_tokens("The horse walks through the snow. " * 2) > one + 5


def _count_words(text):
    return len(text.split()) + 2


def test_split_to_fit_keeps_sentences_whole_and_within_limit():
    text = " ".join(f"Sentence number {w} has five words." for w in "abcdefghij")
    chunks, dropped = split_to_fit(text, _count_words, max_tokens=20)
    assert dropped == 0
    assert " ".join(chunks) == text
    assert all(_count_words(c) <= 20 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert len(chunks) == 4  # 3 sentences of 6 words fit in 18 + 2


def test_split_to_fit_drops_a_sentence_longer_than_the_limit():
    text = "Short one. " + " ".join(["Word"] * 30) + ". Another short one."
    chunks, dropped = split_to_fit(text, _count_words, max_tokens=10)
    assert dropped == 1
    assert chunks == ["Short one. Another short one."]


def test_text_that_fits_is_returned_unchanged():
    assert split_to_fit("A dog.", _count_words, 77) == (["A dog."], 0)


def _tiny_bpe(tmp_path):
    # A merge table in CLIP's file format: a version line, then one merge per line.
    merges = ["#version: 0.2", "d o", "do g</w>", "c a", "ca t</w>"]
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(merges) + "\n")
    return path


def test_bpe_counter_applies_merges(tmp_path):
    count = ClipBpeCounter(_tiny_bpe(tmp_path))
    assert count("dog") == 3  # "dog</w>" after two merges, plus start and end
    assert count("Dog cat") == 4  # lower-cased, two words
    assert count("dogs") == 5  # do g s</w>: the merge "do g</w>" needs a word-final g
    assert count("cat, 12") == 3 + 1 + 2


def test_counter_choice_follows_environment(tmp_path, monkeypatch):
    from gbc.export import tokens

    tokens._default_counter.cache_clear()
    monkeypatch.setenv(CLIP_BPE_ENV, str(_tiny_bpe(tmp_path)))
    try:
        count, how = clip_token_counter()
        assert how.startswith("exact") and count("dog") == 3
        assert clip_token_counter(exact=False)[0] is estimate_clip_tokens
    finally:
        tokens._default_counter.cache_clear()
    monkeypatch.setenv(CLIP_BPE_ENV, str(tmp_path / "missing.gz"))
    with pytest.raises(FileNotFoundError):
        clip_token_counter()
    tokens._default_counter.cache_clear()


def test_estimate_body_limit_is_the_estimates_own_threshold():
    import math

    from gbc.export.tokens import _ESTIMATE_MARGIN, estimate_body_limit

    for limit in range(0, 200):
        top = estimate_body_limit(limit)
        for body in range(0, 200):
            assert (body <= top) == (2 + math.ceil(body * _ESTIMATE_MARGIN) <= limit), (limit, body)


@pytest.mark.parametrize("limit", [5, 20, 40, 77, None])
def test_caption_rows_with_the_estimate_match_the_general_counting_path(limit):
    """The caption loop tests the estimate inline; a counter that is not the estimate function
    itself (same counts) takes the general path: both must give the same rows."""
    from gbc.export import captions, tokens
    from gbc.schemas.synthetic import synthetic_graph

    flt = captions.CaptionFilter(exact_tokens=False, max_tokens=limit)
    graphs = [synthetic_graph(i) for i in range(40)]
    graphs[0].vertices[1].descs[0].text = "Ünïcode words 12 345, hello_world! " * 6  # not ASCII, digits
    fast = [captions.gbc_captions(g, flt) for g in graphs]

    class Wrapped(captions.CaptionFilter):
        def token_counter(self):
            return (lambda text: tokens.estimate_clip_tokens(text)), "wrapped estimate"

    slow_flt = Wrapped(exact_tokens=False, max_tokens=limit)
    slow = [captions.gbc_captions(g, slow_flt) for g in graphs]
    assert [b.rows for b in fast] == [b.rows for b in slow]
    assert [b.dropped_sentences for b in fast] == [b.dropped_sentences for b in slow]
    if limit == 20:
        assert sum(b.dropped_sentences for b in fast) > 0  # the splitting path ran too
