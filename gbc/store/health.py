"""Is a store's LMDB file sound enough to open? Checked before LMDB ever maps it.

LMDB kills the process on some damage (``SIGBUS`` on a page number past the end of the file,
an assertion on a zeroed page), which no ``try`` can catch. Two checks stand before it:

- ``check_file`` (always, microseconds): the two meta pages are parsed here, in Python:
  magic, version, page size, the page count against the file size, and the header of each
  tree's root page (its own page number and a branch or leaf flag). An empty or foreign file,
  a truncated file and zeroed last pages (where LMDB writes the newest root) fail here.
- ``verify_trees`` (``gbc`` commands; ``DEEP_CHECK``): every page of every tree is read in
  a child process (``treewalk.py``); a child killed by a signal means damage. The verdict is
  cached in ``STORE/gbc-check.json`` by file size, mtime, inode and transaction id, so a
  store that did not change is walked once (bench/bench_store_check.py measures the walk).

Both raise ``StoreCorruptError`` with one line naming the store and the damage.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from gbc.store.lmdb_env import StoreCorruptError, StoreError

#: ``gbc`` commands set this: stores are walked (once per change) before they are opened.
DEEP_CHECK = False
#: Name of the cached verdict inside a store directory.
CHECK_CACHE_NAME = "gbc-check.json"
#: Longest a tree walk may take before the store is reported as unreadable.
WALK_TIMEOUT_S = 3600.0

_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_META = struct.Struct("<IIQQ")  # magic, version, address, map size (after the 16-byte page header)
_DB = struct.Struct("<IHHQQQQQ")  # pad (page size in the free db), flags, depth, branch, leaf, overflow, entries, root
_TAIL = struct.Struct("<QQ")  # last page number, transaction id
_PAGE_HEAD = struct.Struct("<QHH")  # page number, pad, flags
_P_BRANCH, _P_LEAF, _P_META = 0x01, 0x02, 0x08
_P_INVALID = (1 << 64) - 1
_HEADER = 16


@dataclass
class MetaPage:
    txnid: int
    page_size: int
    last_page: int
    roots: Tuple[int, int]  # free-page tree, main tree


def _damaged(path: Path, what: str) -> StoreCorruptError:
    return StoreCorruptError(
        f"graph store {str(path)!r} is damaged: {what} (gbc salvage {path} -o NEW copies what can still be read)"
    )


def _parse_meta(data: bytes, offset: int, expected_pgno: int) -> Optional[MetaPage]:
    if len(data) < offset + _HEADER + _META.size + 2 * _DB.size + _TAIL.size:
        return None
    pgno, _, flags = _PAGE_HEAD.unpack_from(data, offset)
    magic, version, _, _ = _META.unpack_from(data, offset + _HEADER)
    if magic != _MAGIC or version != _DATA_VERSION or pgno != expected_pgno or not flags & _P_META:
        return None
    base = offset + _HEADER + _META.size
    free, main = _DB.unpack_from(data, base), _DB.unpack_from(data, base + _DB.size)
    last, txnid = _TAIL.unpack_from(data, base + 2 * _DB.size)
    return MetaPage(txnid, free[0], last, (free[7], main[7]))


def read_meta(data_file: os.PathLike) -> MetaPage:
    """The newest valid meta page of an LMDB data file (raises StoreCorruptError)."""
    path = Path(data_file)
    store = path.parent
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER + _META.size + 2 * _DB.size + _TAIL.size)
            first = _parse_meta(head, 0, 0)
            page_size = first.page_size if first else 4096
            if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
                raise _damaged(store, f"data.mdb records a page size of {page_size}")
            fh.seek(page_size)
            second = _parse_meta(fh.read(len(head)), 0, 1)
    except OSError as exc:
        raise StoreCorruptError(f"cannot read graph store {str(store)!r}: {exc.strerror or exc}") from None
    metas = [m for m in (first, second) if m is not None and m.page_size == page_size]
    if not metas:
        if len(head) == 0:
            # LMDB writes both meta pages at once when it creates the file: empty is a store
            # being created this instant (or one whose creator died before writing anything).
            raise StoreError(f"no graph store at {str(store)!r} yet: its data.mdb is empty (being created, or left empty)")
        raise _damaged(store, "data.mdb is not an LMDB file (no valid meta page)")
    return max(metas, key=lambda m: m.txnid)


def check_file(store_dir: os.PathLike) -> MetaPage:
    """Structural check of ``STORE/data.mdb`` without LMDB (see the module docstring)."""
    store = Path(store_dir)
    data_file = store / "data.mdb"
    meta = read_meta(data_file)
    size = data_file.stat().st_size
    needed = (meta.last_page + 1) * meta.page_size
    if size < needed:
        raise _damaged(store, f"data.mdb has {size} bytes but its pages need {needed} (truncated?)")
    with open(data_file, "rb") as fh:
        for name, root in zip(("free-page", "main"), meta.roots):
            if root == _P_INVALID:
                continue
            if root < 2 or root > meta.last_page:
                raise _damaged(store, f"the {name} tree's root is page {root}, outside pages 2..{meta.last_page}")
            fh.seek(root * meta.page_size)
            pgno, _, flags = _PAGE_HEAD.unpack(fh.read(_PAGE_HEAD.size))
            if pgno != root or not flags & (_P_BRANCH | _P_LEAF):
                raise _damaged(store, f"the {name} tree's root page {root} is overwritten (zeroed or foreign bytes)")
    return meta


def _signature(data_file: Path, meta: MetaPage) -> List[int]:
    st = data_file.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, meta.txnid]


def _cached_verdict(store: Path, signature: List[int]) -> Optional[Dict]:
    try:
        cached = json.loads((store / CHECK_CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("signature") == signature else None


def _save_verdict(store: Path, verdict: Dict) -> None:
    tmp = store / f".{CHECK_CACHE_NAME}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(verdict), encoding="utf-8")
        os.replace(tmp, store / CHECK_CACHE_NAME)
    except OSError:  # a read-only store: walked again next time
        try:
            tmp.unlink()
        except OSError:
            pass


def walk_in_child(store_dir: os.PathLike, timeout: float = WALK_TIMEOUT_S) -> Optional[str]:
    """Read every tree of the store in a child process; ``None`` when sound, else the damage."""
    script = Path(__file__).with_name("treewalk.py")
    try:
        proc = subprocess.run([sys.executable, str(script), os.fspath(store_dir)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"reading its pages took over {timeout:.0f} s"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"reading its pages crashed LMDB ({name})"
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"reading its pages failed ({tail})"
    if not report.get("ok"):
        return f"LMDB reports {report.get('error')}"
    return None


def verify_trees(store_dir: os.PathLike, meta: Optional[MetaPage] = None) -> None:
    """Walk every tree in a child process unless this very file was found sound before."""
    store = Path(store_dir)
    meta = meta or check_file(store)
    signature = _signature(store / "data.mdb", meta)
    verdict = _cached_verdict(store, signature)
    if verdict is None:
        damage = walk_in_child(store)
        verdict = {"signature": signature, "damage": damage}
        # The file may have moved on during the walk (a writer): cache only a verdict on it.
        if _signature(store / "data.mdb", check_file(store)) == signature:
            _save_verdict(store, verdict)
    if verdict.get("damage"):
        raise _damaged(store, verdict["damage"])


class StoreFullError(StoreError):
    """The file system of a store has no room left; ``mount`` names it."""

    def __init__(self, message: str, mount: str):
        super().__init__(message)
        self.mount = mount


#: Free bytes a new environment needs: LMDB sizes its lock file with ftruncate and then writes
#: it through a memory map, which dies by SIGBUS when the disk cannot back the pages.
ROOM_TO_CREATE = 128 << 10


def mount_point(path: os.PathLike) -> str:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def free_bytes(path: os.PathLike) -> int:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def check_room_to_create(store_dir: os.PathLike) -> None:
    """Refuse to let LMDB create files on a disk too full to hold them (see ROOM_TO_CREATE)."""
    free = free_bytes(store_dir)
    if free < ROOM_TO_CREATE:
        mount = mount_point(store_dir)
        raise StoreFullError(f"no space left on {mount}: {free} bytes free, graph store {str(store_dir)!r} "
                             "cannot be opened for writing", mount)


def write_failed(store_dir: os.PathLike, exc: BaseException) -> StoreError:
    """The error for a write LMDB refused: ``StoreFullError`` when the disk is full (LMDB reports
    ENOSPC, or EIO on some file systems with next to no room), else ``StoreError``."""
    text = str(exc)
    if "No space left" in text or free_bytes(store_dir) < ROOM_TO_CREATE:
        mount = mount_point(store_dir)
        return StoreFullError(f"no space left on {mount} (writing graph store {str(store_dir)!r}: {text})", mount)
    return StoreError(f"cannot write graph store {str(store_dir)!r}: {text}")


def check_before_open(store_dir: os.PathLike) -> None:
    """What ``GraphStore`` runs before LMDB maps an existing data file."""
    meta = check_file(store_dir)
    if DEEP_CHECK:
        verify_trees(store_dir, meta)
