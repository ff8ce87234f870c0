"""Shipped prompts: loading, overrides, slot filling, and their worked examples parse."""

import re

import pytest

from gbc.annotators.parsers import (
    TaggedEntity,
    parse_composition_answer,
    parse_entity_answer,
    parse_image_answer,
    parse_relation_answer,
)
from gbc.annotators.kinds import query_kinds
from gbc.annotators.prompts import (
    PROMPT_VERSION,
    PromptPair,
    composition_user_prompt,
    entity_user_prompt,
    image_user_prompt,
    load_prompts,
    parse_prompt_file,
    prompts_fingerprint,
    relation_user_prompt,
)

SLOT = re.compile(r"\{(\w+)\}")
ALLOWED_SLOTS = {
    "image": set(),
    "entity": {"name"},
    "composition": {"count", "name", "members", "hints"},
    "relation": {"count", "members"},
}


@pytest.fixture(scope="module")
def prompts():
    return load_prompts()


def examples(system: str) -> list[tuple[str, str]]:
    """(heading, answer) for each 'Example answer...' block of a system prompt."""
    blocks = re.split(r"^(Example answer[^\n]*)\n", system, flags=re.M)
    return [(blocks[i], blocks[i + 1].split("\n\n")[0]) for i in range(1, len(blocks), 2)]


def test_all_kinds_ship_with_version(prompts):
    assert tuple(prompts) == tuple(kind.name for kind in query_kinds())
    assert tuple(prompts) == ("image", "entity", "composition", "relation")
    assert PROMPT_VERSION
    for kind, pair in prompts.items():
        assert isinstance(pair, PromptPair)
        assert len(pair.system.split()) > 100, kind
        assert SLOT.findall(pair.system) == [], f"{kind} system prompt must not hold slots"
        assert set(SLOT.findall(pair.user_template)) == ALLOWED_SLOTS[kind]
        assert examples(pair.system), f"{kind} prompt has no worked example"


@pytest.mark.parametrize(
    "kind,headers",
    [
        ("image", ["Detailed Caption:", "Top-Level Element Identification:", "Concise Formatted Caption:",
                   "[single]", "[multiple]"]),
        ("entity", ["Object Presence:", "Detailed Caption:", "Prominent Features:",
                    "Identification of Prominent Features:", ": [single]", "N/A"]),
        ("composition", ["Composition:", "General descriptions:"]),
        ("relation", ["- ", "["]),
    ],
)
def test_prompts_teach_the_parsed_layout(prompts, kind, headers):
    for header in headers:
        assert header in prompts[kind].system


def test_image_examples_parse(prompts):
    found = examples(prompts["image"].system)
    assert len(found) == 2
    for _, answer in found:
        listed = re.findall(r"^- \[([^\]]+)\]\[(\w+)\]$", answer, flags=re.M)
        parsed = parse_image_answer(answer)
        assert parsed.detail and parsed.short and "[" not in parsed.short
        assert parsed.entities == [TaggedEntity(n, l) for n, l in listed]


def test_entity_examples_parse(prompts):
    (_, present), (_, absent) = examples(prompts["entity"].system)
    parsed = parse_entity_answer(present, "bicycle")
    assert parsed.present and parsed.detail
    assert [(e.text, e.label) for e in parsed.entities] == [
        ("saddle", "single"), ("basket", "single"), ("tyres", "multiple"), ("bell", "single")]
    assert parse_entity_answer(absent, "clock").present is False


def test_composition_and_relation_examples_parse(prompts):
    (heading, answer), = examples(prompts["composition"].system)
    parsed = parse_composition_answer(answer, ["boat 1", "boat 2", "boat 3"])
    assert parsed.composition and "boat 1" in parsed.composition and len(parsed.descriptions) == 3
    assert not parsed.composition.endswith("boat 3")  # nothing had to be appended
    (_, answer), = examples(prompts["relation"].system)
    parsed = parse_relation_answer(answer, ["dog", "sofa", "rug", "window"])
    assert [m for _, m in parsed.relations] == [[0, 1], [1, 2], [0, 2, 3]]


def test_user_prompts_fill_slots(prompts):
    assert image_user_prompt(prompts["image"]) == prompts["image"].user_template
    text = entity_user_prompt(prompts["entity"], "Two Horses")
    assert "horse" in text and "{" not in text and "Horses" not in text
    assert "Horses" in entity_user_prompt(prompts["entity"], "Horses", singularize=False)
    text = composition_user_prompt(prompts["composition"], 3, "trees", ["tree 1", "tree 2", "tree 3"],
                                   ["tree 2 is to the right of tree 1.", "tree 3 is below tree 2."])
    assert "3 trees" in text and "tree 1, tree 2, tree 3" in text
    assert "\n- tree 2 is to the right of tree 1.\n- tree 3 is below tree 2." in text
    assert "{" not in text
    text = relation_user_prompt(prompts["relation"], 2, ["dog", "eiffel tower"])
    assert "2 relations" in text and "[dog], [eiffel tower]" in text and "{" not in text


def test_override_file(tmp_path, prompts):
    path = tmp_path / "entity.txt"
    path.write_text("Be brief {not a slot}.\n---\nDescribe the {name}. Keep {braces}.\n")
    loaded = load_prompts({"entity": path})
    assert loaded["entity"] == PromptPair("Be brief {not a slot}.", "Describe the {name}. Keep {braces}.")
    assert entity_user_prompt(loaded["entity"], "cars") == "Describe the car. Keep {braces}."
    assert loaded["image"] == prompts["image"]
    assert load_prompts({"entity": str(path)}) == loaded
    assert prompts_fingerprint(loaded) != prompts_fingerprint(prompts)
    assert prompts_fingerprint(load_prompts()) == prompts_fingerprint(prompts)


@pytest.mark.parametrize(
    "text,error",
    [
        ("no separator here", "needs a line '---'"),
        ("---\nuser only", "must both be non-empty"),
        ("system only\n---\n  \n", "must both be non-empty"),
    ],
)
def test_malformed_prompt_files(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_prompt_file(text)


def test_separator_splits_at_first_line_only():
    pair = parse_prompt_file("sys\n  ---  \nuser\n---\nmore")
    assert pair == PromptPair("sys", "user\n---\nmore")


def test_unknown_kind_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt kind"):
        load_prompts({"caption": tmp_path / "x.txt"})
    with pytest.raises(OSError):
        load_prompts({"image": tmp_path / "missing.txt"})
