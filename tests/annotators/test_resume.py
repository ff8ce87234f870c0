"""A real `gbc annotate` process killed with SIGKILL mid-run, then the same command again."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import gbc

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

N_IMAGES = 12


def _command(images, out):
    return [
        sys.executable, "-m", "gbc.cli.main", "annotate", str(images), "-o", str(out),
        "--mllm", "scripted", "--detector", "scripted",
        "--mllm-option", "latency_s=0.04", "--detector-option", "latency_s=0.02",
        "--images-in-flight", "2", "--mllm-batch-size", "3", "--no-progress", "--json",
    ]


def _snapshot(path):
    """{key: (status, graph dict or reason)} read from the store in this (separate) process."""
    out = {}
    with gbc.open_store(path) as store:
        for key, record in store.statuses():
            if record.status == "done":
                out[key] = ("done", store[key].to_dict("full"))
            else:
                out[key] = (record.status, record.reason)
    return out


def _done_count(path):
    if not (path / "data.mdb").exists():
        return 0
    try:
        with gbc.open_store(path) as store:
            return store.count("done")
    except Exception:  # the writer may be creating the store right now
        return 0


def test_kill_and_rerun_loses_and_redoes_nothing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(N_IMAGES - 1):
        arr = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / f"img{i:02d}.png")
    (images / "broken.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "out.lmdb"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    proc = subprocess.Popen(_command(images, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    try:
        while _done_count(out) < 3:
            assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
            assert time.time() < deadline, "no image was committed within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    before = _snapshot(out)
    finished_before = {k for k, (status, _) in before.items()}
    assert 3 <= len([k for k, v in before.items() if v[0] == "done"]) < N_IMAGES

    rerun = subprocess.run(_command(images, out), capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    # the rerun skipped exactly what was finished and annotated only the rest
    assert summary["skipped"] == len(finished_before)
    assert summary["images"] == N_IMAGES - len(finished_before)

    after = _snapshot(out)
    assert sorted(after) == sorted(p.name for p in images.iterdir())  # every image ended done or failed
    for key, value in before.items():
        assert after[key] == value, f"{key} changed after the rerun"
    assert after["broken.jpg"][0] == "failed" and "not an image" in after["broken.jpg"][1]
    with gbc.open_store(out) as store:
        for key, graph in store.items():
            assert graph.validate() == [], key
        assert store.meta["last_run"]["skipped"] == len(finished_before)
    # a third run has nothing left to do
    third = subprocess.run(_command(images, out), capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(third.stdout)["images"] == 0
