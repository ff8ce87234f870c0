"""Keeping a process's resident memory flat while it walks or grows a big store.

LMDB reads through a shared, read-only memory map of ``data.mdb``. Every page a process
touches through that map stays in its resident set (``RssFile``) until the map is closed:
a run that commits graphs for hours (each commit reads the pages it copies on write), or an
export that reads a 20 GB store once, ends with the whole file counted as its RSS. Those
pages are clean page cache, but schedulers that police RSS (Slurm, cgroup-less batch
systems) see a process that grows by the size of its output.

``PageTrimmer`` counts the bytes a process has brought into the map (values read, pages
walked by a key-only scan, pages appended by its writes) and, every ``TRIM_BYTES``, tells
the kernel it no longer needs the mapped pages (``madvise(MADV_DONTNEED)`` over the mapping
of ``data.mdb``). The budget is also kept across stores: a process that walks 100 shards at
once (a ``MultiStore``, a merge) trims every store it touched as soon as all of them
together brought ``TRIM_BYTES`` into their maps, so its resident set does not grow with the
number of stores. For a shared
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
import weakref
from typing import Any, Dict, List, Optional, Tuple

#: Bytes brought into the map between two trims (about 2,000 graphs of a run: keeps RSS within a few % of its start).
TRIM_BYTES = 8 << 20
#: What one random lookup is counted as: it maps a leaf page (and overflow pages) plus the
#: neighbours the kernel maps around a fault (64 KB by default): counted by the ~2 KB of its
#: value, 10,000 random gets left 172 MB of a 228 MB store resident.
RANDOM_READ_BYTES = 64 << 10
#: What one status lookup is counted as (a page: status records are small and dense).
STATUS_READ_BYTES = 4 << 10
MADV_DONTNEED = 4

_libc_lock = threading.Lock()
#: Functions of the C library loaded so far (None: not there).
_libc_functions: Dict[str, Any] = {}
#: Every live trimmer of this process (the budget of TRIM_BYTES is shared by all stores).
_TRIMMERS: "weakref.WeakSet[PageTrimmer]" = weakref.WeakSet()
_POOL_LOCK = threading.Lock()
#: Bytes brought in by all trimmers since their last trim (the sum of their ``pending``).
_pool_pending = 0


def libc_function(name: str, argtypes: Tuple, restype: Any = ctypes.c_int) -> Optional[Any]:
    """The C library's function ``name`` with its types set, loaded once; None where the
    library or the function cannot be had."""
    with _libc_lock:
        if name not in _libc_functions:
            lib = _libc_functions.get("")  # the library itself (find_library runs ldconfig: once)
            try:
                if lib is None:
                    lib = _libc_functions[""] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                                                            use_errno=True)
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, restype
            except (OSError, AttributeError):
                fn = None
            _libc_functions[name] = fn
        return _libc_functions[name]


def _madvise():
    return libc_function("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))


def mapped_ranges(*data_files: str) -> List[Tuple[int, int]]:
    """``(start, end)`` of each mapping of the ``data_files`` in this process (from /proc/self/maps)."""
    targets = {os.path.realpath(f) for f in data_files}
    out = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].rstrip("\n") in targets:
                    start, end = parts[0].split("-")
                    out.append((int(start, 16), int(end, 16)))
    except OSError:
        return []
    return out


def drop_mapped_pages(data_file: str) -> int:
    """Drop this process's mapped pages of ``data_file``; the bytes of mappings advised (0 when
    not possible here)."""
    return drop_many_mapped_pages([data_file])


def drop_many_mapped_pages(data_files: List[str]) -> int:
    """``drop_mapped_pages`` for several files at once (one read of /proc/self/maps)."""
    if not data_files or not sys.platform.startswith("linux"):
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    done = 0
    for start, end in mapped_ranges(*data_files):
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            done += end - start
    return done


class PageTrimmer:
    """Counts bytes brought into one store's map by this process; trims every ``every`` bytes,
    or with the other stores' trimmers once all of them together reached ``TRIM_BYTES``."""

    def __init__(self, data_file: str, every: int = TRIM_BYTES):
        self.data_file = data_file
        self.every = every
        self.pending = 0
        self.trims = 0
        self._last_pgno: Optional[int] = None
        with _POOL_LOCK:
            _TRIMMERS.add(self)

    def add(self, nbytes: int) -> None:
        """``nbytes`` more were read through the map."""
        global _pool_pending
        with _POOL_LOCK:
            self.pending += nbytes
            _pool_pending += nbytes
            if self.pending >= self.every:
                due = [self]
                _pool_pending -= self.pending
            elif _pool_pending >= TRIM_BYTES:  # read here, not bound at import: tunable at run time
                due = [t for t in _TRIMMERS if t.pending > 0]
                _pool_pending = 0  # every live trimmer is trimmed (one gone uncounted is forgotten too)
            else:
                return
            for trimmer in due:
                trimmer.pending = 0
                trimmer.trims += 1
        drop_many_mapped_pages([t.data_file for t in due])

    def forget(self) -> None:
        """The store's map was closed: what it brought in no longer counts."""
        global _pool_pending
        with _POOL_LOCK:
            _pool_pending -= self.pending
            self.pending = 0
            _TRIMMERS.discard(self)

    def add_rows(self, rows: int, stat: dict) -> None:
        """``rows`` entries of a sub-database with LMDB statistics ``stat`` were walked without
        reading their values: count the pages they occupy on average. A cursor still visits
        every leaf page (which holds the values of up to ~2 KB), so a key-only scan of a
        store of GBC10M graphs touches about as much of the file as a full read."""
        entries = stat["entries"]
        if entries:
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            self.add(rows * pages * stat["psize"] // entries)

    def after_write(self, env) -> None:
        """A write transaction committed: count the pages it added to the file."""
        info = env.info()
        last = info["last_pgno"]
        previous, self._last_pgno = self._last_pgno, last
        if previous is not None and last > previous:
            self.add((last - previous) * env.stat()["psize"])
