"""Query kinds are one registry: config, prompts, the engine and the fake backends read it.

A toy kind ("mood": one more question about the whole image, whose answer becomes a caption of
the image vertex) is registered here, in the test, and nothing else is edited: the
configuration gets its ``generation.mood`` section, the prompt loader its prompt, the engine
sends its query for every image and routes the answer to its handler, the scripted backend
answers it with the kind's example answer, and replay with its empty answer.
"""

import re

import pytest

from engine_fakes import MemoryStore
from test_engine import make_images

from gbc.annotators.backends.base import MllmRequest
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig, ConfigError, describe_settings
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.job_settings import JobSettings
from gbc.annotators.kinds import GenerationConfig, QueryKind, get_kind, query_kinds, register_kind, unregister_kind
from gbc.annotators.prompts import load_prompts

BUILT_IN = ["image", "entity", "composition", "relation"]
MOOD_PROMPT = "You name the mood of pictures.\n---\nWhat is the mood of this picture?"


def _parse_mood(text: str) -> str:
    found = re.search(r"mood:\s*(\w+)", text, re.IGNORECASE)
    return found.group(1).lower() if found else ""


def _handle_mood(job, task, text):
    mood = MOOD.parse(text)
    if mood:
        job.nodes[""].descs.append((f"The mood is {mood}.", "short"))
    return []


def _start_mood(job):
    # no bookkeeping: an image is not finished while any of its queries is unanswered
    return [job.query_task(MOOD, "", MOOD.fill(job), {"vertex_id": ""}, (0.0, 0.0, 1.0, 1.0))]


class MoodGeneration(GenerationConfig):
    max_new_tokens: int = 16


MOOD = QueryKind(
    name="mood",
    parse=_parse_mood,
    format=lambda mood: f"Mood: {mood}",
    user_prompt=lambda pair: pair.user_template,
    handle=_handle_mood,
    generation=MoodGeneration,
    start=_start_mood,
    empty_answer=lambda: "Mood: N/A",
    example_answer=lambda context: "Mood: calm",
    prompt_text=MOOD_PROMPT,
)


@pytest.fixture
def mood():
    register_kind(MOOD)
    yield MOOD
    unregister_kind("mood")


class Recording:
    """An MLLM backend that records the requests it passes on."""

    def __init__(self, inner):
        self.inner = inner
        self.max_batch_size = inner.max_batch_size
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        return self.inner.generate(requests)


def _run(images, config, mllm):
    store = MemoryStore()
    summary = RecursiveAnnotator(config, mllm, create_detector("scripted")).run(images, store)
    return summary, store


def test_the_registry_is_the_one_list_of_kinds():
    names = [kind.name for kind in query_kinds()]
    assert names == BUILT_IN
    assert list(load_prompts()) == names
    assert list(AnnotateConfig().generation.model_dump()) == names
    assert list(JobSettings.from_config(AnnotateConfig()).generation) == names
    assert [get_kind(name).name for name in names] == names
    with pytest.raises(KeyError, match="unknown query kind 'mood'"):
        get_kind("mood")
    with pytest.raises(ConfigError, match="generation.mood"):
        AnnotateConfig.from_mapping({"generation": {"mood": {"temperature": 0}}})


def test_a_kind_cannot_be_registered_twice_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        register_kind(QueryKind(name="image", parse=str, format=str, user_prompt=str, handle=lambda *a: []))
    assert get_kind("image").generation().max_new_tokens == 1024


def test_config_and_prompts_pick_up_a_registered_kind(mood, tmp_path):
    config = AnnotateConfig().with_overrides({"generation.mood.temperature": 0.5})
    assert config.generation.mood.temperature == 0.5 and config.generation.mood.max_new_tokens == 16
    assert config.generation.image.max_new_tokens == 1024  # the others keep their own defaults
    assert "generation.mood.max_new_tokens" in describe_settings()
    assert config.fingerprint() != AnnotateConfig().with_overrides({"generation.mood.temperature": 0.6}).fingerprint()
    assert load_prompts()["mood"].system == "You name the mood of pictures."
    mine = tmp_path / "mood.txt"
    mine.write_text("Moods only.\n---\nThe mood?\n")
    assert load_prompts({"mood": str(mine)})["mood"].user_template == "The mood?"


def test_the_engine_sends_the_new_kind_and_routes_its_answers(mood, tmp_path):
    images = make_images(tmp_path / "imgs", 4)
    config = AnnotateConfig().with_overrides({"generation.mood.max_new_tokens": 9})
    mllm = Recording(create_mllm("scripted"))
    summary, store = _run(images, config, mllm)
    assert (summary.done, summary.failed) == (4, 0)
    asked = [r for r in mllm.requests if r.kind == "mood"]
    assert sorted(r.image_key for r in asked) == sorted(s.key for s in images)
    assert all(isinstance(r, MllmRequest) and r.system_prompt == "You name the mood of pictures." for r in asked)
    assert all(r.options.max_new_tokens == 9 for r in asked)
    for key, graph in store.graphs.items():
        assert graph.validate() == []
        assert ("The mood is calm.", "short") in [(d.text, d.label) for d in graph.root.descs]
        assert {"kind": "mood", "vertex_id": "", "text": "Mood: calm"} in store.provenance[key]["answers"]
    # the built-in kinds are asked and answered as without it
    unregister_kind("mood")
    _, plain = _run(images, AnnotateConfig(), create_mllm("scripted"))
    for key, graph in plain.graphs.items():
        with_mood = store.graphs[key]
        assert [v.vertex_id for v in graph.vertices] == [v.vertex_id for v in with_mood.vertices]
        assert [d.text for d in with_mood.root.descs if not d.text.startswith("The mood")] == \
            [d.text for d in graph.root.descs]


def test_replay_answers_a_kind_its_records_do_not_know_with_the_empty_answer(mood, tmp_path):
    images = make_images(tmp_path / "imgs", 2)
    _, recorded = _run(images, AnnotateConfig(), create_mllm("scripted"))
    graphs = tmp_path / "graphs.jsonl"
    graphs.write_bytes(b"".join(g.to_json() + b"\n" for g in recorded.graphs.values()))
    replay = create_mllm(f"replay:{graphs}")
    request = MllmRequest(image=None, system_prompt="", user_prompt="", kind="mood", image_key=images[0].key,
                          context={"vertex_id": ""})
    assert replay.generate([request]) == ["Mood: N/A"]
