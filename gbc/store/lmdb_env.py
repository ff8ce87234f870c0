"""LMDB environments shared per process, and what keeps them safe across ``fork()``.

LMDB forbids opening the same files twice in one process (py-lmdb refuses it), so every
``GraphStore`` on a path shares one environment through ``REGISTRY``. An environment must
not be used across ``fork()`` either; worse, a child that closes an inherited environment
releases the parent's reader slots (py-lmdb keeps one reset read transaction per
environment), after which a writer may reuse pages the parent still reads. So before a fork
this process waits until none of its transactions is open (``GATE``), closes its
environments and bumps ``GENERATION``; every ``GraphStore`` then reopens lazily, in the
parent and in the child.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List

from gbc.errors import GbcError
from gbc.store.mapped_pages import PageTrimmer

#: Sub-databases of a store.
SUBDBS = (b"graphs", b"status", b"meta", b"provenance", b"dicts")


class StoreError(GbcError, ValueError):
    """Any error about a graph store (bad path, read-only store, key too long, ...)."""


class StoreCorruptError(StoreError):
    """The store's files or one of its values are damaged, or were written by an unknown version."""


REGISTRY: Dict[str, "SharedEnv"] = {}
REGISTRY_LOCK = threading.Lock()
INHERITED: List[Any] = []  # environments still open at a fork (wait timed out): never closed in the child
REOPEN_READONLY: Dict[str, bool] = {}  # how each environment closed for a fork was opened
GENERATION = 0  # bumped each time environments are closed for a fork
#: Longest wait, in seconds, for open transactions to finish before a fork.
FORK_WAIT_S = 10.0


class TxnGate:
    """Counts open transactions (re-entrant per thread) so a fork can wait until there are none."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active = 0
        self.forking = False
        self.local = threading.local()

    def __enter__(self):
        depth = getattr(self.local, "depth", 0)
        with self.cond:
            while self.forking and depth == 0:
                self.cond.wait()
            self.active += 1
        self.local.depth = depth + 1

    def __exit__(self, *exc):
        self.local.depth -= 1
        with self.cond:
            self.active -= 1
            if self.active == 0:
                self.cond.notify_all()


GATE = TxnGate()


def _before_fork() -> None:
    global GENERATION
    if not REGISTRY:
        return
    with GATE.cond:
        GATE.forking = True
        idle = GATE.cond.wait_for(lambda: GATE.active == 0, timeout=FORK_WAIT_S)
    if not idle:
        return  # a transaction is still open: the child will leave these environments alone
    with REGISTRY_LOCK:
        for path, shared in REGISTRY.items():
            REOPEN_READONLY[path] = shared.readonly
            shared.env.close()
        REGISTRY.clear()
        GENERATION += 1


def _after_fork_in_parent() -> None:
    with GATE.cond:
        GATE.forking = False
        GATE.cond.notify_all()


def _after_fork_in_child() -> None:
    global GATE, REGISTRY_LOCK, GENERATION
    INHERITED.extend(shared.env for shared in REGISTRY.values())
    REGISTRY.clear()
    GATE = TxnGate()  # other threads of the parent do not exist here
    REGISTRY_LOCK = threading.Lock()
    GENERATION += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


class SharedEnv:
    def __init__(self, env, readonly: bool, pid: int, path: str = ""):
        self.env = env
        self.readonly = readonly
        self.pid = pid
        self.users = 0
        self.dbs: Dict[bytes, Any] = {}
        self.write_lock = threading.RLock()
        # keeps the resident memory of a long run or a full scan from growing with the store
        self.trimmer = PageTrimmer(os.path.join(path, "data.mdb"))


def acquire_env(path: str, readonly: bool, map_size: int, max_readers: int, readahead: bool = False) -> SharedEnv:
    """This process's environment of the store at ``path``, opened on first use (``readahead``
    then applies; a store already open in this process keeps how it was opened)."""
    import lmdb

    with REGISTRY_LOCK:
        readonly = readonly and REOPEN_READONLY.pop(path, True)
        shared = REGISTRY.get(path)
        if shared is not None and shared.pid == os.getpid():
            if shared.readonly and not readonly:
                raise StoreError(
                    f"graph store {path!r} is already open read-only in this process; close it before opening it for writing"
                )
            shared.users += 1
            return shared
        try:
            env = lmdb.open(
                path,
                readonly=readonly,
                create=not readonly,
                subdir=True,
                max_dbs=len(SUBDBS) + 2,
                map_size=map_size,
                max_readers=max_readers,
                readahead=readahead,
                meminit=False,
                lock=True,
            )
        except lmdb.InvalidError as exc:
            raise StoreCorruptError(f"graph store {path!r} is damaged: data.mdb is not an LMDB file ({exc})") from None
        except lmdb.VersionMismatchError as exc:
            raise StoreCorruptError(f"graph store {path!r} was written by an incompatible LMDB ({exc})") from None
        except lmdb.CorruptedError as exc:
            raise StoreCorruptError(f"graph store {path!r} is damaged ({exc})") from None
        except lmdb.Error as exc:
            raise StoreError(f"cannot open graph store {path!r}: {exc}") from None
        shared = SharedEnv(env, readonly, os.getpid(), path)
        shared.users = 1
        REGISTRY[path] = shared
        return shared


def release_env(path: str, shared: SharedEnv) -> None:
    with REGISTRY_LOCK:
        if shared.pid != os.getpid():
            return  # inherited through fork(): never close it here
        shared.users -= 1
        if shared.users <= 0:
            if REGISTRY.get(path) is shared:
                del REGISTRY[path]
            shared.trimmer.forget()
            shared.env.close()
