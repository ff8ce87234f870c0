"""`gbc annotate` through click: default backends, resume, retry-failed, shards, limit, summary, help."""

import json

import pytest

import gbc
from gbc.annotators.config import describe_settings
from gbc.distributed.sharding import shard_of

SCRIPTED = ["--mllm", "scripted", "--detector", "scripted"]


@pytest.fixture
def images(image_folder):
    return image_folder(["a.png", "b.jpg", "sub/c.png", "sub/d.webp", "e.png"], size=(90, 120), seed=7)


def summary_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_default_backends_are_the_documented_models(images, tmp_path, run_cli):
    # --limit 0: the defaults are chosen and built (no weights are loaded), nothing is annotated
    from gbc.annotators.backends.hf_mllm import default_mllm_spec, resolve_device

    expected = "llava-v1.6-mistral-7b-hf" if resolve_device("auto").startswith("cuda") else "llava-onevision-qwen2-0.5b-ov-hf"
    assert default_mllm_spec() == f"transformers:llava-hf/{expected}"
    result = run_cli("annotate", images, "-o", tmp_path / "o.lmdb", "--limit", "0")
    assert result.exit_code == 0, result.output
    assert f"mllm: transformers:llava-hf/{expected} (default)" in result.stderr
    assert "detector: grounding-dino:IDEA-Research/grounding-dino-tiny (default)" in result.stderr
    result = run_cli("annotate", images, "-o", tmp_path / "p.lmdb", "--mllm", "scripted", "--limit", "0")
    assert result.exit_code == 0, result.output
    assert "mllm:" not in result.stderr and "detector: grounding-dino" in result.stderr


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "limits.nope=1"], "unknown setting 'limits.nope'"),
        (["--max-depth", "-1"], "limits.max_depth"),
        (["--mllm-option", "bogus=1"], "invalid options for MLLM backend 'scripted'"),
        (["--shard", "3/2"], "shard index"),
        (["--mllm", "nosuch:thing"], "unknown MLLM backend 'nosuch'"),
    ],
)
def test_bad_input_gives_one_line_error(images, tmp_path, extra, message, run_cli):
    result = run_cli("annotate", images, "-o", tmp_path / "o.lmdb", *SCRIPTED, *extra)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_missing_input_path(tmp_path, run_cli):
    result = run_cli("annotate", tmp_path / "nothing", "-o", tmp_path / "o.lmdb", *SCRIPTED)
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_run_then_resume(images, tmp_path, run_cli, store_statuses):
    out = tmp_path / "o.lmdb"
    first = summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, "--json"))
    assert (first["found"], first["images"], first["done"], first["skipped"]) == (5, 5, 5, 0)
    assert first["backends"]["mllm"]["calls"] > 0 and first["store"] == {"done": 5, "failed": 0}
    assert store_statuses(out) == {k: "done" for k in ["a.png", "b.jpg", "sub/c.png", "sub/d.webp", "e.png"]}
    with gbc.open_store(out) as store:
        assert store.meta["last_run"]["done"] == 5 and store.meta["config"]["mllm"]["spec"] == "scripted"
        assert store["sub/c.png"].img_path == "sub/c.png"
    second = summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, "--json"))
    assert (second["images"], second["skipped"]) == (0, 5)


def test_retry_failed_runs_only_failures(images, tmp_path, run_cli, store_statuses):
    out = tmp_path / "o.lmdb"
    first = summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, "--mllm-option", "fail_on=[b.jpg]",
                               "--retries", "0",
                              "--json", "--limit", "4"))
    assert first["done"] == 3 and first["failed"] == 1 and first["images"] == 4
    assert store_statuses(out)["b.jpg"] == "failed"
    # a plain rerun skips the failure and does the remaining image
    plain = summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, "--json"))
    assert plain["images"] == 1 and plain["skipped"] == 4
    retry = summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, "--retry-failed", "--json"))
    assert retry["images"] == 1 and retry["done"] == 1
    assert set(store_statuses(out).values()) == {"done"}


def test_shards_partition_the_images(images, tmp_path, run_cli, store_statuses):
    keys = ["a.png", "b.jpg", "e.png", "sub/c.png", "sub/d.webp"]
    seen = {}
    for i in range(2):
        out = tmp_path / f"shard{i}.lmdb"
        summary_of(run_cli("annotate", images, "-o", out, *SCRIPTED, f"--shard={i}/2", "--json"))
        got = set(store_statuses(out))
        assert got == {k for k in keys if shard_of(k, 2) == i}
        seen[i] = got
    assert seen[0] | seen[1] == set(keys) and not seen[0] & seen[1]


def test_config_file_and_flags(images, tmp_path, run_cli):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("mllm:\n  spec: scripted\ndetector:\n  spec: scripted\nlimits:\n  max_depth: 1\n")
    out = tmp_path / "o.lmdb"
    summary_of(run_cli("annotate", images, "-o", out, "--config", cfg, "--no-relation", "--json"))
    with gbc.open_store(out) as store:
        for graph in store.values():
            assert all(v.label != "relation" for v in graph.vertices)
            assert graph.depth <= 2  # level-1 entities (+ their composition in between)
        assert store.meta["config"]["limits"]["max_depth"] == 1


def test_text_summary(images, tmp_path, run_cli):
    result = run_cli("annotate", images, "-o", tmp_path / "o.lmdb", *SCRIPTED, "--limit", "2")
    assert result.exit_code == 0
    assert "annotated 2 images: 2 done, 0 failed" in result.stdout
    assert "mllm:" in result.stdout and "mean batch fill" in result.stdout


def test_help_documents_every_setting(run_cli):
    result = run_cli("annotate", "--help")
    assert result.exit_code == 0
    for name, (default, _) in describe_settings().items():
        assert f"{name} = " in result.output, name
    for flag in ["--max-depth", "--max-vertices", "--mllm-batch-size", "--images-in-flight", "--max-image-side",
                 "--retry-failed", "--shard", "--limit", "--seed", "--mllm-option", "scripted"]:
        assert flag in result.output


def test_default_models_without_the_models_extra_is_a_usage_error(images, tmp_path, run_cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gbc.annotators.backends.hf_mllm", None)  # as if transformers were absent
    result = run_cli("annotate", images, "-o", tmp_path / "o.lmdb", "--detector", "scripted", "--limit", "0")
    assert result.exit_code == 2, result.output
    assert "pip install 'gbc[models]'" in result.output and "--mllm scripted --detector scripted" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.lmdb").exists()
