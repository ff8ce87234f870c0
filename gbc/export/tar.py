"""A minimal writer of POSIX ustar archives of regular files: the WebDataset shards and the
caption shards aligned with input shards are written with it.

Shards are written once and read later by other programs, so on Linux what has been written
leaves the page cache some way behind the writer (``DropBehind``), as ``dd oflag=nocache``
does: an export of hundreds of GB does not push everything else out of memory, and the
kernel reuses the pages it just freed instead of taking new ones. On a 2-core VM, a
WebDataset export of 100,000 graphs (4 GB of tar) spent 100-170 us of kernel time per graph
without it; plain writes of 4 GB took 1.3-2.9 ms of kernel time per MB without it and 0.3
with it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Sequence, Tuple

_ZEROS = bytes(512)
_WRITEV = hasattr(os, "writev")
#: Most buffers one writev call takes.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if _WRITEV else 1024
#: Written bytes whose writeback is started at once (``sync_file_range``), and how far behind
#: the writer written bytes are dropped from the page cache (by then they are on disk).
DROP_CHUNK_BYTES = 8 << 20
DROP_LAG_BYTES = 32 << 20
_SYNC_FILE_RANGE_WRITE = 2
_UNRESOLVED = object()


class DropBehind:
    """Starts the writeback of what this process writes to its shards, a chunk at a time, and
    drops each chunk from the page cache once ``lag`` more bytes were written after it (by
    then it is on disk), in whichever shard (shards are often smaller than ``lag``). Linux
    only; elsewhere, or where the file system refuses, it does nothing. Data is never lost:
    only clean pages are dropped, and writes go to the files as before."""

    def __init__(self, chunk: int = DROP_CHUNK_BYTES, lag: int = DROP_LAG_BYTES):
        self.chunk, self.lag = chunk, lag
        self.total = 0  # bytes whose writeback was started, all files together
        self.dropped = 0  # bytes dropped from the page cache
        self._queue: Deque[Tuple[str, int, int, int]] = deque()  # (path, start, end, total after it)
        self._lock = threading.Lock()
        self._start_writeback: Any = _UNRESOLVED  # the C library is looked up on first use

    def _resolve(self) -> Any:
        if self._start_writeback is _UNRESOLVED:
            self._start_writeback = None
            if sys.platform.startswith("linux") and hasattr(os, "posix_fadvise"):
                from gbc.store.mapped_pages import libc_function

                self._start_writeback = libc_function(
                    "sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
        return self._start_writeback

    @property
    def active(self) -> bool:
        with self._lock:
            return self._resolve() is not None

    def written(self, fd: int, path: str, start: int, end: int) -> None:
        """Bytes ``start..end`` of ``path`` (open as ``fd``) were written."""
        with self._lock:
            if end <= start or self._resolve() is None:
                return
            if self._start_writeback(fd, start, end - start, _SYNC_FILE_RANGE_WRITE) != 0:
                self._start_writeback = None  # not on this file system: leave the page cache alone
                self._queue.clear()
                return
            self.total += end - start
            self._queue.append((path, start, end, self.total))
            while self._queue and self._queue[0][3] + self.lag <= self.total:
                self._drop(*self._queue.popleft()[:3])

    def _drop(self, path: str, start: int, end: int) -> None:
        try:  # by path: the shard may be closed already (the page cache belongs to the file)
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # moved or removed since: nothing to do
            return
        try:
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
            self.dropped += end - start
        except OSError:
            pass
        finally:
            os.close(fd)


#: The one ``DropBehind`` of this process (its lag counts the bytes of every shard written).
DROP_BEHIND = DropBehind()


class TarWriter:
    """A minimal writer of POSIX ustar archives of regular files (what WebDataset reads).

    ``tarfile`` builds each header through several layers of Python and dominates a
    text-only export; this writes the same 512-byte headers directly. Names must fit the
    100-byte name field (sample keys do).

    >>> tar = TarWriter(Path("00000.tar"))   # doctest: +SKIP
    >>> tar.add("000000000.txt", b"a caption"); tar.close()   # doctest: +SKIP
    """

    _BLOCK = 512
    #: Bytes gathered before they are written. Writes of about 128 KB: with 1 MB writes, text-only
    #: shards (whose graphs all take 32 KB) were written in 1 MB writes on 1 MB boundaries, for
    #: which the kernel of a 2-core VM spent 50-120 us per graph copying into the page cache,
    #: against 7-15 us with 128 KB writes (measured on 20,000-graph exports).
    _FLUSH_BYTES = 1 << 17
    #: Member sizes whose header size field (and its byte sum) is remembered: samples of
    #: one shard have a few hundred distinct text and metadata lengths.
    _SIZE_CACHE = 1 << 16
    #: Most checksum fields remembered (header byte sums stay within a few thousand values).
    _CHECKSUM_CACHE = 1 << 16

    def __init__(self, path: Path):
        self._fh = open(path, "wb", buffering=0)
        self._path = os.fspath(path)
        self._written = self._submitted = 0  # bytes written, and those handed to DROP_BEHIND
        self._parts: List[bytes] = []
        self._pending = 0
        template = bytearray(self._BLOCK)
        template[100:108] = b"0000444\0"  # mode r--r--r--
        template[108:116] = b"0000000\0"  # uid
        template[116:124] = b"0000000\0"  # gid
        template[136:148] = b"00000000000\0"  # mtime 0: reproducible shards
        template[148:156] = b"        "  # the checksum field counts as spaces while summing
        template[156:157] = b"0"  # regular file
        template[257:265] = b"ustar\x0000"
        self._template = bytes(template)
        # The checksum is the byte sum of the header: constant part + name + size.
        self._base_sum = sum(template)
        # Per member size: the header's size field with the constant bytes after it, their
        # byte sum, the padding to a whole block and the bytes taken in the archive.
        self._sizes: Dict[int, Tuple[bytes, int, bytes, int]] = {}
        # Per name length: the zero bytes after the name and the constant header fields.
        self._fillers = {n: self._template[n:124] for n in range(101)}
        # Per header byte sum: the checksum field (a few thousand distinct sums per shard).
        self._checksums: Dict[int, bytes] = {}

    def _size_entry(self, n: int) -> Tuple[bytes, int, bytes, int]:
        field = b"%011o\0" % n
        pad = -n % self._BLOCK
        entry = (field + self._template[136:148], sum(field), _ZEROS[:pad], n + pad + self._BLOCK)
        if n < self._SIZE_CACHE:
            self._sizes[n] = entry
        return entry

    def add(self, name: str, data: bytes) -> None:
        self.add_many(((name.encode("utf-8"), data),))

    def add_many(self, members: Iterable[Tuple[bytes, bytes]]) -> None:
        """Add ``(UTF-8 name, data)`` members in order."""
        members = list(members)
        self.add_samples([raw for raw, _ in members], ((b"", [data for _, data in members]),))

    def add_samples(self, keys: List[bytes], columns: Sequence[Tuple[bytes, Sequence[bytes]]]) -> None:
        """Add, for each UTF-8 ``keys[i]`` in order, a member ``keys[i] + extension`` holding
        ``datas[i]`` for each ``(extension, datas)`` of ``columns`` (a WebDataset sample's
        files). One call per graph: the header work per member is a few operations on cached
        pieces, and the key's byte sum is taken once per sample. The call's members are joined
        into one buffer (a few tens of KB for a graph's samples): ``writev`` then takes one
        buffer per graph instead of eight per member (each costs it a buffer lookup), and a
        call that fails (a name too long) adds nothing."""
        tail = self._template[156:]
        base = self._base_sum
        sizes = self._sizes
        fillers = self._fillers
        checksums = self._checksums
        parts: List[bytes] = []
        pending = self._pending
        named = [(ext, sum(ext), datas) for ext, datas in columns]
        for i, key in enumerate(keys):
            key_sum = base + sum(key)
            for ext, ext_sum, datas in named:
                data = datas[i]
                filler = fillers.get(len(key) + len(ext))
                if filler is None:
                    raise ValueError(f"tar member name too long: {(key + ext).decode('utf-8', 'replace')!r}")
                size, size_sum, pad, taken = sizes.get(len(data)) or self._size_entry(len(data))
                total = key_sum + ext_sum + size_sum
                checksum = checksums.get(total)
                if checksum is None:
                    checksum = b"%06o\0 " % total
                    if len(checksums) < self._CHECKSUM_CACHE:
                        checksums[total] = checksum
                parts += (key, ext, filler, size, checksum, tail, data, pad)
                pending += taken
        self._parts.append(b"".join(parts))
        self._pending = pending
        if pending >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        # The buffers go to the kernel as they are (writev): joining them too would copy every
        # byte once more.
        parts, fd = self._parts, self._fh.fileno()
        for start in range(0, len(parts), _IOV_MAX):
            chunk = parts[start:start + _IOV_MAX]
            written = os.writev(fd, chunk) if _WRITEV else 0
            if written < sum(map(len, chunk)):  # a short write (a signal): the rest in plain writes
                _write_all(fd, memoryview(b"".join(chunk))[written:])
        parts.clear()
        self._written += self._pending
        self._pending = 0
        if self._written - self._submitted >= DROP_BEHIND.chunk:
            self._submit()

    def _submit(self) -> None:
        DROP_BEHIND.written(self._fh.fileno(), self._path, self._submitted, self._written)
        self._submitted = self._written

    def close(self) -> None:
        self._flush()
        _write_all(self._fh.fileno(), memoryview(bytes(2 * self._BLOCK)))  # end-of-archive marker
        self._written += 2 * self._BLOCK
        self._submit()
        self._fh.close()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]
