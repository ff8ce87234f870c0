"""One annotation run: which images, which backends, and what the store remembers of it.

``annotate(inputs, store, config, runner=...)`` is what ``gbc annotate`` calls, and what a
script calls to do the same run::

    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.run import annotate

    config = AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})
    result = annotate(["photos/"], "photos.lmdb", config)
    print(result["done"], result["failed"], result["store"])

A run owns:

- input selection: the inputs are read as a stream (:mod:`gbc.inputs`), one part of them with
  ``shard=(i, n)``, at most ``limit`` images, skipping what the store already holds (resume), or
  only what failed there (``retry_failed``);
- the store's writer lock, held for the whole run (a second run into the same store is refused);
- the backends' lifetime: built from ``config.mllm`` / ``config.detector``, closed at the end;
- the run record: the summary returned is also saved as ``last_run`` in the store's meta, with
  the settings (``config``) and the image folders the keys are relative to (``image_roots``).

How the images are annotated is the runner's business, a strategy object with a
``run(plan) -> dict`` method: :class:`LocalRunner` (the default) runs the engine in this
process; ``gbc.distributed.ray_runner.RayRunner`` runs the same engine in a pool of Ray actors,
one store shard each. Both report through ``plan.events`` (:class:`RunEvents`): lines about the
run, warnings and progress, which a caller prints or ignores.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

from gbc.annotators.config import AnnotateConfig, ConfigError
from gbc.inputs import Columns, DownloadOptions, InputUnit

__all__ = ["LocalRunner", "RunEvents", "RunPlan", "RunProgress", "Runner", "annotate", "open_backends",
           "record_image_roots", "save_run_record"]


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: images finished so far and how busy the backends are."""

    done: int
    failed: int
    calls_per_s: float  # backend calls per second since the run started
    mllm_fill: float  # mean share of the MLLM batch size used by its calls (0..1)


class RunEvents:
    """What a run tells its caller as it goes. The defaults say nothing; subclass to print."""

    def note(self, line: str) -> None:
        """One line about the run: what is read, what was found, how it is spread."""

    def warning(self, line: str) -> None:
        """A run-level problem (a missing shard, a duplicate key); the run goes on."""

    def progress(self, progress: RunProgress) -> None:
        """Called as images finish (by the local runner)."""

    def progress_end(self) -> None:
        """No more progress will be reported (the engine stopped, normally or not)."""


@dataclass(frozen=True)
class RunPlan:
    """Everything a runner needs to know about the run (built by :func:`annotate`)."""

    units: Tuple[InputUnit, ...]
    output: str
    config: AnnotateConfig
    retry_failed: bool = False
    shard: Optional[Tuple[int, int]] = None
    limit: Optional[int] = None
    columns: Columns = field(default_factory=Columns)
    download: DownloadOptions = field(default_factory=DownloadOptions)
    events: RunEvents = field(default_factory=RunEvents)

    @property
    def image_folders(self) -> List[str]:
        """The folders and image files among the inputs (the roots their keys are relative to)."""
        return [u.location for u in self.units if u.kind == "images"]

    @property
    def shard_label(self) -> Optional[str]:
        return f"{self.shard[0]}/{self.shard[1]}" if self.shard else None


class Runner(Protocol):
    """How the images of a plan get annotated; returns the run's summary (see :func:`annotate`)."""

    def run(self, plan: RunPlan) -> Dict[str, Any]: ...


def annotate(inputs: Sequence[Union[str, os.PathLike, InputUnit]], store: Union[str, os.PathLike],
             config: Optional[AnnotateConfig], *, runner: Optional[Runner] = None, retry_failed: bool = False,
             shard: Optional[Tuple[int, int]] = None, limit: Optional[int] = None, columns: Optional[Columns] = None,
             download: Optional[DownloadOptions] = None, events: Optional[RunEvents] = None,
             command: str = "gbc.annotate") -> Dict[str, Any]:
    """Annotate ``inputs`` into the LMDB store at ``store`` with ``config``; return the run's summary.

    ``inputs``: folders, image files, WebDataset tar shards (paths, URLs, brace ranges),
    img2dataset folders and URL lists, as ``gbc annotate`` takes them (or resolved
    ``InputUnit``). ``config`` must name both backends (``mllm.spec``, ``detector.spec``).
    ``runner``: :class:`LocalRunner` when None. ``retry_failed`` annotates only what failed
    before; ``shard=(i, n)`` only part ``i`` of ``n``; ``limit`` at most that many images.
    ``columns`` and ``download`` apply to URL lists. ``command`` names the run in the store's
    writer lock (what a refused second run is told).

    The summary holds the engine's figures (``images``, ``done``, ``failed``, ``backends``,
    ``failures``...), what the inputs gave (``found``, ``skipped``, ``duplicates``, ``inputs``,
    ``warnings``), ``output``, the backend specs, ``finished_at`` and ``store`` (the store's
    done and failed totals); a Ray run adds its own figures (``workers``, ``shards``, ``merged``...).
    """
    from gbc.inputs import resolve
    from gbc.store.writer_lock import WriterLock

    config = config or AnnotateConfig()
    missing = [name for name in ("mllm", "detector") if not getattr(config, name).spec]
    if missing:
        raise ConfigError(f"no backend spec for {' and '.join(missing)}: set "
                          + " and ".join(f"{name}.spec" for name in missing)
                          + " (e.g. 'scripted' for a demo without models)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    if shard is not None:
        index, count = shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    units = tuple(resolve([os.fspath(i) for i in inputs]) if not all(isinstance(i, InputUnit) for i in inputs)
                  else inputs)
    plan = RunPlan(units=units, output=os.fspath(store), config=config, retry_failed=retry_failed, shard=shard,
                   limit=limit, columns=columns or Columns(), download=download or DownloadOptions(),
                   events=events or RunEvents())
    # One run per store (a second is refused, naming the first); dropped by the OS if we die.
    with WriterLock(plan.output, command=command):
        return (runner or LocalRunner()).run(plan)


# ---------------------------------------------------------------------------- shared by the runners
@contextmanager
def open_backends(config: AnnotateConfig) -> Iterator[Tuple[Any, Any]]:
    """The MLLM and detector backends that ``config`` names, closed on the way out.

    Building them loads no weights (first use does), so a bad spec or option fails here at once.
    """
    from gbc.annotators.backends.registry import create_detector, create_mllm

    backends = [create_mllm(config.mllm.spec, config.mllm.options)]
    try:
        backends.append(create_detector(config.detector.spec, config.detector.options))
        yield backends[0], backends[1]
    finally:
        for backend in backends:
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def record_image_roots(store, images: Sequence[str]) -> None:
    """Remember where the store's images come from, so that ``gbc export`` and ``gbc render``
    find them without --images-root: the absolute path of each folder given (keys are relative
    to it), or the folder of each file given (its key is the file name). Roots of earlier runs
    into the same store are kept."""
    from gbc.store.keys import printable

    roots = list((store.meta or {}).get("image_roots") or [])
    for given in images:
        path = os.path.abspath(given)
        root = path if os.path.isdir(path) else os.path.dirname(path)
        root = printable(root)  # a folder name that is not UTF-8: its escaped form (gbc.store.keys)
        if root not in roots:
            roots.append(root)
    store.update_meta({"image_roots": roots})


def run_record(result: Dict[str, Any], plan: RunPlan) -> Dict[str, Any]:
    """``result`` with what every run record names: the output, the backends, when it ended."""
    result.update({"output": plan.output, "mllm": plan.config.mllm.spec, "detector": plan.config.detector.spec,
                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return result


def save_run_record(store, result: Dict[str, Any], config: AnnotateConfig) -> None:
    """Keep ``result`` as the store's ``last_run``, with the settings it ran with."""
    store.update_meta({"last_run": result, "config": config.model_dump(mode="json")})


# ---------------------------------------------------------------------------- in this process
class LocalRunner:
    """The engine in this process, over a stream of the inputs, committing each image as it ends."""

    def run(self, plan: RunPlan) -> Dict[str, Any]:
        from gbc.annotators.backends.base import BackendUnavailable
        from gbc.annotators.engine import RecursiveAnnotator
        from gbc.inputs import InputStream, StoreResume
        from gbc.store.health import StoreFullError
        from gbc.store.shards import open_store

        events = plan.events
        committed = {"done": 0}  # images committed by this run, for a disk-full message
        with open_backends(plan.config) as (mllm, detector):
            store = open_store(plan.output, readonly=False)
            try:
                record_image_roots(store, plan.image_folders)
                todo = InputStream(plan.units, columns=plan.columns, download=plan.download,
                                   skip=StoreResume(store, plan.retry_failed), shard=plan.shard, limit=plan.limit,
                                   warn=events.warning)
                selected = todo.selected_units()
                kinds = sorted({u.kind for u in selected})
                events.note(f"reading {len(selected)} input(s) ({', '.join(kinds) or 'none'})"
                            + (f", shard {plan.shard_label} by {'file' if todo.by_file else 'image key'}"
                               if plan.shard else "")
                            + f"; images already in {plan.output} are skipped")
                annotator = RecursiveAnnotator(plan.config, mllm, detector)
                try:
                    summary = annotator.run(todo, store, on_progress=_progress_reporter(events, committed))
                except BackendUnavailable as exc:
                    # the run stops; keep a record of what it did before
                    partial = getattr(exc, "run_summary", None)
                    if partial is not None:
                        store.update_meta({"last_run": {**partial.to_dict(), "stopped": str(exc),
                                                        "output": plan.output}})
                    raise
                finally:
                    events.progress_end()
                result = summary.to_dict()
                for line in summary.warnings:  # duplicates caught by the engine rather than by the inputs
                    events.warning(line)
                counts = todo.counts
                # counted as the inputs were read (nothing listed them up front)
                events.note(f"{counts.found} images found, {counts.skipped} skipped (already in {plan.output}), "
                            f"{summary.images} annotated")
                result.update({"found": counts.found, "skipped": counts.skipped, "shard": plan.shard_label,
                               "duplicates": counts.duplicates + summary.duplicates, "inputs": counts.inputs,
                               "inputs_missing": counts.inputs_missing,
                               "warnings": counts.warnings + summary.warnings,
                               "downloads": getattr(todo, "download_stats", None)})
                save_run_record(store, run_record(result, plan), plan.config)
                result["store"] = {"done": store.count("done"), "failed": store.count("failed")}
            except StoreFullError as exc:  # committed images are intact: the same command resumes
                raise StoreFullError(f"no space left on {exc.mount}: {committed['done']} images committed, "
                                     "rerun to resume", exc.mount) from None
            finally:
                store.close()
        return result


def _progress_reporter(events: RunEvents, committed: Dict[str, int]):
    """The engine's ``on_progress`` callback, turned into :class:`RunProgress` events."""
    started = time.perf_counter()

    def on_progress(summary, engine) -> None:
        committed["done"] = summary.done
        workers = getattr(engine, "workers", {})
        calls = sum(w.stats.calls for w in workers.values())
        elapsed = max(time.perf_counter() - started, 1e-9)
        fill = workers["mllm"].stats.mean_fill if "mllm" in workers else 0.0
        events.progress(RunProgress(done=summary.done, failed=summary.failed, calls_per_s=calls / elapsed,
                                    mllm_fill=fill))

    return on_progress
