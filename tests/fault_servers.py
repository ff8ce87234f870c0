"""An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on demand.

Raw sockets (one thread per connection) so that a test controls exactly what the client sees:

- ``ok``: answers every chat request (streamed as server-sent events when the request asks
  for ``stream``, else one JSON body) and ``GET /models``;
- ``reset``: accepts each connection, reads the request, then resets the connection (RST);
- ``silent``: accepts each connection, reads the request and never answers;
- ``stall``: answers ``GET /models``, but starts each chat answer (the response head of an event
  stream) and then sends nothing more.

``mode`` can be switched at any time (``reset_after=N`` switches to ``reset`` by itself after N
answered chat requests); ``poison(body) -> bool`` resets only the chat requests it selects, the
others are answered. Used by the backend tests and the CLI tests in a subprocess (run as a
script: ``python tests/fault_servers.py MODE`` prints the port and serves until killed).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from typing import Callable, Optional


#: An image answer in the prompted layout (one tagged object), usable for every query kind.
ANSWER = ("Detailed Caption: A red cat sits on a mat.\nTop-Level Element Identification:\n- [cat][single]\n"
          "Concise Formatted Caption: A [cat][single] on a mat.")


class FaultServer:
    def __init__(self, mode: str = "ok", reset_after: Optional[int] = None,
                 poison: Optional[Callable[[dict], bool]] = None, answer: str = ANSWER):
        self.mode = mode
        self.reset_after = reset_after
        self.poison = poison
        self.answer = answer
        self.answered = 0  # chat requests answered
        self.received = 0  # chat requests read (answered or not)
        self.probes = 0  # GET /models requests read
        self.lock = threading.Lock()
        self._stopped = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._connections = []
        self._thread = threading.Thread(target=self._accept_loop, name="fault-server", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ lifetime
    def stop(self) -> None:
        self._stopped.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self.lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ serving
    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stopped.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, path, body = request
                is_chat = method == "POST" and path.endswith("/chat/completions")
                with self.lock:
                    if is_chat:
                        self.received += 1
                    else:
                        self.probes += 1
                    mode = self.mode
                poisoned = is_chat and self.poison is not None and self.poison(body)
                if mode == "reset" or poisoned:
                    _reset(conn)
                    return
                if mode == "silent":
                    self._stopped.wait()
                    return
                if is_chat and mode == "stall":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    self._stopped.wait()
                    return
                if is_chat:
                    self._answer(conn, body)
                else:
                    _send_json(conn, 200, {"object": "list", "data": [{"id": "fault-model"}]})
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, conn: socket.socket, body: dict) -> None:
        text = self.answer
        if body.get("stream"):
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: keep-alive\r\n\r\n")
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
            words = text.split(" ")
            chunks += [{"choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}}]} for i, w in enumerate(words)]
            chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
            conn.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")
        else:
            _send_json(conn, 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        with self.lock:
            self.answered += 1
            if self.reset_after is not None and self.answered >= self.reset_after:
                self.mode = "reset"


def _read_request(reader) -> Optional[tuple]:
    line = reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while True:
        header = reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    raw = reader.read(length) if length else b""
    body = json.loads(raw) if raw else {}
    return method, path, body


def _send_json(conn: socket.socket, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    conn.sendall(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: keep-alive\r\n\r\n%s" % (status, len(data), data))


def _reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the client gets a TCP reset, not an orderly end of stream."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


if __name__ == "__main__":  # a server for another process: prints its port, serves until killed
    server = FaultServer(sys.argv[1] if len(sys.argv) > 1 else "ok",
                         reset_after=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(server.port, flush=True)
    threading.Event().wait()
