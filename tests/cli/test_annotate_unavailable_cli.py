"""`gbc annotate` with a model that cannot be loaded: one `Error:` line, exit 1, nothing failed."""

import os
import re

import pytest

import gbc

NAMES = ["a.png", "b.png", "c.png", "d.png", "e.png"]


@pytest.fixture
def images(image_folder):
    return image_folder(NAMES, size=(60, 80), seed=3)


@pytest.mark.parametrize(
    "model, expected",
    [
        # a hub id that is not cached, with downloads off (tests run with HF_HUB_OFFLINE=1)
        ("no-such-org/no-such-model-gbc", r"model 'no-such-org/no-such-model-gbc' is not in the Hugging Face cache"
                                          r".*`hf download no-such-org/no-such-model-gbc`"),
        # a local folder that does not exist
        ("{tmp}/absent-model", r"model folder '.*absent-model' cannot be loaded"),
    ],
)
def test_missing_model_stops_the_run_and_keeps_committed_images(images, tmp_path, model, expected, run_cli,
                                                                 store_statuses):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    out = tmp_path / "out.lmdb"
    # two images annotated before, by a working backend
    first = run_cli("annotate", images, "-o", out, "--mllm", "scripted", "--detector", "scripted", "--limit", "2")
    assert first.exit_code == 0, first.output
    committed = store_statuses(out)
    assert sorted(committed.values()) == ["done", "done"]

    result = run_cli("annotate", images, "-o", out, "--mllm", "transformers:" + model.format(tmp=tmp_path),
                      "--detector", "scripted", "--retries", "3", "--set", "mllm.backoff_s=5")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert re.search(expected, errors[0]), errors[0]
    assert store_statuses(out) == committed  # nothing marked failed; the committed images are untouched
    with gbc.open_store(out) as store:
        last_run = store.meta["last_run"]
    assert (last_run["done"], last_run["failed"]) == (0, 0) and last_run["stopped"] in errors[0]

    # the model problem fixed (here: a working backend), a rerun does the remaining images
    rerun = run_cli("annotate", images, "-o", out, "--mllm", "scripted", "--detector", "scripted", "--json")
    assert rerun.exit_code == 0, rerun.output
    assert store_statuses(out) == {name: "done" for name in NAMES}


@pytest.mark.parametrize("content, expected", [
    ('{"vertices": [\n', r"replay: cannot read graphs from .*broken\.jsonl: GraphFormatError"),
    ("", r"replay: .*broken\.jsonl holds no graph"),
])
@pytest.mark.parametrize("role", ["--mllm", "--detector"])
def test_unreadable_replay_file_stops_the_run_at_once(images, tmp_path, content, expected, role, run_cli,
                                                      store_statuses):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(content)
    out = tmp_path / "out.lmdb"
    backends = {"--mllm": "scripted", "--detector": "scripted", role: f"replay:{broken}"}
    # generous retries: a file that cannot be read must skip them, not fail each image after them
    result = run_cli("annotate", images, "-o", out, *[x for kv in backends.items() for x in kv],
                      "--retries", "3", "--set", "mllm.backoff_s=5", "--set", "detector.backoff_s=5")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert re.search(expected, errors[0]), errors[0]
    assert store_statuses(out) == {}  # no image marked failed for it


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_models_missing_without_network_is_said_within_seconds(images, tmp_path):
    """No --mllm/--detector, nothing cached, the hub unreachable: one line within 10 s (the hub
    client alone would retry every file for minutes, logging each retry)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    pytest.importorskip("huggingface_hub")
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    (tmp_path / "hf-home").mkdir()
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
               PYTHONPATH=str(repo) + os.pathsep + env.get("PYTHONPATH", ""))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gbc.cli.main", "annotate", str(images), "-o", str(tmp_path / "o.lmdb")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines[:5]
    assert "llava-hf/" in lines[0] and "IDEA-Research/grounding-dino-tiny" in lines[0]
    assert "is not in the Hugging Face cache" in lines[0] or "are not in the Hugging Face cache" in lines[0]
    assert "cannot be reached" in lines[0] and "hf download" in lines[0]
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not (tmp_path / "o.lmdb").exists()  # said before anything was started
