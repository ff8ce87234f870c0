"""``openai:<base url>[#model]``: any OpenAI-compatible chat server that takes images.

vLLM, SGLang, Ollama, llama.cpp server, LM Studio or a hosted API. The engine's batches become
many requests in flight (``concurrency``), which the server batches continuously. Each request
puts the long system prompt first, as a system message, so that servers with prefix caching
reuse it across requests; the image travels as a base64 JPEG data URL.

Example::

    mllm = registry.create_mllm("openai:http://localhost:8000/v1#llava-hf/llava-v1.6-mistral-7b-hf",
                                {"concurrency": 64})
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import os
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from pydantic import Field

from gbc.annotators.backends.base import BackendError, BackendOptions, BackendUnavailable, MllmRequest
from gbc.annotators.backends.hf_mllm import scale_image
from gbc.annotators.backends.registry import register_mllm
from gbc.annotators.backends.server_health import ServerHealth

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limits and server-side failures
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: HTTP statuses that no request can get past (missing or rejected API key): the run stops
CREDENTIAL_STATUSES = frozenset({401, 403})


def split_argument(argument: str) -> tuple[str, Optional[str]]:
    """``http://host:8000/v1#model`` -> (``http://host:8000/v1``, ``model``); a bare host gets ``/v1``."""
    url, _, model = argument.partition("#")
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"the openai backend needs an http(s) base URL, got {url!r}: openai:<base url>[#model]")
    scheme, _, rest = url.partition("://")
    if "/" not in rest:  # no path: the OpenAI layout serves under /v1
        url += "/v1"
    return url, (model.strip() or None)


def image_data_url(image, max_side: Optional[int], quality: int) -> str:
    """``image`` as a ``data:image/jpeg;base64,...`` URL, scaled to ``max_side`` at most."""
    buffer = io.BytesIO()
    scale_image(image, max_side).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def retry_delay(headers, attempt: int, base: float, most: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): the server's Retry-After when it
    gives one in seconds, else exponential backoff; never more than ``most``."""
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return min(most, max(0.0, float(value)))
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    return min(most, base * (2**attempt))


def read_event_stream(lines: Iterable[str], deadline: float, url: str) -> dict:
    """A streamed chat completion (server-sent events) assembled into the shape of a plain one.

    ``BackendError`` for an error event, a stream with no choices, or an answer still
    streaming at ``deadline`` (``time.monotonic()``); a stream cut short raises the
    transport's own error (the caller retries it like any transport failure).
    """
    parts: List[str] = []
    seen_choice = False
    for line in lines:
        if time.monotonic() > deadline:
            raise BackendError(f"{url}: the answer was still streaming when timeout_s ran out")
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise BackendError(f"{url} streamed an event that is not JSON: {data[:200]!r}") from exc
        if not isinstance(event, dict):
            raise BackendError(f"{url} streamed an unexpected event: {data[:200]!r}")
        if event.get("error"):
            raise BackendError(f"{url} reported an error while answering: {str(event['error'])[:300]}")
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                seen_choice = True
                delta = choice.get("delta") or {}
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
    if not seen_choice:
        raise BackendError(f"{url} streamed no answer")
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)}}]}


def run_concurrently(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> List[Any]:
    """``[fn(item) for item in items]`` on up to ``workers`` daemon threads.

    A ``BackendUnavailable`` is raised as soon as one call raises it (the run stops; the other
    calls end on their own, seeing the backend down); any other failure is raised once all
    calls have ended, the first in ``items`` order. Daemon threads: a call stuck on a silent
    server never holds up the end of the process.
    """
    results: List[Any] = [None] * len(items)
    errors: Dict[int, BaseException] = {}
    todo: "queue.SimpleQueue" = queue.SimpleQueue()
    for index in range(len(items)):
        todo.put(index)
    ended: "queue.SimpleQueue" = queue.SimpleQueue()

    def work() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = fn(items[index])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors[index] = exc
            ended.put(index)

    for i in range(min(workers, len(items))):
        threading.Thread(target=work, name=f"gbc-openai-{i}", daemon=True).start()
    for _ in range(len(items)):
        index = ended.get()
        if isinstance(errors.get(index), BackendUnavailable):
            while True:  # requests not started yet are dropped
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break
            raise errors[index]
    if errors:
        raise errors[min(errors)]
    return results


@register_mllm
class OpenAiMllm:
    """Chat completions with image input over HTTP, many requests in flight."""

    name = "openai"
    spec_syntax = "openai:<base url>[#model]"

    class Options(BackendOptions):
        concurrency: int = Field(32, ge=1, description="requests in flight at once (also the engine's batch size)")
        api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: no key)")
        connect_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for a connection")
        first_byte_timeout_s: float = Field(
            30.0, gt=0, description="seconds from sending a request to the start of the answer (its response head); "
            "a server that accepts requests and stays silent is given up after this")
        read_timeout_s: float = Field(
            120.0, gt=0, description="longest silence while an answer streams in: the wait for the first token "
            "(queueing, prefill) and between tokens")
        timeout_s: float = Field(600.0, gt=0, description="longest time for one whole answer")
        stream: bool = Field(True, description="ask for streamed answers (server-sent events), so that a silent server "
                             "is noticed within the timeouts above; false: one JSON answer, waited for up to timeout_s")
        max_retries: int = Field(5, ge=0, description="retries on 429/5xx answers, timeouts and connection errors")
        backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")
        max_backoff_s: float = Field(60.0, ge=0, description="longest delay between two tries")
        down_after_s: float = Field(
            15.0, ge=0, description="transport failures (refused, reset, timed out) going on this long with no answer "
            "to any request, confirmed by a failing GET /models, mean the server is down: the run stops")
        max_image_side: Optional[int] = Field(1024, ge=16, description="images are scaled down to this longer side")
        jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the images sent")
        extra_body: Dict[str, Any] = Field(
            default_factory=dict, description="extra fields merged into every request (e.g. top_p, repetition_penalty)"
        )

    def __init__(self, argument: str, options: Optional["OpenAiMllm.Options"] = None):
        self.options = options or self.Options()
        self.base_url, self.model = split_argument(argument)
        self.max_batch_size = self.options.concurrency
        self._client = None
        self._probe_client = None
        self._tls_context = None
        self._lock = threading.Lock()
        self.health = ServerHealth(self.base_url, self._probe, self.options.down_after_s)
        self.retries = 0  # requests sent again (after a transport failure, 429 or 5xx)

    # -- connection ------------------------------------------------------------------------------

    def _http(self):
        with self._lock:
            if self._client is None:
                import httpx

                headers = {}
                key = os.environ.get(self.options.api_key_env)
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                limits = httpx.Limits(max_connections=self.options.concurrency, max_keepalive_connections=self.options.concurrency)
                self._client = httpx.Client(headers=headers, timeout=self._timeout(self.options.first_byte_timeout_s),
                                            limits=limits, verify=self._tls())
            return self._client

    def _tls(self):
        # made once: loading the CA bundle costs a tenth of a second, on every client otherwise
        if self._tls_context is None:
            import httpx

            self._tls_context = httpx.create_ssl_context()
        return self._tls_context

    def _timeout(self, head_s: float):
        import httpx

        # the pool wait covers requests queued behind ``concurrency`` others of this backend
        return httpx.Timeout(connect=self.options.connect_timeout_s, read=head_s, write=head_s,
                             pool=self.options.timeout_s)

    def _probe(self) -> Optional[str]:
        """``GET /models`` with short timeouts: None when the server answers at all (any status)."""
        import httpx

        with self._lock:
            if self._probe_client is None:
                # its own client and connection: the requests' pool may be full of stuck ones
                wait = min(self.options.connect_timeout_s, self.options.first_byte_timeout_s)
                self._probe_client = httpx.Client(timeout=wait, verify=self._tls(),
                                                  limits=httpx.Limits(max_keepalive_connections=0))
            client = self._probe_client
        try:
            client.get(f"{self.base_url}/models")
        except httpx.TransportError as exc:
            return f"GET /models: {exc.__class__.__name__}: {exc}".rstrip(": ")
        return None

    def _send(self, client, method: str, url: str, payload: Optional[dict]):
        """One try: ``(status, headers, body)`` where body is the parsed JSON answer (a streamed
        chat answer is assembled into the same shape) or, for an HTTP error, its text."""
        # A streamed answer starts at once (then tokens follow); a plain one arrives whole.
        streamed = payload is None or bool(payload.get("stream"))
        head_s = self.options.first_byte_timeout_s if streamed else self.options.timeout_s
        request = client.build_request(method, url, json=payload, timeout=self._timeout(head_s))
        response = client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                return response.status_code, response.headers, response.text
            # The head has arrived: from here on, silence is bounded by read_timeout_s. httpx reads
            # the body with the timeouts held by the request when the body is first read.
            request.extensions["timeout"] = {**request.extensions.get("timeout", {}), "read": self.options.read_timeout_s}
            deadline = time.monotonic() + self.options.timeout_s
            if "text/event-stream" in response.headers.get("content-type", ""):
                return response.status_code, response.headers, read_event_stream(response.iter_lines(), deadline, url)
            body = response.read()
            try:
                return response.status_code, response.headers, json.loads(body)
            except ValueError as exc:
                raise BackendError(f"{url} answered with invalid JSON: {body[:200]!r}") from exc
        finally:
            response.close()

    def _call(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        """One API call with retries; a ``BackendError`` once retrying cannot help.

        ``BackendUnavailable`` (the run stops) when the server rejects the credentials (401/403)
        or is judged down by ``ServerHealth`` (transport failures with no answer in between,
        confirmed by a probe); other failures concern this request only.
        """
        import httpx

        self.health.check()
        client = self._http()
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.options.max_retries + 1):
            headers = None
            started = time.monotonic()
            retries_left = attempt < self.options.max_retries
            try:
                status, headers, body = self._send(client, method, url, payload)
            except httpx.TransportError as exc:  # refused, reset, timed out, broken response
                last = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
                self.health.failed(started, last, retries_left)
            else:
                self.health.answered()
                if status < 400:
                    return body
                last = f"HTTP {status}: {str(body)[:300]}"
                if status in CREDENTIAL_STATUSES:
                    raise BackendUnavailable(
                        f"{method} {url} was refused with {last}; check the API key in ${self.options.api_key_env}")
                if status not in RETRY_STATUSES:
                    raise BackendError(f"{method} {url} failed with {last}")
            if retries_left:
                delay = retry_delay(headers, attempt, self.options.backoff_s, self.options.max_backoff_s)
                log.warning("%s %s: %s; retry %d in %.1f s", method, url, last, attempt + 1, delay)
                with self._lock:
                    self.retries += 1
                self.health.wait(delay)
        raise BackendError(f"{method} {url} failed after {self.options.max_retries + 1} tries ({last})")

    def request_stats(self) -> dict:
        """Counters for the run summary: requests sent again, transport failures, server checks."""
        return {"request_retries": self.retries, "transport_failures": self.health.transport_failures,
                "server_checks": self.health.probes}

    def model_name(self) -> str:
        """The ``#model`` of the spec, else the first model the server lists."""
        if self.model is None:
            listing = self._call("GET", "/models")
            models = [m.get("id") for m in listing.get("data", []) if m.get("id")]
            if not models:
                raise BackendUnavailable(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#<model>")
            self.model = models[0]
        return self.model

    # -- generation ------------------------------------------------------------------------------

    def build_payload(self, request: MllmRequest) -> dict:
        """The chat-completions body for one request (system message first, then image and text)."""
        messages: List[dict] = []
        if request.system_prompt.strip():
            messages.append({"role": "system", "content": request.system_prompt})
        url = image_data_url(request.image, self.options.max_image_side, self.options.jpeg_quality)
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": request.user_prompt},
                ],
            }
        )
        options = request.options
        payload: Dict[str, Any] = {
            "model": self.model_name(),
            "messages": messages,
            "max_tokens": options.max_new_tokens,
            "temperature": options.temperature,
        }
        if options.seed is not None:
            payload["seed"] = options.seed
        if self.options.stream:
            payload["stream"] = True
        payload.update(self.options.extra_body)
        return payload

    def _answer(self, request: MllmRequest) -> str:
        reply = self._call("POST", "/chat/completions", self.build_payload(request))
        try:
            content = reply["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"unexpected chat completion from {self.base_url}: {str(reply)[:300]}") from exc
        return content or ""

    def generate(self, requests: Sequence[MllmRequest]) -> List[str]:
        """One answer per request, in order; up to ``concurrency`` requests in flight."""
        if not requests:
            return []
        self.model_name()  # resolve once, before fanning out
        self._http()
        return run_concurrently(self._answer, requests, self.options.concurrency)

    def close(self) -> None:
        """Close connections (requests still in flight on a down server end with their timeouts,
        on daemon threads that never hold up the process)."""
        with self._lock:
            for client in (self._client, self._probe_client):
                if client is not None:
                    client.close()
            self._client = self._probe_client = None
