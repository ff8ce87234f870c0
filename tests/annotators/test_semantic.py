"""Semantic same-object test with the bundled all-MiniLM-L6-v2 (real model, offline)."""

import pytest

from gbc.annotators.semantic import SemanticSameObject


@pytest.fixture(scope="module")
def same():
    return SemanticSameObject(threshold=0.8)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("sofa", "couch", True),       # synonyms: cosine ~0.86
        ("dogs", "dog", True),         # equal singular forms, no model needed
        ("Two Trees", "tree", True),
        ("cup", "mug", False),         # related but below 0.8 (~0.71)
        ("car", "tree", False),
        ("", "tree", False),
        ("people", "person", True),
    ],
)
def test_same_object(same, a, b, expected):
    assert same(a, b) is expected


def test_threshold_and_similarity(same):
    assert 0.6 < same.similarity("cup", "mug") < 0.8
    assert same.similarity("sofa", "sofa") == pytest.approx(1.0, abs=1e-5)
    assert SemanticSameObject(threshold=0.65)("cup", "mug")
    with pytest.raises(ValueError):
        SemanticSameObject(threshold=1.5)


def test_embeddings_are_cached_per_phrase():
    same = SemanticSameObject(cache_size=3)
    same("sofa", "couch")
    assert same.encoded == 2
    same("Sofa ", "couch")  # same key after normalisation
    assert same.encoded == 2
    same.embed(["car", "tree", "sofa", "car"])
    assert same.encoded == 4 and len(same._cache) == 3  # bounded: the least recently used went
    vectors = same.embed(["car", "car"])
    assert float((vectors[0] - vectors[1]).abs().max()) == 0.0
