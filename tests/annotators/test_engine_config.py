"""AnnotateConfig: defaults, YAML loading, overrides, clear errors for unknown keys."""

import pytest

from gbc.annotators.config import AnnotateConfig, ConfigError, describe_settings


def test_defaults_follow_reference():
    cfg = AnnotateConfig()
    img, ent = cfg.detection.from_image, cfg.detection.from_entity
    assert (img.score_threshold, img.nms_single, img.nms_multiple, img.high_conf_tolerance, img.topk) == (0.35, 0.05, 0.2, 0.05, 6)
    assert img.max_rel_area is None and ent.max_rel_area == 0.8
    assert cfg.queries.merge_overlap_threshold == 0.85 and cfg.queries.mask_inside_threshold == 0.85
    assert cfg.queries.include_entity and cfg.queries.include_composition and cfg.queries.include_relation
    assert cfg.mllm.batch_size is None  # backend's max_batch_size


def test_yaml_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("limits:\n  max_depth: 2\n  images_in_flight: 5\ndetection:\n  from_entity:\n    topk: 3\ngeneration:\n  image:\n    temperature: 0.0\nseed: 11\n")
    cfg = AnnotateConfig.from_yaml(path)
    assert (cfg.limits.max_depth, cfg.limits.images_in_flight, cfg.detection.from_entity.topk, cfg.seed) == (2, 5, 3, 11)
    # untouched nested defaults survive a partial section
    assert cfg.detection.from_entity.max_rel_area == 0.8
    assert cfg.generation.image.max_new_tokens == 1024 and cfg.generation.image.temperature == 0.0
    cfg2 = cfg.with_overrides({"limits.max_depth": 3, "mllm.spec": "scripted", "seed": None})
    assert cfg2.limits.max_depth == 3 and cfg2.mllm.spec == "scripted" and cfg2.seed == 11
    (tmp_path / "empty.yaml").write_text("")
    assert AnnotateConfig.from_yaml(tmp_path / "empty.yaml") == AnnotateConfig()


@pytest.mark.parametrize(
    "text,match",
    [
        ("limits:\n  max_dept: 2\n", "unknown setting 'limits.max_dept'"),
        ("bogus: 1\n", "unknown setting 'bogus'"),
        ("limits:\n  max_depth: -1\n", "limits.max_depth"),
        ("- a\n- b\n", "mapping"),
        ("limits: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_gives_clear_error(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        AnnotateConfig.from_yaml(path)


def test_unknown_override_rejected():
    with pytest.raises(ConfigError, match="unknown setting"):
        AnnotateConfig().with_overrides({"limits.nope": 1})
    with pytest.raises(ConfigError, match="unknown setting"):
        AnnotateConfig().with_overrides({"nope.deeper": 1})


def test_every_setting_is_documented():
    settings = describe_settings()
    assert "limits.max_vertices_per_image" in settings and "detection.from_image.min_rel_area" in settings
    undocumented = [k for k, (_, desc) in settings.items() if not desc and not k.startswith("generation.")]
    assert undocumented == []


def test_fingerprint_ignores_throughput_settings():
    a = AnnotateConfig()
    assert a.fingerprint() == a.with_overrides({"limits.images_in_flight": 3, "mllm.batch_size": 4}).fingerprint()
    assert a.fingerprint() == a.with_overrides({"limits.allocator_keep_mb": 0}).fingerprint()
    assert a.fingerprint() != a.with_overrides({"limits.max_depth": 1}).fingerprint()


def test_prompt_files_are_relative_to_the_config_file(tmp_path):
    from gbc.annotators.prompts import load_prompts

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "entity.txt").write_text("You describe crops.\n---\nDescribe the {name}.\n")
    (tmp_path / "cfg" / "run.yaml").write_text("prompts:\n  entity: entity.txt\n")
    cfg = AnnotateConfig.from_yaml(tmp_path / "cfg" / "run.yaml")
    assert cfg.prompts["entity"] == str(tmp_path / "cfg" / "entity.txt")
    prompts = load_prompts(cfg.prompts)
    assert prompts["entity"].system.strip() == "You describe crops."
