"""The OpenAI-compatible backend against servers that reset, stall or stay silent (127.0.0.1).

A server that cannot serve anyone must make the backend unavailable quickly (the run stops,
nothing is marked failed); a failure that only one request meets stays that request's error.
Time bounds are loose: they separate "stops within a few seconds" from "retries for minutes".
"""

import time

import pytest
from PIL import Image

from fault_servers import FaultServer
from gbc.annotators.backends.base import BackendError, BackendUnavailable, GenerationOptions, MllmRequest
from gbc.annotators.backends.openai_mllm import read_event_stream
from gbc.annotators.backends.registry import create_mllm

# Short timeouts and backoff so that every case ends in seconds; down_after_s=0 lets the first
# failure with no answer in between ask the server whether it is alive.
QUICK = {"backoff_s": 0.01, "max_backoff_s": 0.05, "connect_timeout_s": 0.5, "first_byte_timeout_s": 0.5,
         "read_timeout_s": 0.5, "max_retries": 3}


def request(color=(200, 30, 30), text="describe"):
    return MllmRequest(image=Image.new("RGB", (32, 32), color), system_prompt="SYSTEM", user_prompt=text,
                       options=GenerationOptions(max_new_tokens=8))


def is_green(body) -> bool:
    """The poison of ``FaultServer``: requests whose image is green (decoded from the data URL)."""
    import base64
    import io

    url = body["messages"][-1]["content"][0]["image_url"]["url"]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    red, green, blue = image.getpixel((16, 16))
    return green > 150 and red < 100


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs):
        server = FaultServer(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_streamed_answers_are_assembled(servers):
    server = servers("ok", answer="A red cat on a mat.")
    backend = create_mllm(f"openai:{server.url}#m", QUICK)
    assert backend.generate([request(), request()]) == ["A red cat on a mat."] * 2
    plain = create_mllm(f"openai:{server.url}#m", {**QUICK, "stream": False})
    assert plain.generate([request()]) == ["A red cat on a mat."]
    assert backend.request_stats() == {"request_retries": 0, "transport_failures": 0, "server_checks": 0}
    backend.close()
    plain.close()


@pytest.mark.parametrize("lines, message", [
    (['data: {"error": {"message": "out of memory"}}'], "reported an error.*out of memory"),
    (["data: not json"], "not JSON"),
    (["data: [DONE]"], "streamed no answer"),
])
def test_bad_event_streams_are_errors_of_the_request(lines, message):
    with pytest.raises(BackendError, match=message) as info:
        read_event_stream(iter(lines), time.monotonic() + 10, "http://x/v1")
    assert not isinstance(info.value, BackendUnavailable)


def test_event_stream_keeps_only_the_first_choice_and_ignores_comments():
    lines = [": keep-alive", 'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}',
             'data: {"choices": [{"index": 1, "delta": {"content": "X"}}]}', "",
             'data: {"choices": [{"index": 0, "delta": {"content": "b"}}]}', "data: [DONE]",
             'data: {"choices": [{"index": 0, "delta": {"content": "late"}}]}']
    assert read_event_stream(iter(lines), time.monotonic() + 10, "u")["choices"][0]["message"]["content"] == "ab"


def test_a_server_that_resets_every_connection_is_down(servers):
    server = servers("reset")
    backend = create_mllm(f"openai:{server.url}#m", {**QUICK, "max_retries": 5, "backoff_s": 0.5, "down_after_s": 0.0})
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"not answering.*(reset|Disconnected|Protocol).*check of the server failed"):
        backend.generate([request() for _ in range(8)])
    # the first failure with no answer in between asks the server, which resets that too: no
    # waiting through 5 retries of 0.5 s doubling (15.5 s)
    assert time.monotonic() - start < 10
    assert server.probes >= 1
    with pytest.raises(BackendUnavailable):  # once down, later calls stop at once
        backend.generate([request()])
    backend.close()


def test_a_silent_server_is_down_after_the_first_byte_timeout(servers):
    server = servers("silent")
    backend = create_mllm(f"openai:{server.url}#m", {**QUICK, "down_after_s": 0.0, "timeout_s": 600})
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="ReadTimeout.*check of the server failed.*ReadTimeout"):
        backend.generate([request() for _ in range(4)])
    # one first-byte timeout (0.5 s) plus one probe (0.5 s), not 4 tries of each request
    assert time.monotonic() - start < 10
    backend.close()


def test_read_timeout_bounds_silence_after_the_answer_started(servers):
    server = servers("stall")  # sends the head of an event stream, then nothing
    options = {**QUICK, "first_byte_timeout_s": 30.0, "read_timeout_s": 0.3, "max_retries": 1}
    backend = create_mllm(f"openai:{server.url}#m", options)
    start = time.monotonic()
    with pytest.raises(BackendError, match="ReadTimeout") as info:
        backend.generate([request()])
    assert time.monotonic() - start < 10  # bounded by read_timeout_s, not first_byte_timeout_s
    # the server answers GET /models: a stalled answer concerns this request, the run goes on
    assert not isinstance(info.value, BackendUnavailable)
    assert backend.request_stats()["request_retries"] == 1
    backend.close()


def test_a_server_that_starts_resetting_mid_run_becomes_unavailable(servers):
    server = servers("ok", reset_after=3)
    backend = create_mllm(f"openai:{server.url}#m", {**QUICK, "concurrency": 1, "down_after_s": 0.0})
    assert backend.generate([request(), request(), request()]) == [server.answer] * 3
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.generate([request(), request()])
    assert time.monotonic() - start < 10


def test_one_request_that_always_fails_stays_its_own_failure(servers):
    server = servers("ok", poison=is_green)
    backend = create_mllm(f"openai:{server.url}#m", {**QUICK, "concurrency": 2, "down_after_s": 0.0})
    with pytest.raises(BackendError, match=r"after 4 tries") as info:
        backend.generate([request(), request((20, 220, 20)), request()])
    assert not isinstance(info.value, BackendUnavailable)
    assert server.answered == 2  # the other requests were answered
    # alone, with nothing else answered in between: the server check tells it apart
    with pytest.raises(BackendError) as info:
        backend.generate([request((20, 220, 20))])
    assert not isinstance(info.value, BackendUnavailable)
    assert backend.request_stats()["server_checks"] >= 1
    assert backend.generate([request()]) == [server.answer]
    backend.close()


def test_a_short_outage_within_down_after_s_is_retried(servers):
    server = servers("reset")
    backend = create_mllm(f"openai:{server.url}#m", {**QUICK, "max_retries": 20, "backoff_s": 0.1,
                                                     "max_backoff_s": 0.1, "down_after_s": 30.0})
    import threading

    def heal_after_three_resets():
        deadline = time.monotonic() + 60
        while server.received < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.mode = "ok"

    threading.Thread(target=heal_after_three_resets, daemon=True).start()
    assert backend.generate([request()]) == [server.answer]
    stats = backend.request_stats()
    assert stats["request_retries"] >= 2 and stats["transport_failures"] >= 2 and stats["server_checks"] == 0
    backend.close()
