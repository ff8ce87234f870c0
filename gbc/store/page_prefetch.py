"""Reading a table's pages from disk ahead of a scan that walks it in key order.

A store larger than the page cache is opened with readahead off (see ``GraphStore``): a
random lookup then reads the one page it needs. A walk of a whole table in key order pays
for that with one read from disk per page it meets, one at a time. Turning readahead on
would not do either: the pages of a small table (the status table, say) lie between those
of the graphs, and the graphs of a store written by a long run lie in the order they came,
not in key order, so the neighbours in the file are mostly pages the walk does not want.

``LeafPrefetcher`` asks the kernel instead for exactly the pages of one table, in key order,
a few megabytes ahead of the scan (``posix_fadvise(WILLNEED)``: the reads are queued
together and the scan then finds the pages in the page cache): its leaf pages, and with
``values=True`` the overflow pages that hold values too big for a leaf (most graphs),
found from those leaves once they are read. Pages already in the page cache are left out
(``mincore`` over a mapping of the file that is never read through), so a warm scan costs a
sample per window. The pages are found from the file itself: LMDB's meta page names the root
of the main table, whose record for the sub-database names the root of its B-tree, whose
branch pages list their children in key order; only branch pages (a few per thousand
leaves) and, for values, the leaves are read, as the scan advances.

The layout read here is LMDB's on-disk format (``MDB_meta``, ``MDB_db``, ``MDB_page`` and
``MDB_node`` of liblmdb 0.9, native byte order, 64-bit page numbers). Everything read is
checked against the bounds of the file and of its page; anything unexpected (another
layout, a page rewritten by a writer since, a damaged page) ends the prefetching quietly: it
is a hint, and the scan itself reads through LMDB as before.
"""

from __future__ import annotations

import ctypes
import operator
import os
import struct
from itertools import compress, repeat
from typing import Iterator, List, Optional, Tuple

from gbc.store.mapped_pages import libc_function

#: How far ahead of the scan leaf pages are requested.
PREFETCH_BYTES = 4 << 20
#: Tables with fewer leaf pages than this are not worth it (they are read in a few reads anyway).
MIN_LEAF_PAGES = 64

_PAGE_HEADER = struct.Struct("=QHHHH")  # pgno, pad, flags, lower, upper
_PAGE_HEADER_SIZE = 16
_META = struct.Struct("=IIQQ")  # magic, version, address, mapsize
_DB = struct.Struct("=IHHQQQQQ")  # pad (page size in the free table's slot), flags, depth, branch, leaf, overflow, entries, root
_META_TAIL = struct.Struct("=QQ")  # last page, txn id
_NODE = struct.Struct("=HHHH")  # lo, hi, flags, key size
_NODE_SIZE = 8
_MAGIC = 0xBEEFC0DE
_P_BRANCH, _P_LEAF, _P_LEAF2 = 0x01, 0x02, 0x20
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02
_MAX_DEPTH = 32
#: Most overflow pages asked for one value (a stored value is at most 256 MB, see gbc.store.codec).
_MAX_VALUE_PAGES = (256 << 20) // 4096 + 1


#: Leaf pages of a window checked first: when all are cached, the window is taken as cached.
SAMPLE_PAGES = 16
#: Largest stretch of the file whose residency is asked in one ``mincore`` call (pages).
MINCORE_SPAN = 1 << 16

_PROT_READ, _MAP_SHARED = 1, 1
#: ``mincore`` sets bit 0 of a page's byte when it is cached (the other bits are reserved).
_CACHED_BIT = bytes(b & 1 for b in range(256))


def _libc():
    """``(mmap, munmap, mincore)`` of the C library, or None where they cannot be had."""
    fns = (libc_function("mmap", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long), ctypes.c_void_p),
           libc_function("munmap", (ctypes.c_void_p, ctypes.c_size_t)),
           libc_function("mincore", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)))
    return None if None in fns else fns


class _Residency:
    """Which pages of a file are in the page cache, through a mapping never read from."""

    def __init__(self, fd: int, psize: int):
        self._fns = _libc()
        self._addr = None
        self._size = os.fstat(fd).st_size
        if self._fns is None or self._size <= 0 or psize % os.sysconf("SC_PAGE_SIZE"):
            return
        addr = self._fns[0](None, self._size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr is not None and addr != ctypes.c_void_p(-1).value:
            self._addr = addr
        self._psize = psize
        self._ratio = psize // os.sysconf("SC_PAGE_SIZE")

    def all_cached(self, pages: List[int]) -> bool:
        """Whether every one of ``pages`` is in the page cache (one call per page: for a sample)."""
        if self._addr is None:
            return False
        vec = (ctypes.c_ubyte * self._ratio)()
        length = self._psize
        for pgno in pages:
            if (pgno + 1) * length > self._size or self._fns[2](self._addr + pgno * length, length, vec) != 0:
                return False
            if 0 in bytes(vec).translate(_CACHED_BIT):
                return False
        return True

    def missing(self, pages: List[int]) -> List[int]:
        """The sorted ``pages`` that are not (wholly) in the page cache."""
        if self._addr is None or not pages:
            return pages
        first, last = pages[0], pages[-1]
        if last - first >= MINCORE_SPAN or (last + 1) * self._psize > self._size:
            # scattered far apart, or past the file as it was when mapped: split in two
            if len(pages) == 1:
                return pages if (last + 1) * self._psize > self._size else self.missing_in(pages, first, last)
            half = len(pages) // 2
            return self.missing(pages[:half]) + self.missing(pages[half:])
        return self.missing_in(pages, first, last)

    def missing_in(self, pages: List[int], first: int, last: int) -> List[int]:
        ratio = self._ratio
        count = (last - first + 1) * ratio
        vec = (ctypes.c_ubyte * count)()
        if self._fns[2](self._addr + first * self._psize, count * (self._psize // ratio), vec) != 0:
            return pages
        raw = bytes(vec).translate(_CACHED_BIT)
        if ratio == 1:  # the usual case: one byte per page
            return list(compress(pages, map(operator.not_, map(raw.__getitem__, map(operator.sub, pages, repeat(first))))))
        return [p for p in pages if raw[(p - first) * ratio:(p - first + 1) * ratio].count(0)]

    def close(self) -> None:
        if self._addr is not None:
            addr, self._addr = self._addr, None
            self._fns[1](addr, self._size)


class LayoutError(ValueError):
    """The file does not read as the LMDB layout this module knows."""


class _File:
    """Pages of an LMDB file read by number (``fd`` is set while the file is open)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.psize = 4096
        self.last_page = 0

    def __enter__(self) -> "_File":
        return self

    def __exit__(self, *exc) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def page(self, pgno: int) -> bytes:
        if pgno < 2 or pgno > self.last_page:
            raise LayoutError(f"page {pgno} is outside the file")
        data = os.pread(self.fd, self.psize, pgno * self.psize)
        if len(data) != self.psize:
            raise LayoutError(f"page {pgno} is short")
        got, _, _, _, _ = _PAGE_HEADER.unpack_from(data)
        if got != pgno:
            raise LayoutError(f"page {pgno} names itself {got}")
        return data


_META_BYTES = _PAGE_HEADER_SIZE + _META.size + 2 * _DB.size + _META_TAIL.size


def _meta(fd: int) -> Tuple[int, int, Tuple]:
    """``(page size, last page, main table record)`` of the newer of the two meta pages (the
    page size is kept in the free table's record of the first)."""
    first = os.pread(fd, _META_BYTES, 0)
    if len(first) < _META_BYTES:
        raise LayoutError("no meta page")
    psize = _DB.unpack_from(first, _PAGE_HEADER_SIZE + _META.size)[0]
    if psize < 512 or psize > 65536 or psize & (psize - 1):
        raise LayoutError(f"page size {psize}")
    best = None
    for data in (first, os.pread(fd, _META_BYTES, psize)):
        if len(data) < _META_BYTES or _META.unpack_from(data, _PAGE_HEADER_SIZE)[0] != _MAGIC:
            continue
        at = _PAGE_HEADER_SIZE + _META.size
        free_db, main_db = _DB.unpack_from(data, at), _DB.unpack_from(data, at + _DB.size)
        last_page, txnid = _META_TAIL.unpack_from(data, at + 2 * _DB.size)
        if free_db[0] == psize and (best is None or txnid > best[0]):
            best = (txnid, last_page, main_db)
    if best is None:
        raise LayoutError("no valid meta page")
    return psize, best[1], best[2]


def _node_offsets(page: bytes, psize: int) -> Tuple[int, Tuple[int, ...]]:
    """``(flags, offset of each node)`` of a branch or leaf page, every node inside the page."""
    _, _, flags, lower, upper = _PAGE_HEADER.unpack_from(page)
    if flags & _P_LEAF2 or lower < _PAGE_HEADER_SIZE or lower > upper or upper > psize or lower & 1:
        raise LayoutError("unexpected page layout")
    offsets = struct.unpack_from(f"={(lower - _PAGE_HEADER_SIZE) >> 1}H", page, _PAGE_HEADER_SIZE)
    if offsets and (min(offsets) < upper or max(offsets) + _NODE_SIZE > psize):
        raise LayoutError("node outside its page")
    return flags, offsets


def _nodes(page: bytes, psize: int) -> Iterator[Tuple[int, int, int, bytes, int]]:
    """``(lo, hi, flags, key, data offset)`` of each node of a branch or leaf page."""
    for offset in _node_offsets(page, psize)[1]:
        lo, hi, nflags, ksize = _NODE.unpack_from(page, offset)
        start = offset + _NODE_SIZE
        if start + ksize > psize:
            raise LayoutError("key outside its page")
        yield lo, hi, nflags, page[start:start + ksize], start + ksize


def _children(page: bytes, psize: int) -> List[int]:
    """Child page numbers of a branch page, in key order (the walk's inner loop: no key is read)."""
    offsets = _node_offsets(page, psize)[1]
    # Nodes start on even offsets, so a node's fields are words (an odd offset in a damaged
    # page gives a wrong page number, which page() or the bounds of the file catch).
    w = memoryview(page).cast("H")
    return [w[i] | (w[i + 1] << 16) | (w[i + 2] << 32) for i in [o >> 1 for o in offsets]]


def _flags(page: bytes) -> int:
    return _PAGE_HEADER.unpack_from(page)[2]


def _table_root(f: _File, main_root: int, name: bytes) -> Tuple[int, int, int, int]:
    """``(root, depth, leaf pages, entries)`` of the named sub-database."""
    pgno = main_root
    for _ in range(_MAX_DEPTH):
        page = f.page(pgno)
        flags = _flags(page)
        if flags & _P_BRANCH:
            nodes = list(_nodes(page, f.psize))
            # the first node's key is implicit (smaller than any); take the last one <= name
            chosen = nodes[0]
            for node in nodes[1:]:
                if node[3] <= name:
                    chosen = node
            lo, hi, nflags, _, _ = chosen
            pgno = lo | (hi << 16) | (nflags << 32)
            continue
        if not flags & _P_LEAF:
            raise LayoutError("main table page is neither branch nor leaf")
        for lo, hi, nflags, key, data_at in _nodes(page, f.psize):
            if key == name and nflags & _F_SUBDATA:
                if (lo | (hi << 16)) != _DB.size or data_at + _DB.size > f.psize:
                    raise LayoutError("sub-database record of an unknown size")
                _, _, depth, _, leaves, _, entries, root = _DB.unpack_from(page, data_at)
                return root, depth, leaves, entries
        raise LayoutError(f"no table {name!r}")
    raise LayoutError("main table too deep")


def _leaves(f: _File, root: int, depth: int) -> Iterator[List[int]]:
    """Leaf page numbers of a B-tree in key order, a lowest branch page's children at a time,
    reading the branch pages as they are needed."""
    if depth < 1 or depth > _MAX_DEPTH:
        raise LayoutError(f"depth {depth}")
    if depth == 1:
        yield [root]
        return
    stack: List[Tuple[List[int], int]] = []  # (children of a branch page, index of the next one)
    page = f.page(root)
    if not _flags(page) & _P_BRANCH:
        raise LayoutError("root of a deep tree is not a branch page")
    stack.append((_children(page, f.psize), 0))
    while stack:
        children, i = stack[-1]
        if i >= len(children):
            stack.pop()
            continue
        if len(stack) == depth - 1:  # children of the lowest branch level are leaves
            stack.pop()
            yield children
            continue
        stack[-1] = (children, i + 1)
        page = f.page(children[i])
        if not _flags(page) & _P_BRANCH:
            raise LayoutError("branch page expected")
        stack.append((_children(page, f.psize), 0))


def _sample(pages: List[int]) -> List[int]:
    return pages[::max(1, len(pages) // SAMPLE_PAGES)]


def _overflow(f: _File, leaves: List[int]) -> List[int]:
    """The overflow pages of the values on ``leaves`` (values too big for a leaf page are kept
    on pages of their own, named by the leaf's node). A page that cannot be read ends the list."""
    out: List[int] = []
    psize = f.psize
    try:
        for pgno in leaves:
            page = f.page(pgno)
            flags, offsets = _node_offsets(page, psize)
            if not flags & _P_LEAF:
                break
            w = memoryview(page).cast("H")
            for offset in offsets:
                i = offset >> 1
                if w[i + 2] & _F_BIGDATA:
                    size, at = w[i] | (w[i + 1] << 16), offset + _NODE_SIZE + w[i + 3]
                    first = struct.unpack_from("=Q", page, at)[0]
                    pages = min((_PAGE_HEADER_SIZE - 1 + size) // psize + 1, _MAX_VALUE_PAGES)  # a damaged size
                    out += range(first, min(first + pages, f.last_page + 1))
    except (OSError, struct.error, ValueError, IndexError):  # LayoutError is a ValueError
        pass
    return out


class LeafPrefetcher:
    """Requests the leaf pages of table ``name`` of the LMDB file ``path`` ahead of a scan (and
    with ``values`` the overflow pages of its values).

    Call ``advance(rows)`` as the scan moves on by ``rows`` entries (from the table's first
    key); pages up to ``PREFETCH_BYTES`` ahead of the estimated position are requested. Does
    nothing (and costs nothing more) where the layout cannot be read or the OS has no
    ``posix_fadvise``. The file is opened only while a window is requested (a view over
    hundreds of shards scans them all at once), and ``close()`` unmaps it.
    """

    def __init__(self, path: "os.PathLike[str] | str", name: bytes, ahead: int = PREFETCH_BYTES,
                 values: bool = False):
        self._path = os.fspath(path)
        self._leaves: Optional[Iterator[List[int]]] = None
        self._values = values
        self._rows = 0
        self._requested = 0  # leaves requested so far
        self._found: List[int] = []
        self._unread: List[int] = []  # with values: leaves asked for whose overflow pages are not yet
        self._residency: Optional[_Residency] = None
        #: Pages asked for (those found in the page cache are not).
        self.requested_pages = 0
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            with _File(self._open()) as f:
                f.psize, f.last_page, main_db = _meta(f.fd)
                root, depth, leaves, entries = _table_root(f, main_db[7], name)
                if leaves < MIN_LEAF_PAGES or entries <= 0:
                    return
                self._file = f
                self._ahead = max(1, ahead // f.psize)
                self._rows_per_leaf = entries / leaves
                self._leaves = _leaves(f, root, depth)
                self._residency = _Residency(f.fd, f.psize)
                self._request(f, self._ahead)
        except (OSError, struct.error, ValueError, IndexError):  # LayoutError is a ValueError
            self.close()

    def _open(self) -> int:
        fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            # Branch pages are read one by one: no readahead of their neighbours (graph pages).
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except OSError:
            pass
        return fd

    @property
    def active(self) -> bool:
        return self._leaves is not None or bool(self._unread)

    def advance(self, rows: int) -> None:
        if not self.active:
            return
        self._rows += rows
        position = int(self._rows / self._rows_per_leaf)
        if self._requested - position >= self._ahead // 2:
            return
        try:
            self._file.fd = self._open()
        except OSError:
            self.close()
            return
        with self._file:  # closed again after this window
            self._request(self._file, position + self._ahead - self._requested)

    def _next_leaves(self, count: int) -> List[int]:
        pages, self._found = self._found, []  # leaves found by the last walk but not asked for yet
        try:
            while len(pages) < count and self._leaves is not None:
                batch = next(self._leaves, None)
                if batch is None:
                    self._leaves = None  # the walk is over
                    break
                pages += batch
        except (OSError, struct.error, ValueError, IndexError):  # LayoutError is a ValueError
            self._leaves = None  # the pages found so far are still worth asking for
        pages, self._found = pages[:count], pages[count:]
        if self._found and self._leaves is None:
            self._leaves = iter(())  # only the pages found are left
        return pages

    def _request(self, f: "_File", count: int) -> None:
        pages = self._next_leaves(count)
        # Values on overflow pages: those of the leaves asked for one window ago (read now,
        # from the page cache) are asked for with this window's leaves.
        unread, self._unread = self._unread, (pages if self._values else [])
        if not pages and not unread:
            self.close()
            return
        self._requested += len(pages)
        residency = self._residency
        if residency is not None and residency.all_cached(_sample(pages) + _overflow(f, _sample(unread))):
            return  # a warm scan costs a sample per window
        wanted = pages + _overflow(f, unread) if unread else pages
        wanted = residency.missing(sorted(set(wanted))) if residency is not None else sorted(set(wanted))
        if not wanted:
            return
        psize = f.psize
        start = prev = wanted[0]
        try:
            for pgno in wanted[1:] + [-1]:
                if pgno != prev + 1:
                    os.posix_fadvise(f.fd, start * psize, (prev - start + 1) * psize, os.POSIX_FADV_WILLNEED)
                    self.requested_pages += prev - start + 1
                    start = pgno
                prev = pgno
        except OSError:
            self.close()

    def close(self) -> None:
        self._leaves = None
        if self._residency is not None:
            residency, self._residency = self._residency, None
            residency.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit ctypes may be gone: the mapping goes with the process
            pass
