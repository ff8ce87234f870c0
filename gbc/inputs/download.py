"""Downloading images (and streaming remote tar shards) with httpx.

Every image ends as bytes or as a failure reason: HTTP status, timeout, connection error,
too many redirects, over the size limit, or a body that is not an image. Connection errors,
timeouts, HTTP 429 and 5xx are retried with exponential backoff; other 4xx are final.
Downloads run on a thread pool with a bounded window, so a list of millions of URLs never
has more than ``2 x concurrency`` downloads (and their bytes) in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

from gbc.inputs.items import ImageSource

#: Leading bytes of the image formats that PIL reads (checked only when the server does not
#: say ``image/...``, to tell an HTML error page from an image served with a wrong type).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_MAGIC):
        return True
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _need_httpx():
    try:
        import httpx
    except ImportError:
        from gbc.inputs.items import InputError

        raise InputError("URL inputs need httpx: pip install 'gbc[inputs]'") from None
    return httpx


@dataclass(frozen=True)
class DownloadOptions:
    """How images are downloaded (see ``gbc annotate --help``)."""

    concurrency: int = 16
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    user_agent: str = "gbc (image annotation; +https://github.com/apple/ml-gbc)"

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"download concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"download timeout must be > 0, got {self.timeout_s}")
        if self.retries < 0 or self.max_bytes < 1 or self.max_redirects < 0:
            raise ValueError("download retries and redirects must be >= 0 and the size limit >= 1")


class _Failure(Exception):
    def __init__(self, reason: str, error_type: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.error_type, self.retry = reason, error_type, retry


class Downloader:
    """Fetches image URLs concurrently; use as a context manager (it owns a connection pool)."""

    def __init__(self, options: DownloadOptions = DownloadOptions()):
        httpx = _need_httpx()
        self.options = options
        limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
        self._client = httpx.Client(follow_redirects=True, max_redirects=options.max_redirects,
                                    timeout=options.timeout_s, limits=limits,
                                    headers={"User-Agent": options.user_agent})
        self._pool = cf.ThreadPoolExecutor(options.concurrency, thread_name_prefix="gbc-download")
        self._lock = threading.Lock()
        self.stats = {"downloaded": 0, "failed": 0, "bytes": 0, "retries": 0}

    def __enter__(self) -> "Downloader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # ------------------------------------------------------------------ one URL
    def fetch(self, url: str) -> Tuple[Optional[bytes], Optional[str], Optional[str]]:
        """``(bytes, None, None)`` or ``(None, reason, error type)`` for ``url``; never raises."""
        opts = self.options
        attempt = 0
        while True:
            try:
                data = self._get(url)
            except _Failure as exc:
                if exc.retry and attempt < opts.retries:
                    attempt += 1
                    with self._lock:
                        self.stats["retries"] += 1
                    time.sleep(opts.backoff_s * 2 ** (attempt - 1))
                    continue
                with self._lock:
                    self.stats["failed"] += 1
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                return None, f"{exc.reason}{tries}: {url}", exc.error_type
            with self._lock:
                self.stats["downloaded"] += 1
                self.stats["bytes"] += len(data)
            return data, None, None

    def _get(self, url: str) -> bytes:
        httpx = _need_httpx()
        opts = self.options
        try:
            with self._client.stream("GET", url) as response:
                status = response.status_code
                if status >= 400:
                    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                    raise _Failure(reason, f"HTTP{status}", retry=status >= 500 or status == 429)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > opts.max_bytes:
                    raise _Failure(f"too large: {declared} bytes, over the limit of {opts.max_bytes}", "TooLarge")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > opts.max_bytes:
                        raise _Failure(f"too large: over the limit of {opts.max_bytes} bytes", "TooLarge")
                    chunks.append(chunk)
                data = b"".join(chunks)
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        except httpx.TooManyRedirects:
            raise _Failure(f"more than {opts.max_redirects} redirects", "TooManyRedirects") from None
        except httpx.TimeoutException as exc:
            raise _Failure(f"timed out after {opts.timeout_s:g} s ({type(exc).__name__})", "Timeout", retry=True) from None
        except httpx.TransportError as exc:
            raise _Failure(f"cannot download ({type(exc).__name__}: {exc})", type(exc).__name__, retry=True) from None
        except httpx.InvalidURL as exc:
            raise _Failure(f"invalid URL ({exc})", "InvalidURL") from None
        if not data:
            raise _Failure("empty response (0 bytes)", "EmptyFile")
        if not ctype.startswith("image/") and not _looks_like_image(data):
            raise _Failure(f"not an image (the server sent {ctype or 'no content type'}, {len(data)} bytes)",
                           "NotAnImage")
        return data

    # ------------------------------------------------------------------ a stream of items
    def fill(self, source: ImageSource) -> ImageSource:
        data, reason, etype = self.fetch(source.url or source.path)
        if data is None:
            return dataclasses.replace(source, error=reason, error_type=etype)
        return dataclasses.replace(source, data=data)

    def stream(self, sources: Iterable[ImageSource]) -> Iterator[ImageSource]:
        """``sources`` with every URL item downloaded (``data`` or ``error`` set).

        Items that need no download pass through at once; downloaded ones come in the order
        they finish. At most ``2 x concurrency`` downloads are pending at a time.
        """
        window = 2 * self.options.concurrency
        pending: set = set()
        for source in sources:
            if not needs_download(source):
                yield source
                continue
            pending.add(self._pool.submit(self.fill, source))
            # Hand over what has finished at once (the engine should not wait for a full
            # window when most rows are skipped); block only when the window is full.
            finished = {f for f in pending if f.done()}
            if len(pending) - len(finished) >= window:
                more, _ = cf.wait(pending - finished, return_when=cf.FIRST_COMPLETED)
                finished |= more
            pending -= finished
            for future in finished:
                yield future.result()
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield future.result()


def needs_download(source: ImageSource) -> bool:
    return source.data is None and source.error is None and source.path.startswith(("http://", "https://"))


class _ResponseReader:
    """A file-like ``read(n)`` over a streamed httpx response (for ``tarfile``'s stream mode)."""

    def __init__(self, client, response):
        self._client, self._response = client, response
        self._chunks = response.iter_bytes()
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        httpx = _need_httpx()
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
            except httpx.HTTPError as exc:  # the connection broke mid-shard: tarfile sees an OSError
                raise OSError(f"{type(exc).__name__}: {exc}") from None
        if n < 0:
            n = len(self._buffer)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def close(self) -> None:
        self._response.close()
        self._client.close()


def open_stream(url: str, timeout_s: float = 60.0) -> _ResponseReader:
    """A readable stream of ``url``'s body; ``OSError`` when it cannot be fetched."""
    httpx = _need_httpx()
    client = httpx.Client(follow_redirects=True, timeout=timeout_s)
    try:
        request = client.build_request("GET", url)
        response = client.send(request, stream=True)
    except httpx.HTTPError as exc:
        client.close()
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        response.close()
        client.close()
        raise OSError(f"HTTP {response.status_code} {response.reason_phrase}")
    return _ResponseReader(client, response)
