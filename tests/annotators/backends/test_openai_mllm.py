"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from gbc.annotators.backends.base import BackendError, BackendUnavailable, GenerationOptions, MllmRequest
from gbc.annotators.backends.openai_mllm import retry_delay, split_argument
from gbc.annotators.backends.registry import create_mllm

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.5}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # clients that gave up are expected


class ChatServer:
    """A tiny chat-completions server: records every request, answers from a script.

    ``script`` holds (status, headers, body) tuples used in turn for chat requests; once it is
    empty every request gets 200 with an answer echoing the user text. ``delay`` slows answers.
    """

    def __init__(self):
        self.requests = []
        self.script = []
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, headers, body):
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
                self._send(200, {}, {"object": "list", "data": [{"id": "served-model"}, {"id": "other"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = server.script.pop(0) if server.script else None
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    if step is not None:
                        self._send(*step)
                        return
                    text = body["messages"][-1]["content"][-1]["text"]
                    self._send(200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {text}"}}]})
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def chats(self):
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ChatServer()
    yield srv
    srv.stop()


def request(text="describe", system="SYSTEM PROMPT", size=(64, 32), **options):
    return MllmRequest(image=Image.new("RGB", size, (200, 30, 30)), system_prompt=system, user_prompt=text,
                       options=GenerationOptions(**options))


def test_request_format(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    backend = create_mllm(f"openai:{server.url}#my-model", {"api_key_env": "MY_KEY", "max_image_side": 40, **FAST})
    assert backend.model is not None and backend.max_batch_size == 32
    answers = backend.generate([request("a red cat", size=(200, 100), max_new_tokens=77, temperature=0.3, seed=5)])
    assert answers == ["echo: a red cat"]
    [sent] = server.chats()
    assert sent["headers"]["Authorization"] == "Bearer sk-test-123"
    body = sent["body"]
    assert body["model"] == "my-model" and body["max_tokens"] == 77 and body["temperature"] == 0.3 and body["seed"] == 5
    system, user = body["messages"]
    assert system == {"role": "system", "content": "SYSTEM PROMPT"}  # first: servers cache the shared prefix
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": "a red cat"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (40, 20)
    backend.close()


def test_model_from_the_server_listing_and_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = create_mllm(f"openai:{server.url}", FAST)
    assert backend.generate([request(system="")]) == ["echo: describe"]
    listing, chat = server.requests
    assert listing["path"] == "/v1/models" and chat["body"]["model"] == "served-model"
    assert "Authorization" not in chat["headers"]
    assert [m["role"] for m in chat["body"]["messages"]] == ["user"]  # no empty system message
    assert "seed" not in chat["body"]
    backend.close()


def test_requests_run_concurrently_and_keep_their_order(server):
    server.delay = 0.4
    backend = create_mllm(f"openai:{server.url}#m", {"concurrency": 8, **FAST})
    start = time.monotonic()
    answers = backend.generate([request(f"item {i}") for i in range(8)])
    elapsed = time.monotonic() - start
    assert answers == [f"echo: item {i}" for i in range(8)]
    assert server.most_in_flight >= 4
    assert elapsed < 8 * 0.4 / 2  # far below one request at a time
    backend.close()


def test_rate_limits_and_server_errors_are_retried(server):
    server.script = [
        (429, {"Retry-After": "0.3"}, {"error": "slow down"}),
        (500, {}, {"error": "boom"}),
        (503, {}, b"not json"),
    ]
    backend = create_mllm(f"openai:{server.url}#m", FAST)
    start = time.monotonic()
    assert backend.generate([request("x")]) == ["echo: x"]
    assert time.monotonic() - start >= 0.3  # Retry-After respected
    assert len(server.chats()) == 4
    backend.close()


def test_retries_run_out(server):
    server.script = [(500, {}, {"error": "boom"})] * 3
    backend = create_mllm(f"openai:{server.url}#m", {"max_retries": 2, **FAST})
    with pytest.raises(BackendError, match=r"after 3 tries \(HTTP 500") as info:
        backend.generate([request()])
    assert not isinstance(info.value, BackendUnavailable)  # the server answers: not a reason to stop the run
    backend.close()


def test_client_errors_are_not_retried(server):
    server.script = [(400, {}, {"error": {"message": "model does not take images"}})]
    backend = create_mllm(f"openai:{server.url}#m", FAST)
    with pytest.raises(BackendError, match="HTTP 400.*does not take images") as info:
        backend.generate([request()])
    assert not isinstance(info.value, BackendUnavailable)  # one rejected request fails only its image
    assert len(server.chats()) == 1
    backend.close()


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_make_the_backend_unavailable(server, status):
    server.script = [(status, {}, {"error": {"message": "invalid api key"}})]
    backend = create_mllm(f"openai:{server.url}#m", {"api_key_env": "GBC_TEST_NO_SUCH_KEY", **FAST})
    with pytest.raises(BackendUnavailable, match=rf"HTTP {status}.*invalid api key.*GBC_TEST_NO_SUCH_KEY"):
        backend.generate([request()])
    assert len(server.chats()) == 1  # not retried
    backend.close()


def test_unreachable_server_gives_a_clear_error_quickly():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = create_mllm(f"openai:http://127.0.0.1:{port}/v1#m", {"max_retries": 2, **FAST})
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=rf"127.0.0.1:{port}.*3 tries failed.*Connection refused.*reachable"):
        backend.generate([request()])
    assert time.monotonic() - start < 5


def test_timeouts_are_bounded(server):
    server.delay = 3.0
    backend = create_mllm(f"openai:{server.url}#m", {"first_byte_timeout_s": 0.3, "max_retries": 1, **FAST})
    start = time.monotonic()
    with pytest.raises(BackendError, match="ReadTimeout") as info:
        backend.generate([request()])
    assert not isinstance(info.value, BackendUnavailable)  # a slow answer concerns this request only
    assert time.monotonic() - start < 2.5
    backend.close()


@pytest.mark.parametrize(
    "argument, expected",
    [
        ("http://localhost:8000/v1#llava", ("http://localhost:8000/v1", "llava")),
        ("http://localhost:8000", ("http://localhost:8000/v1", None)),
        ("https://api.example.com/openai/v1/#org/model-7b", ("https://api.example.com/openai/v1", "org/model-7b")),
        ("http://127.0.0.1:11434/v1#", ("http://127.0.0.1:11434/v1", None)),
    ],
)
def test_split_argument(argument, expected):
    assert split_argument(argument) == expected


@pytest.mark.parametrize("spec", ["openai:", "openai:localhost:8000", "openai:ftp://x"])
def test_bad_specs(spec):
    with pytest.raises(BackendError):
        create_mllm(spec)


@pytest.mark.parametrize(
    "headers, attempt, expected",
    [({"retry-after": "2"}, 0, 2.0), ({"retry-after": "999"}, 0, 10.0), ({}, 3, 8.0), (None, 0, 1.0),
     ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1, 2.0), ({}, 10, 10.0)],
)
def test_retry_delay(headers, attempt, expected):
    assert retry_delay(headers, attempt, base=1.0, most=10.0) == expected
