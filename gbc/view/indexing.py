"""Keeping a source's catalog current while the server runs.

``CatalogManager.catalog()`` answers with the newest readable catalog: the complete one, else the
one being built (a graph file's list and search work while its first build grows). It starts a
build, in a separate process, when there is no catalog, when its layout is old, or when the
source has changed since it was built (checked at most every ``CHECK_INTERVAL`` seconds).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from gbc.view.catalog import CATALOG_VERSION, Catalog, build_catalog, read_meta

#: Seconds between two checks of whether the source has changed.
CHECK_INTERVAL = 2.0


#: Niceness of the index builder: the page's requests come first.
BUILDER_NICENESS = 10


def _build_in_child(kind: str, paths: List[str], target: str, plot: bool) -> None:
    try:
        build_catalog(kind, paths, target, plot=plot)
    except BaseException as exc:  # reported to the server through a file beside the catalog
        Path(target + ".error").write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise SystemExit(1)


class CatalogManager:
    """The catalog of one source. ``background=False`` builds in the calling thread (tests)."""

    def __init__(self, source, path: Path, background: bool = True, plot: bool = True):
        self.source = source
        self.path = Path(path)
        self.building_path = self.path.with_name(self.path.name + ".building")
        self.error_path = Path(str(self.path) + ".error")
        self.background = background
        self.plot = plot
        self._lock = threading.Lock()
        self._process: Optional[multiprocessing.process.BaseProcess] = None
        self._checked = 0.0
        self._current_version: Optional[str] = None
        self.error: Optional[str] = None

    # ------------------------------------------------------------------ state
    def _building(self) -> bool:
        if self._process is None:
            return False
        if self._process.is_alive():
            return True
        code = self._process.exitcode
        self._process.join()
        self._process = None
        if code != 0:
            detail = self.error_path.read_text(encoding="utf-8") if self.error_path.is_file() else f"exit code {code}"
            self.error = f"building the search index failed: {detail}"
        return False

    def refresh(self, force: bool = False) -> None:
        """Start a build when the catalog is missing or stale (cheap when called often)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < CHECK_INTERVAL:
                return
            self._checked = now
            if self._building():
                return
            version = self.source.version()
            meta = read_meta(self.path)
            fresh = (meta is not None and meta.get("complete") == 1 and meta.get("catalog_version") == CATALOG_VERSION
                     and meta.get("source_version") == version)
            if fresh:
                self.error = None
                return
            if self.error is not None and self._current_version == version:
                return  # this version already failed to build; do not loop
            self._current_version = version
            self.error = None
            self.error_path.unlink(missing_ok=True)
            args = (self.source.kind, [str(p) for p in self.source.paths], str(self.path), self.plot)
            if not self.background:
                try:
                    build_catalog(*args[:3], plot=self.plot)
                except Exception as exc:
                    self.error = f"building the search index failed: {type(exc).__name__}: {exc}"
                return
            ctx = multiprocessing.get_context("spawn")
            self._process = ctx.Process(target=_build_in_child, args=args, daemon=True, name="gbc-view-index")
            self._process.start()
            try:  # set from here at once: the child's own start-up (imports) is already background work
                os.setpriority(os.PRIO_PROCESS, self._process.pid, BUILDER_NICENESS)
            except (OSError, AttributeError):
                pass

    def catalog(self) -> Optional[Catalog]:
        """The complete catalog (possibly stale while a newer one builds), else the growing one."""
        self.refresh()
        if self.path.is_file():
            return Catalog(self.path)
        if self.building_path.is_file() and read_meta(self.building_path) is not None:
            return Catalog(self.building_path)
        return None

    def complete(self) -> Optional[Catalog]:
        """The last complete catalog, without waiting for one being built (None when there is none)."""
        self.refresh()
        return Catalog(self.path) if self.path.is_file() else None

    def state(self) -> Dict[str, Any]:
        """What the page shows about the index: ready / building (how far) / refreshing / failed."""
        self.refresh()
        with self._lock:
            # a builder that already moved its file into place is only exiting
            building = self._building() and self.building_path.exists()
        out: Dict[str, Any] = {"state": "missing", "error": self.error}
        if self.path.is_file():
            meta = read_meta(self.path) or {}
            out.update(state="refreshing" if building else "ready", indexed=meta.get("indexed"),
                       total=meta.get("total"), failed=meta.get("failed"), seconds=meta.get("seconds"))
        if building or not self.path.is_file():
            growing = read_meta(self.building_path) if self.building_path.is_file() else None
            if growing is not None:
                if not self.path.is_file():
                    out["state"] = "building"
                out["progress"] = {"indexed": growing.get("indexed"), "total": growing.get("total")}
        if self.error:
            out["state"] = "failed" if not self.path.is_file() else out["state"]
        return out

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the catalog is complete and current (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.refresh(force=True)
            with self._lock:
                building = self._building()
            if not building and self.path.is_file() and self.error is None:
                meta = read_meta(self.path) or {}
                if meta.get("source_version") == self.source.version():
                    return True
            if self.error is not None:
                return False
            time.sleep(0.05)
        return False

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.terminate()
            process.join(5)
