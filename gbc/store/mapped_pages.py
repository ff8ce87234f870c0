"""Keeping a process's resident memory flat while it walks or grows a big store.

LMDB reads through a shared, read-only memory map of ``data.mdb``. Every page a process
touches through that map stays in its resident set (``RssFile``) until the map is closed:
a run that commits graphs for hours (each commit reads the pages it copies on write), or an
export that reads a 20 GB store once, ends with the whole file counted as its RSS. Those
pages are clean page cache, but schedulers that police RSS (Slurm, cgroup-less batch
systems) see a process that grows by the size of its output.

``PageTrimmer`` counts the bytes a process has brought into the map (values read, pages
appended by its writes) and, every ``TRIM_BYTES``, tells the kernel it no longer needs the
mapped pages (``madvise(MADV_DONTNEED)`` over the mapping of ``data.mdb``). For a shared
file mapping that only drops this process's page-table entries: the data stays in the page
cache and the file, and the next access maps it again (a minor fault), so readers in other
threads are unaffected. LMDB never writes through the map unless opened with ``writemap``,
which the store does not use. Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from typing import List, Optional, Tuple

#: Bytes brought into the map between two trims (about 2,000 graphs of a run: keeps RSS within a few % of its start).
TRIM_BYTES = 8 << 20
MADV_DONTNEED = 4

_libc = None
_libc_lock = threading.Lock()


def _madvise():
    global _libc
    with _libc_lock:
        if _libc is None:
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = lib.madvise
                fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                fn.restype = ctypes.c_int
                _libc = fn
            except (OSError, AttributeError):
                _libc = False
        return _libc or None


def mapped_ranges(data_file: str) -> List[Tuple[int, int]]:
    """``(start, end)`` of each mapping of ``data_file`` in this process (from /proc/self/maps)."""
    target = os.path.realpath(data_file)
    out = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].rstrip("\n") == target:
                    start, end = parts[0].split("-")
                    out.append((int(start, 16), int(end, 16)))
    except OSError:
        return []
    return out


def drop_mapped_pages(data_file: str) -> int:
    """Drop this process's mapped pages of ``data_file``; the bytes of mappings advised (0 when
    not possible here)."""
    if not sys.platform.startswith("linux"):
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    done = 0
    for start, end in mapped_ranges(data_file):
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            done += end - start
    return done


class PageTrimmer:
    """Counts bytes brought into one store's map by this process; trims every ``every`` bytes."""

    def __init__(self, data_file: str, every: int = TRIM_BYTES):
        self.data_file = data_file
        self.every = every
        self.pending = 0
        self.trims = 0
        self._last_pgno: Optional[int] = None
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        """``nbytes`` more were read through the map."""
        with self._lock:
            self.pending += nbytes
            if self.pending < self.every:
                return
            self.pending = 0
            self.trims += 1
        drop_mapped_pages(self.data_file)

    def after_write(self, env) -> None:
        """A write transaction committed: count the pages it added to the file."""
        info = env.info()
        last = info["last_pgno"]
        previous, self._last_pgno = self._last_pgno, last
        if previous is not None and last > previous:
            self.add((last - previous) * env.stat()["psize"])
