"""`gbc annotate` (a real subprocess) against an OpenAI-compatible server on 127.0.0.1 that resets
every connection: one `Error:` line and exit 1 within seconds, nothing marked failed, and the
same command finishes the images once the server answers again."""

import json
import subprocess
import sys
import time

import pytest
from PIL import Image

import gbc
from fault_servers import FaultServer

QUICK = ["backoff_s=0.05", "max_backoff_s=0.2", "down_after_s=0.5", "connect_timeout_s=2", "first_byte_timeout_s=2"]


@pytest.fixture
def server():
    srv = FaultServer("reset")
    yield srv
    srv.stop()


def annotate(folder, out, url, *extra):
    options = [arg for option in QUICK for arg in ("--mllm-option", option)]
    command = [sys.executable, "-m", "gbc.cli.main", "annotate", str(folder), "-o", str(out),
               "--mllm", f"openai:{url}#m", *options, "--detector", "scripted", "--max-depth", "1",
               "--retries", "2", "--set", "mllm.backoff_s=5", "--no-progress", *extra]
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240)
    return proc, time.monotonic() - start


def test_resetting_server_stops_the_run_and_the_same_command_resumes(tmp_path, server):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30)]):
        Image.new("RGB", (96, 64), colour).save(folder / f"im{i}.png")
    out = tmp_path / "out.lmdb"

    proc, elapsed = annotate(folder, out, server.url)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert server.url in errors[0] and "not answering" in errors[0]
    # before: 3 images x 3 engine tries x 6 HTTP tries with backoff, ~4 minutes, all `failed`
    assert elapsed < 60, elapsed
    with gbc.open_store(str(out)) as store:
        assert store.count("failed") == 0 and store.count("done") == 0
        stopped = store.meta["last_run"]
        assert "not answering" in stopped["stopped"]
        assert stopped["backends"]["mllm"]["transport_failures"] >= 1

    server.mode = "ok"
    proc, _ = annotate(folder, out, server.url, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["failed"]) == (3, 0)
    assert summary["backends"]["mllm"]["request_retries"] == 0
