"""Test inputs: real tar shards written by the webdataset library, an img2dataset-shaped
folder, and a local HTTP server on 127.0.0.1 with scripted answers."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image


def png_bytes(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_wds_shard(path: Path, samples: List[Dict]) -> None:
    """A tar shard written by webdataset's own TarWriter (``samples``: dicts with ``__key__``)."""
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def img2dataset_folder(root: Path, shards: int, per_shard: int) -> List[str]:
    """A folder as img2dataset writes it: NNNNN.tar (jpg, txt, json per sample), NNNNN.parquet and
    NNNNN_stats.json. Returns the sample keys (shard number + index, 9 digits)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(shards):
        samples, rows = [], []
        for i in range(per_shard):
            key = f"{s:05d}{i:04d}"
            url = f"http://example.invalid/{key}.jpg"
            caption = f"photo number {s * per_shard + i}"
            meta = {"url": url, "key": key, "status": "success", "caption": caption, "width": 40, "height": 30}
            samples.append({"__key__": key, "jpg": jpg_bytes(s * 1000 + i), "txt": caption,
                            "json": json.dumps(meta).encode()})
            rows.append(meta)
            keys.append(key)
        write_wds_shard(root / f"{s:05d}.tar", samples)
        pq.write_table(pa.Table.from_pylist(rows), root / f"{s:05d}.parquet")
        (root / f"{s:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": per_shard}))
    return keys


class ImageServer:
    """A threaded HTTP server on 127.0.0.1 answering:

    - ``/img/N.png``: a PNG (200); ``/missing``: 404; ``/flaky/NAME``: 500 on the first request
      for NAME, then a PNG; ``/slow``: a PNG after ``slow_s`` seconds; ``/html``: a text/html
      page; ``/redirect/N``: 302 to ``/img/N.png``; ``/loop``: redirects to itself; ``/big``: a
      body of ``big_bytes`` bytes.
    """

    def __init__(self, slow_s: float = 3.0, big_bytes: int = 3 * 1024 * 1024):
        self.slow_s = slow_s
        self.big_bytes = big_bytes
        self.hits: Dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", ctype="image/png", headers=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                path = self.path
                with server.lock:
                    server.hits[path] = server.hits.get(path, 0) + 1
                    hits = server.hits[path]
                if path.startswith("/img/"):
                    seed = int(path.rsplit("/", 1)[-1].split(".")[0])
                    self._send(200, png_bytes(seed))
                elif path == "/missing":
                    self._send(404, b"not here", "text/plain")
                elif path.startswith("/flaky/"):
                    if hits == 1:
                        self._send(500, b"oops", "text/plain")
                    else:
                        self._send(200, png_bytes(99))
                elif path == "/slow":
                    time.sleep(server.slow_s)
                    self._send(200, png_bytes(98))
                elif path == "/html":
                    self._send(200, b"<html><body>an error page</body></html>", "text/html; charset=utf-8")
                elif path.startswith("/redirect/"):
                    n = path.rsplit("/", 1)[-1]
                    self._send(302, b"", "text/plain", {"Location": f"/img/{n}.png"})
                elif path == "/loop":
                    self._send(302, b"", "text/plain", {"Location": "/loop"})
                elif path == "/big":
                    self._send(200, b"\xff\xd8\xff" + bytes(server.big_bytes), "image/jpeg")
                else:
                    self._send(404, b"?", "text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
