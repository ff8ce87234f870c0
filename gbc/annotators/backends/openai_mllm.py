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
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence

from pydantic import Field

from gbc.annotators.backends.base import BackendError, BackendOptions, BackendUnavailable, MllmRequest
from gbc.annotators.backends.hf_mllm import scale_image
from gbc.annotators.backends.registry import register_mllm

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


@register_mllm
class OpenAiMllm:
    """Chat completions with image input over HTTP, many requests in flight."""

    name = "openai"
    spec_syntax = "openai:<base url>[#model]"

    class Options(BackendOptions):
        concurrency: int = Field(32, ge=1, description="requests in flight at once (also the engine's batch size)")
        api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: no key)")
        timeout_s: float = Field(300.0, gt=0, description="seconds to wait for one answer")
        connect_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for a connection")
        max_retries: int = Field(5, ge=0, description="retries on 429/5xx answers, timeouts and connection errors")
        backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")
        max_backoff_s: float = Field(60.0, ge=0, description="longest delay between two tries")
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
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()

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
                timeout = httpx.Timeout(self.options.timeout_s, connect=self.options.connect_timeout_s)
                self._client = httpx.Client(headers=headers, timeout=timeout, limits=limits)
                self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="gbc-openai")
            return self._client

    def _call(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        """One API call with retries; a ``BackendError`` once retrying cannot help.

        ``BackendUnavailable`` (the run stops) when the server could not be reached on any try
        (connection refused, unknown host, connect timeout) or rejects the credentials
        (401/403); other failures concern this request only.
        """
        import httpx

        client = self._http()
        url = f"{self.base_url}{path}"
        last = ""
        unreachable = False
        for attempt in range(self.options.max_retries + 1):
            headers = None
            try:
                response = client.request(method, url, json=payload)
            except (httpx.TransportError,) as exc:  # connection refused/reset, timeouts
                last = f"{exc.__class__.__name__}: {exc}"
                # no connection at all (refused, DNS, connect timeout), unlike a read timeout
                # or a reset, which the server may cause for one request only
                unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                unreachable = False
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise BackendError(f"{url} answered with invalid JSON: {response.text[:200]!r}") from exc
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code in CREDENTIAL_STATUSES:
                    raise BackendUnavailable(
                        f"{method} {url} was refused with {last}; check the API key in ${self.options.api_key_env}")
                if response.status_code not in RETRY_STATUSES:
                    raise BackendError(f"{method} {url} failed with {last}")
                headers = response.headers
            if attempt < self.options.max_retries:
                delay = retry_delay(headers, attempt, self.options.backoff_s, self.options.max_backoff_s)
                log.warning("%s %s: %s; retry %d in %.1f s", method, url, last, attempt + 1, delay)
                time.sleep(delay)
        error = BackendUnavailable if unreachable else BackendError
        raise error(
            f"{method} {url} failed after {self.options.max_retries + 1} tries ({last}); is the server running and reachable?"
        )

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
        return list(self._pool.map(self._answer, requests))

    def close(self) -> None:
        """Close connections and worker threads."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._client is not None:
                self._client.close()
                self._client = None
