"""Two `gbc annotate` processes on one store: the second is refused; a killed run's lock is gone."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import gbc
from gbc.store.writer_lock import LOCK_NAME, StoreBusyError, WriterLock

SLOW = ["--mllm", "scripted", "--mllm-option", "latency_s=5", "--detector", "scripted", "--no-progress"]


@pytest.fixture
def images(image_folder):
    return image_folder([f"{i}.png" for i in range(6)], size=(40, 50), seed=3)


def _annotate(images, out, *extra):
    return [sys.executable, "-m", "gbc.cli.main", "annotate", str(images), "-o", str(out), *extra]


def _wait_for_holder(store, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads((store / LOCK_NAME).read_text()).get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("the first run never took the lock")


def test_second_writer_is_refused_and_a_killed_run_does_not_block(images, tmp_path):
    store = tmp_path / "s.lmdb"
    first = subprocess.Popen(_annotate(images, store, *SLOW), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_holder(store, first)
        second = subprocess.run(_annotate(images, store, "--mllm", "scripted", "--detector", "scripted"),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), second.stderr
        assert f"pid {first.pid}" in lines[0] and "gbc annotate" in lines[0] and "started" in lines[0]
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    # The killed run's lock died with it: a rerun finishes the work.
    rerun = subprocess.run(_annotate(images, store, "--mllm", "scripted", "--detector", "scripted", "--json"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with gbc.open_store(store) as s:
        assert s.count("done") == 6


def test_writer_lock_in_one_process(tmp_path):
    store = tmp_path / "s.lmdb"
    with WriterLock(store, command="gbc annotate"):
        with pytest.raises(StoreBusyError, match=f"pid {os.getpid()}"):
            WriterLock(store).acquire()
    WriterLock(store).acquire().release()  # released on exit
