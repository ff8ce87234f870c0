"""One annotating writer per store: an OS lock on a file inside the store directory.

LMDB serialises write transactions but not runs: two ``gbc annotate`` runs on one store would
each annotate every image and mix their graphs. The run holds ``flock`` on
``STORE/gbc-writer.lock`` for its whole length; the kernel drops the lock when the process
dies however it dies (kill -9 included), so a stale lock never blocks a rerun. The file
records who holds it (pid, host, start time, command) so a refused run can name the holder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from gbc.store.lmdb_env import StoreError

#: Name of the lock file inside a store directory.
LOCK_NAME = "gbc-writer.lock"


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


def _describe(holder: Dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not recorded its details yet)"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("started_iso"):
        parts.append(f"started {holder['started_iso']}")
    command = holder.get("command") or "a gbc run"
    return f"{command} ({', '.join(parts)})"


class WriterLock:
    """Exclusive writer lock of the store at ``store_path`` (created when missing).

    >>> with WriterLock("run.lmdb", command="gbc annotate"):  # doctest: +SKIP
    ...     ...  # annotate into run.lmdb
    """

    def __init__(self, store_path: Union[str, os.PathLike], command: str = "gbc annotate"):
        self.store_path = Path(store_path)
        self.path = self.store_path / LOCK_NAME
        self.command = command
        self._fd: Optional[int] = None
        self._created = False

    def holder(self) -> Dict[str, Any]:
        """What the lock file says about its last holder ({} when unreadable or empty)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WriterLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: no lock
            return self
        if self.store_path.exists() and not self.store_path.is_dir():
            raise StoreError(f"cannot create a graph store at {str(self.store_path)!r}: a file of that name exists")
        self._created = not self.store_path.exists()
        self.store_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusyError(
                f"graph store {str(self.store_path)!r} is being written by {_describe(self.holder())}; "
                "wait for it to finish or stop it, then run again (work already committed is kept)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        now = time.time()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now,
                  "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                  "command": self.command, "argv": sys.argv}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except OSError:  # a full disk: the lock holds all the same, unnamed
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: removing it would let a process that opened it a moment ago lock
        # a file no one else sees.
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._created and not (self.store_path / "data.mdb").exists():
                # the run stopped before it made a store: leave no empty store folder behind
                try:
                    self.path.unlink()
                    self.store_path.rmdir()
                except OSError:
                    pass
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
