"""Merging store shards into one store (the read-only view over several stores is ``gbc.store.shards``).

A key's records across the sources are resolved as follows:

- ``done`` beats ``failed``: an image that failed in one shard and was annotated in another
  is ``done`` in the result (with the graph and provenance of the shard that annotated it);
- two ``failed`` records: the first one is kept with ``keep-first``, the last one otherwise
  (sources are usually listed oldest first, so the last failure is the latest attempt);
- two ``done`` records with identical graphs are one image, whatever the policy;
- two ``done`` records with *different* graphs are a conflict, resolved by ``on_conflict``:

  ``error`` (default)
      nothing is written and :class:`MergeConflictError` names the conflicting keys;
  ``keep-first`` / ``keep-last``
      the graph of the first / last source that holds the key wins;
  ``skip-identical``
      only unambiguous keys are merged: a conflicting key is copied from no shard (an output
      store that already holds it keeps its graph) and is listed in the summary.

Keys are resolved from their status records. Every graph counts as ``done``: graphs stored
by ``put``/``put_many`` have a ``done`` record of origin ``imported`` (kept by the merge), and
a graph of an older store without a record reads the same.

The output store may already exist: its content counts as the first source, and it is
never rewritten except where a shard brings a ``done`` graph for a key it holds as
``failed`` (or a ``keep-last`` winner).

Merging plans before it writes: a first read-only pass walks the sources' statuses in key
order (a k-way merge: memory grows only with the number of duplicated keys) and decides
every key held by more than one store; then all shards are bulk-copied together in key
order (``gbc.store.copying.copy_stores``: batched transactions that append to the output,
values re-compressed without parsing graphs), and the duplicated keys are rewritten as decided. So ``on_conflict="error"`` never leaves a
half-merged output, and a merge runs at LMDB speed rather than one commit per image.

Example::

    >>> from gbc.distributed.merge import merge_stores                  # doctest: +SKIP
    >>> summary = merge_stores(["a.lmdb", "b.lmdb"], "all.lmdb")        # doctest: +SKIP
    >>> summary["done"], summary["conflicts"]                           # doctest: +SKIP
    (2000, 0)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from gbc.errors import GbcError
from gbc.store.copying import copy_stores
from gbc.store.lmdb_base import decode_key
from gbc.store.shards import MultiStore, find_shards, grouped_flags, is_store, open_multi_store, status_name

__all__ = ["ON_CONFLICT", "MergeConflictError", "merge_stores", "find_shards", "MultiStore", "open_multi_store"]

#: Accepted values of ``on_conflict``.
ON_CONFLICT = ("error", "keep-first", "keep-last", "skip-identical")

#: How many conflicting keys an error message or a summary lists (the count is always exact).
MAX_KEYS_LISTED = 20


PathLike = Union[str, "os.PathLike[str]"]


class MergeConflictError(GbcError, ValueError):
    """Two sources hold different ``done`` graphs for the same key and no policy was chosen."""

    def __init__(self, keys: List[str], count: int):
        shown = ", ".join(repr(k) for k in keys[:MAX_KEYS_LISTED])
        more = f" (and {count - len(keys[:MAX_KEYS_LISTED])} more)" if count > MAX_KEYS_LISTED else ""
        super().__init__(
            f"{count} image(s) have different graphs in different sources: {shown}{more}; "
            "choose --on-conflict keep-first, keep-last or skip-identical"
        )
        self.keys = keys
        self.count = count


def _open(path: PathLike, readonly: bool):
    # The plain store: gbc.open_store would turn a store with shards into a view of them.
    # Sources are read whole, in key order: with readahead a page missing from the cache
    # brings its neighbours in with it, instead of one read from disk per 4 KB page.
    from gbc.store.lmdb_store import GraphStore

    return GraphStore(os.fspath(path), readonly=readonly, readahead=readonly)


def _same_graph(a, b) -> bool:
    # The lossless layout: exactly the fields that were read or set, whatever their origin.
    return a.to_dict() == b.to_dict()


class _Plan:
    """Decides, for one key, which source's record ends up in the output (``None``: keep the output's)."""

    def __init__(self, on_conflict: str):
        self.on_conflict = on_conflict

    def winner(self, records: List[Tuple[int, Any]], graph_of: Callable[[int], Any]) -> Tuple[Optional[int], bool, bool]:
        """Return (winning source index, is_conflict, had_identical_duplicates).

        ``records`` are in source order; index 0 may be the existing output store.
        """
        done = [index for index, record in records if status_name(record) == "done"]
        if not done:
            failed = [index for index, _ in records]
            return (failed[0] if self.on_conflict == "keep-first" else failed[-1]), False, False
        if len(done) == 1:
            return done[0], False, False
        first = graph_of(done[0])
        distinct = [done[0]]
        for index in done[1:]:
            if not _same_graph(first, graph_of(index)):
                distinct.append(index)
        if len(distinct) == 1:
            return done[0], False, True
        if self.on_conflict == "keep-first":
            return done[0], True, False
        if self.on_conflict == "keep-last":
            return done[-1], True, False
        return None, True, False  # error (raised by the caller) or skip-identical (nothing copied)


def merge_stores(
    shards: Iterable[PathLike],
    out: PathLike,
    on_conflict: str = "error",
    *,
    progress: Optional[Callable[[str, int], None]] = None,
    remove_sources: bool = False,
) -> Dict[str, Any]:
    """Merge the stores ``shards`` into the store ``out`` (created when missing).

    Copies graphs, statuses and provenance; ``on_conflict`` is one of :data:`ON_CONFLICT`
    (see the module docstring). ``progress(stage, n)`` is called with ``("plan", keys)`` as
    the planning pass advances and ``("copy", graphs)`` after each batch of graphs is copied.
    ``remove_sources`` deletes the shard folders after a successful merge. Returns a
    summary: ``sources``, ``keys`` (distinct keys in the shards), ``duplicates`` (keys held
    by more than one store), ``copied`` (keys whose record now comes from a shard),
    ``done``/``failed`` (in the output afterwards), ``identical`` (duplicates that agreed),
    ``conflicts`` and ``conflict_keys`` (at most :data:`MAX_KEYS_LISTED`), ``seconds``.
    """
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}; got {on_conflict!r}")
    out = Path(out)
    sources = [Path(s) for s in shards]
    if not sources:
        raise ValueError("no shard stores to merge")
    seen = set()
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"shard store not found: {source}")
        if not is_store(source):
            raise ValueError(f"not a graph store (no data.mdb): {source}")
        resolved = source.resolve()
        if resolved == out.resolve():
            raise ValueError(f"the output store is also listed as a shard: {source}")
        if resolved in seen:
            raise ValueError(f"shard listed twice: {source}")
        seen.add(resolved)
    started = time.perf_counter()

    # Pass 1 (read-only): decide every key held by more than one store, and find conflicts,
    # so that "error" refuses before writing anything.
    plan = _plan_pass(sources, out if is_store(out) else None, on_conflict, progress)
    if plan.conflicts and on_conflict == "error":
        raise MergeConflictError(plan.conflicts[:MAX_KEYS_LISTED], len(plan.conflicts))

    # Pass 2: bulk copy (the store re-compresses values without parsing graphs; keys already
    # in the output are kept), then pass 3 rewrites the few duplicated keys as decided.
    opened = []
    target = None
    try:
        for source in sources:
            opened.append(_open(source, readonly=True))
        target = _open(out, readonly=False)
        # all shards at once in key order: the output is written by appending (see copy_stores)
        copy_stores(target, opened,
                    progress=None if progress is None else (lambda graphs: progress("copy", graphs)))
        for key, (winner, out_had_key) in sorted(plan.fixups.items()):
            if winner is not None and winner > 0:
                source = opened[winner - 1]
                target.delete(key)
                _copy(source, target, key, source.status(key))
            elif not out_had_key:
                target.delete(key)  # skip-identical: no shard's version is kept
            # else the output's own record wins: the copy kept it whole
        # Where the images came from (see gbc annotate): every store's folders, kept once each.
        roots = list((target.meta or {}).get("image_roots") or [])
        for store in opened:
            roots += [r for r in (store.meta or {}).get("image_roots") or [] if r not in roots]
        target.update_meta({
            "merged_from": [str(s) for s in sources],
            "merge": {"on_conflict": on_conflict, "conflicts": len(plan.conflicts), "time": time.time()},
            **({"image_roots": roots} if roots else {}),
        })
        done = target.count("done")
        failed = target.count("failed")
    finally:
        if target is not None:
            target.close()
        for store in opened:
            store.close()
    if remove_sources:
        import shutil

        for source in sources:
            shutil.rmtree(source)
    kept_or_left = sum(1 for winner, _ in plan.fixups.values() if winner is None or winner == 0)
    return {
        "sources": [str(s) for s in sources],
        "out": str(out),
        "keys": plan.keys,
        "duplicates": len(plan.fixups),
        "copied": plan.keys - kept_or_left,
        "done": done,
        "failed": failed,
        "identical": plan.identical,
        "conflicts": len(plan.conflicts),
        "conflict_keys": plan.conflicts[:MAX_KEYS_LISTED],
        "on_conflict": on_conflict,
        "seconds": round(time.perf_counter() - started, 3),
    }


class _MergePlan:
    def __init__(self):
        self.keys = 0
        self.identical = 0
        self.conflicts: List[str] = []
        #: key -> (winning source index, 0 = the output, None = nobody; whether the output had the key)
        self.fixups: Dict[str, Tuple[Optional[int], bool]] = {}


def _plan_pass(sources: List[Path], out: Optional[Path], on_conflict: str,
               progress: Optional[Callable[[str, int], None]]) -> _MergePlan:
    decide = _Plan(on_conflict)
    plan = _MergePlan()
    stores = []
    target = None
    try:
        target = _open(out, readonly=True) if out is not None else None
        for source in sources:
            stores.append(_open(source, readonly=True))
        labelled = [(i + 1, store, str(path)) for i, (store, path) in enumerate(zip(stores, sources))]
        pending = 0
        for raw, flags in grouped_flags(labelled):
            # a status name is all a plan needs of a record: none is parsed
            key, records = decode_key(raw), [(index, "done" if done else "failed") for index, done in flags]
            plan.keys += 1
            pending += 1
            if progress is not None and pending >= 1000:
                progress("plan", pending)
                pending = 0
            existing = target.status(key) if target is not None else None
            candidates = ([(0, existing)] if existing is not None else []) + records
            if len(candidates) < 2:
                continue

            def graph_of(index, _key=key):
                return target[_key] if index == 0 else stores[index - 1][_key]

            winner, is_conflict, is_identical = decide.winner(candidates, graph_of)
            if is_conflict:
                plan.conflicts.append(key)
            elif is_identical:
                plan.identical += 1
            plan.fixups[key] = (winner, existing is not None)
        if progress is not None and pending:
            progress("plan", pending)
        return plan
    finally:
        for store in stores:
            store.close()
        if target is not None:
            target.close()


def _write_record(target, key: str, record, graph, provenance) -> None:
    if status_name(record) == "done" and getattr(record, "origin", None) == "imported":
        target.put(key, graph, provenance=provenance)
    elif status_name(record) == "done":
        target.commit_image(key, graph, provenance=provenance, attempts=getattr(record, "attempts", 1) or 1,
                            origin=getattr(record, "origin", None))
    else:
        target.mark_failed(
            key,
            getattr(record, "reason", "") or "",
            error_type=getattr(record, "error_type", None),
            attempts=getattr(record, "attempts", 1) or 1,
            provenance=provenance,
            origin=getattr(record, "origin", None),  # where the image came from, for later resumes
        )


def _copy(source, target, key: str, record) -> None:
    graph = source[key] if status_name(record) == "done" else None
    _write_record(target, key, record, graph, source.get_provenance(key))
