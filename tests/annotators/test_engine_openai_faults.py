"""Runs against a real OpenAI-compatible server on 127.0.0.1 that fails in the ways servers do.

Down (every connection reset, or accepted and never answered, from the start or mid-run): the
run stops within seconds, nothing is marked failed, and a rerun once the server is back finishes
the rest. One request that fails on its own: only its image fails, with the reason.
"""

import time

import pytest
from PIL import Image

import gbc
from fault_servers import ANSWER, FaultServer
from gbc.annotators.backends.base import BackendUnavailable
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import discover_images

# The engine's own retries with long backoff: a server judged down must skip them (a run that
# went through them would take tens of seconds and fail the time bounds below).
ENGINE = {"mllm.retries": 2, "mllm.backoff_s": 5.0, "limits.max_depth": 1}
SERVER = {"backoff_s": 0.05, "max_backoff_s": 0.2, "max_retries": 5, "connect_timeout_s": 1.0,
          "first_byte_timeout_s": 1.0, "read_timeout_s": 1.0, "down_after_s": 0.5}
COLOURS = [(200, 40, 40), (40, 40, 200), (30, 210, 30), (200, 200, 40), (150, 60, 150), (60, 150, 150)]


def colour_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (96, 64), COLOURS[i % len(COLOURS)]).save(folder / f"img{i:02d}.png")
    return discover_images([folder])


def is_green(body) -> bool:
    import base64
    import io

    url = body["messages"][-1]["content"][0]["image_url"]["url"]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    red, green, blue = image.getpixel((image.width // 2, image.height // 2))
    return green > 150 and red < 100 and blue < 100


@pytest.fixture
def server():
    srv = FaultServer("ok", answer=ANSWER)
    yield srv
    srv.stop()


def run(server, images, store, options=None, **engine):
    config = AnnotateConfig().with_overrides({**ENGINE, **engine})
    mllm = create_mllm(f"openai:{server.url}#m", {**SERVER, **(options or {})})
    try:
        return RecursiveAnnotator(config, mllm, create_detector("scripted")).run(images, store)
    finally:
        mllm.close()


@pytest.mark.parametrize("mode", ["reset", "silent"])
def test_a_server_that_is_down_stops_the_run_and_fails_nothing(tmp_path, server, mode):
    images = colour_images(tmp_path / "imgs", 3)
    server.mode = mode
    with gbc.open_store(str(tmp_path / "out.lmdb"), readonly=False) as store:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="not answering") as info:
            run(server, images, store)
        elapsed = time.monotonic() - start
        assert store.count("failed") == 0 and store.count("done") == 0
    assert elapsed < 12, elapsed  # before: 3 images x 3 engine tries x 6 HTTP tries, then all failed
    stats = info.value.run_summary.backends["mllm"]
    assert stats["transport_failures"] >= 1 and stats["server_checks"] >= 1


def test_a_server_that_starts_resetting_mid_run_stops_it_and_a_rerun_finishes(tmp_path, server):
    images = colour_images(tmp_path / "imgs", 8)
    server.reset_after = 3
    path = str(tmp_path / "out.lmdb")
    with gbc.open_store(path, readonly=False) as store:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            run(server, images, store, options={"concurrency": 1}, **{"limits.images_in_flight": 2})
        assert time.monotonic() - start < 12
        done = set(store.keys(status="done"))
        assert 1 <= len(done) < len(images) and store.count("failed") == 0
        assert all(store.status(s.key) is None for s in images if s.key not in done)

    server.mode, server.reset_after = "ok", None  # the server is back
    with gbc.open_store(path, readonly=False) as store:
        todo = [s for s in images if s.key not in done]
        summary = run(server, todo, store)
        assert (summary.done, summary.failed) == (len(todo), 0)
        assert store.count("done") == len(images) and store.count("failed") == 0


def test_one_image_the_server_always_resets_fails_alone(tmp_path, server):
    images = colour_images(tmp_path / "imgs", 5)  # img02 is green
    server.poison = is_green
    with gbc.open_store(str(tmp_path / "out.lmdb"), readonly=False) as store:
        summary = run(server, images, store, **{"mllm.backoff_s": 0.05})
        assert (summary.done, summary.failed) == (4, 1)
        [(key, record)] = [(k, r) for k, r in store.statuses() if r.status == "failed"]
        assert key == "img02.png"
        assert "tries" in record.reason and ("reset" in record.reason or "Disconnected" in record.reason)
    assert summary.backends["mllm"]["request_retries"] >= 5
