"""Parse, check and serialise the records of a JSONL file in worker processes, for a store.

Turning a record into a store value is CPU work of the Python interpreter (pydantic parsing
and validation, the invariant check, the in-edge check, serialisation): on one core it runs
at a few thousand graphs per second. ``encoded_jsonl`` reads the file in this process and
hands chunks of raw lines to ``workers`` processes, which return ``(key, payload, in-edge
mode)`` as ``ValueCodec.graph_payload`` makes them, compressed too once the store has its
zstd dictionary; this process keeps the single LMDB writer (``GraphStore.put_payloads``),
which commits them in file order. A store written this way holds the same values as one
written from the same file by ``put_many`` in one process.

Workers are started with ``spawn``: nothing of this process (an open LMDB environment, a
lock held by a thread) is inherited. Errors are those of reading the file in one process, in
the same order: the first damaged or invalid record is reported with its file and line.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional, Tuple

from gbc.errors import GbcError

#: Lines handed to a worker at a time: enough to make the cost of sending them small.
CHUNK_LINES = 256
#: Chunks in flight per worker: workers never wait for the reader, memory stays bounded.
CHUNKS_AHEAD = 2

Encoded = Tuple[str, bytes, Optional[int]]
WriterSettings = Tuple[int, bytes, int]


class WorkerError(GbcError, RuntimeError):
    """A worker process stopped before handing back its graphs."""


_codec = None  # one ValueCodec per worker process


def _encode_chunk(name: str, start: int, lines: List[Tuple[int, bytes]], validate: bool, layout: str,
                  settings: Optional[WriterSettings]) -> List[Encoded]:
    """``(key, payload, mode)`` of each line, or ``(key, value, None)`` packed with the store's
    ``settings`` once it has them; ``start`` is the position of the first graph in the file."""
    global _codec
    from gbc.schemas.graph import GbcGraph
    from gbc.store.codec import ValueCodec
    from gbc.store.files import check_invariants
    from gbc.store.records import graph_key, parse_graph_record

    if _codec is None:
        _codec = ValueCodec()
    if settings is not None:
        _codec.use_writer_settings(settings)
    out: List[Encoded] = []
    for index, (lineno, line) in enumerate(lines, start):
        where = f"{name}, line {lineno}"
        graph = parse_graph_record(line, where)
        if validate:
            check_invariants(graph, where)
        if layout != "auto":
            graph = GbcGraph.from_dict(graph.to_dict(layout))
        payload, mode = _codec.graph_payload(graph)
        if settings is None:
            out.append((graph_key(graph, index), payload, mode))
        else:
            out.append((graph_key(graph, index), _codec.pack(payload, mode), None))
    return out


def _chunks(lines: Iterator[Tuple[int, bytes]], size: int) -> Iterator[List[Tuple[int, bytes]]]:
    chunk: List[Tuple[int, bytes]] = []
    try:
        for item in lines:
            chunk.append(item)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except ValueError:  # the file breaks off: the lines read before the break are still handed out
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def _result(future: Future) -> List[Encoded]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerError(
            "a worker process stopped before handing back its graphs (killed, out of memory, or it could not start: "
            "workers are spawned and import the main script again, which must be a file that starts its work "
            "under `if __name__ == \"__main__\":`)"
        ) from None


def encoded_jsonl(path: Path, workers: int, validate: bool = True, layout: str = "auto",
                  chunk_lines: int = CHUNK_LINES,
                  settings: Optional[Callable[[], Optional[WriterSettings]]] = None) -> Iterator[Encoded]:
    """``(key, payload, in-edge mode)`` of every graph of the JSONL file ``path``, in file order,
    made by ``workers`` processes (keys as ``GraphFile`` names them: image key, else ``#index``).

    ``settings`` (the writing store's ``writer_settings``) is asked before each chunk is handed
    out: once the store has trained its dictionary, workers compress too and hand back
    ``(key, value, None)``, the same bytes the store would pack (``GraphStore.put_payloads``
    takes both kinds), and the writing process is left with little more than LMDB's work.

    ``validate`` checks each graph's invariants, ``layout`` keeps only the fields of that
    layout (as ``gbc convert --layout``). Raises ``GraphFormatError`` for the first damaged
    or invalid record, as reading the file in one process would.
    """
    from gbc.store.files import jsonl_lines

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    name = str(path)
    pending: Deque[Future] = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            start = 0
            read_error: Optional[BaseException] = None
            try:
                for chunk in _chunks(jsonl_lines(Path(path)), chunk_lines):
                    packing = settings() if settings is not None else None
                    pending.append(pool.submit(_encode_chunk, name, start, chunk, validate, layout, packing))
                    start += len(chunk)
                    if len(pending) >= CHUNKS_AHEAD * workers:
                        yield from _result(pending.popleft())
            except ValueError as exc:  # the file breaks off: records before the break come first
                read_error = exc
            while pending:
                yield from _result(pending.popleft())
            if read_error is not None:
                raise read_error
        finally:
            for future in pending:  # an error or an abandoned iteration: start nothing more
                future.cancel()
