"""Whether a hub model can be loaded is found out in seconds: cache first, then a short probe."""

import http.server
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("huggingface_hub")

from huggingface_hub import constants  # noqa: E402

from gbc.annotators.backends import hub  # noqa: E402
from gbc.annotators.backends.base import BackendUnavailable  # noqa: E402

MODEL = "some-org/some-model"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    return cache


def _cache_model(cache, repo_id=MODEL):
    """The layout the hub client writes: refs/main names a snapshot folder holding the files."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


@pytest.fixture
def hub_server(monkeypatch):
    """A local server standing in for the hub: it answers every request with 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()
    server.server_close()


def test_unreachable_hub_and_empty_cache_fail_at_once(empty_cache):
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        hub.hub_load_options(MODEL)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"model '{MODEL}' is not in the Hugging Face cache" in message
    assert constants.ENDPOINT in message and "cannot be reached" in message and f"`hf download {MODEL}`" in message


def test_cached_model_loads_from_the_cache_only_when_the_hub_is_unreachable(empty_cache):
    _cache_model(empty_cache)
    assert hub.is_cached(MODEL) and not hub.is_cached("other-org/other-model")
    assert hub.hub_load_options(MODEL) == {"local_files_only": True}


def test_reachable_hub_loads_as_usual(empty_cache, hub_server):
    assert hub.hub_unreachable_reason() is None  # a 404 is an answer
    assert hub.hub_load_options(MODEL) == {}


def test_offline_mode_needs_no_probe(empty_cache, hub_server, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.hub_unreachable_reason() == "HF_HUB_OFFLINE is set"
    with pytest.raises(BackendUnavailable, match="HF_HUB_OFFLINE is set"):
        hub.hub_load_options(MODEL)


def test_local_folders_are_not_checked_against_the_hub(empty_cache, tmp_path):
    assert hub.hub_load_options(str(tmp_path)) == {}
    assert "model folder" in str(hub.missing_model_error(str(tmp_path), "no config.json"))


def test_the_hub_clients_retry_warnings_are_hidden_unless_verbose(caplog, monkeypatch):
    hub.quiet_hub_retries()
    retry_logger = logging.getLogger("huggingface_hub.utils._http")
    monkeypatch.delenv(hub.VERBOSE_ENV, raising=False)
    with caplog.at_level(logging.WARNING):
        retry_logger.warning("Retrying in 1s [Retry 1/5].")
        retry_logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    caplog.clear()
    monkeypatch.setenv(hub.VERBOSE_ENV, "1")
    with caplog.at_level(logging.WARNING):
        retry_logger.warning("Retrying in 1s [Retry 1/5].")
    assert [r.getMessage() for r in caplog.records] == ["Retrying in 1s [Retry 1/5]."]
