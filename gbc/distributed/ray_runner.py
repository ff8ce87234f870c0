"""The annotator on a Ray cluster: one annotator actor per worker, each writing its own shard.

How a run goes
--------------
1. The driver lists what is already finished: the output store and any shard left by an
   earlier run (``done`` images, and ``failed`` ones unless ``retry_failed``). Those images
   are not sent again, so a rerun of the same command resumes.
2. The remaining ``(key, path)`` items become a Ray dataset (``ray.data.from_items``) fed
   through ``map_batches`` to a pool of ``workers`` annotator actors. Each actor builds its
   backends once in ``__init__`` (weights load on first use, once per actor) and runs the
   batching engine (``RecursiveAnnotator``) on each batch of images it receives, committing
   every finished image to its own store shard ``OUT/shards/worker-NNN.lmdb``. The shard
   is opened lazily inside the actor's process (an LMDB environment never crosses a fork).
3. At the end the shards are merged into ``OUT`` and removed (``merge=True``), or left in
   place: ``gbc.open_store(OUT)`` then reads the output and its shards as one store.

Failures
--------
- An image that cannot be annotated is data: the engine commits it as ``failed``.
- A backend that cannot serve any request (``BackendUnavailable``: model not loadable,
  server unreachable, key rejected) stops the whole run at once: the pipeline is torn down
  (the exception is not retried and no actor is restarted for it), nothing is marked failed,
  the images committed so far stay in their shards (not merged; a rerun resumes), and the
  driver raises ``BackendUnavailable`` with the backend's own message.
- A worker process that dies (killed, out of memory, a crash in native code) is restarted
  by Ray (Ray Data's actor pools restart actors and resend their unfinished batches). Each
  engine run is journaled in the shard folder, so the next actor knows which images were in
  flight: commits are per image and atomic, images already committed are skipped, the
  others are redone one at a time, and an image that has killed its worker
  ``MAX_WORKER_DEATHS_PER_IMAGE`` times is committed as ``failed`` (``WorkerDied``)
  instead of killing workers forever. See :mod:`gbc.distributed.worker`.

Shard folders are claimed with an exclusive lock file (``worker-NNN.lock``), held for the
life of the actor process: a restarted actor takes the slot its dead predecessor left, so a
run produces about ``workers`` shards. On several machines ``OUT`` must be on a file system
that all nodes see and that supports ``flock`` and memory-mapped files (LMDB); otherwise run
one ``gbc annotate --shard i/N`` job per machine and ``gbc merge`` their stores.

Backends registered by user code (``@register_mllm`` in a module) work in the actors as
long as that module is importable on every node: the driver sends the module names of the
chosen backend classes and each actor imports them before building its backends.

Example (a local Ray instance is started when none is running and ``address`` is ``None``)::

    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.run import annotate
    from gbc.distributed.ray_runner import RayRunner

    config = AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})
    summary = annotate(["photos/"], "graphs.lmdb", config, runner=RayRunner(workers=2))
    print(summary["done"], summary["failed"])

Modules: this one (the driver: resume, the run's summary, merging; ``RayRunner``, the runner
strategy of :func:`gbc.annotators.run.annotate`), :mod:`gbc.distributed.ray_pipeline` (the actor
pool), :mod:`gbc.distributed.ray_session` (Ray itself, its output, resources),
:mod:`gbc.distributed.worker` (the actor), :mod:`gbc.distributed.ray_inputs` (tar shards and
URL lists read by Ray tasks).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from gbc.distributed.shadowing import check_no_shadowing
from gbc.distributed.worker import DEATHS_LOG, STOP_FILE

__all__ = ["RayRunner", "annotate_on_ray", "finished_keys", "shards_dir"]

#: Name of the folder of per-worker shards inside the output store folder.
SHARDS_FOLDER = "shards"


def shards_dir(out_path) -> Path:
    """Folder of the per-worker shards of the output store ``out_path``."""
    return Path(out_path) / SHARDS_FOLDER


# ---------------------------------------------------------------------------- resume
def _has_store(path: Path) -> bool:
    return (path / "data.mdb").exists()


def finished_keys(out_path, retry_failed: bool = False) -> Set[str]:
    """Keys that a run into ``out_path`` does not annotate again: ``done`` (and, unless
    ``retry_failed``, ``failed``) in the output store or in any of its shards."""
    from gbc.store.lmdb_store import GraphStore

    out = Path(out_path)
    stores = ([out] if _has_store(out) else []) + [p for p in sorted(shards_dir(out).glob("*.lmdb")) if _has_store(p)]
    finished: Set[str] = set()
    for path in stores:
        store = GraphStore(str(path), readonly=True)
        try:
            finished.update(store.keys(status="done"))
            if not retry_failed:
                finished.update(store.keys(status="failed"))
        finally:
            store.close()
    return finished


def _item(image) -> Tuple[str, str]:
    if isinstance(image, (tuple, list)) and len(image) == 2:
        return str(image[0]), os.fspath(image[1])
    key, path = getattr(image, "key", None), getattr(image, "path", None)
    if key is None or path is None:
        raise TypeError(f"an image must be a (key, path) pair or have .key and .path; got {image!r}")
    return str(key), os.fspath(path)


def _backend_modules(*classes) -> List[str]:
    """Modules that actors must import so that the chosen backends are registered there too."""
    modules = []
    for cls in classes:
        module = getattr(type(cls), "__module__", "")
        if module and module != "__main__" and module not in modules:
            modules.append(module)
    return modules


# ---------------------------------------------------------------------------- driver
def annotate_on_ray(
    images: Iterable[Any],
    out_path,
    *,
    config,
    address: Optional[str] = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: Optional[float] = None,
    retry_failed: bool = False,
    merge: bool = True,
    verbose: bool = False,
) -> Dict[str, Any]:
    """Annotate ``images`` ((key, path) pairs or ``ImageSource``, or ``RayInputs``) into the store
    ``out_path`` on Ray, with the backends that ``config`` names (``mllm`` and ``detector``).

    ``address``: ``None`` (or ``"local"``) starts a local Ray instance (unless one is already
    initialised in this process), ``"auto"`` joins the cluster of this machine, ``"ray://host:10001"`` or
    ``"host:6379"`` a remote one. ``workers`` annotator actors are started, each with
    ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs (default: 1 with GPUs, else a share
    of the cluster's CPUs, fractional on small machines). ``retry_failed`` annotates again the
    images that failed before. ``merge`` merges the shards into ``out_path`` at the end;
    otherwise they stay under ``out_path/shards`` and ``gbc.open_store(out_path)`` reads all.
    ``verbose`` lets Ray's logs and the actors' output through to this terminal.
    Raises ``PackageShadowedError`` before starting Ray when a folder named ``gbc`` in the
    current directory would hide the package from the workers.

    Returns a summary dict: ``images``, ``skipped`` (finished before), ``submitted``,
    ``done``, ``failed``, ``missing`` (submitted but without a record: 0 unless a bug),
    ``per_shard`` (images reported by each worker shard), ``workers``, ``shards`` (shard
    stores found at the end), ``merged``, ``merge`` (merge figures), ``store`` (done and
    failed totals of the output after merging), ``seconds``,
    ``ray_seconds`` (the Ray part), ``engine_seconds`` (time spent inside the engine, summed
    over batches and workers), ``startup_seconds`` (until the first batch started in an actor),
    ``images_per_s``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if gpus_per_worker is None or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")
    # Before Ray starts: its workers import from this directory, where a folder named gbc
    # would hide the package from every actor (a long RayTaskError each) instead of one line.
    check_no_shadowing()
    started = time.perf_counter()
    out = Path(out_path)
    shards = shards_dir(out)

    # Fail on a bad spec or config here, not in every actor; construction loads no weights.
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.run import open_backends

    with open_backends(config) as probes:
        RecursiveAnnotator(config, *probes)
        modules = _backend_modules(*probes)

    # Tar shards and URL lists (RayInputs) are read inside the cluster, as a stream; images
    # given one by one are listed here and checked against the finished keys.
    streamed = hasattr(images, "dataset") and hasattr(images, "counts")
    if streamed:
        todo: Any = images
        summary: Dict[str, Any] = {"images": 0, "skipped": 0, "submitted": 0, "done": 0, "failed": 0, "missing": 0,
                                   "workers": workers, "ray_seconds": 0.0}
    else:
        items: List[Tuple[str, str]] = []
        seen: Set[str] = set()
        for image in images:
            key, path = _item(image)
            if key in seen:
                raise ValueError(f"image key {key!r} appears twice in the input")
            seen.add(key)
            items.append((key, path))
        finished = finished_keys(out, retry_failed=retry_failed)
        todo = [{"key": k, "path": p} for k, p in items if k not in finished]
        summary = {
            "images": len(items), "skipped": len(items) - len(todo), "submitted": len(todo),
            "done": 0, "failed": 0, "missing": 0, "workers": workers, "ray_seconds": 0.0,
        }

    if todo:
        from gbc.distributed.ray_pipeline import run_pipeline

        ray_started = time.perf_counter()
        # The reason an earlier run stopped is no reason to stop this one.
        (shards / STOP_FILE).unlink(missing_ok=True)
        if retry_failed:
            # Images failed for killing their workers get a fresh count of worker deaths.
            (shards / DEATHS_LOG).unlink(missing_ok=True)
        run_id = uuid.uuid4().hex
        try:
            counts = run_pipeline(todo, shards, config, modules, address, workers, gpus_per_worker, cpus_per_worker,
                                  retry_failed, verbose, run_id)
        finally:
            seen_by_inputs = todo.counts(out, run_id) if streamed else None
        summary.update(counts)
        if seen_by_inputs is not None:
            summary["submitted"] = counts["done"] + counts["failed"] + counts["missing"]
            summary["images"] = seen_by_inputs.pop("found")
            summary.update(seen_by_inputs)
        summary["ray_seconds"] = round(time.perf_counter() - ray_started, 3)

    shard_paths = [p for p in sorted(shards.glob("*.lmdb")) if _has_store(p)]
    summary["shards"] = [str(p) for p in shard_paths]
    summary["merged"] = False
    if merge and shard_paths:
        from gbc.distributed.merge import merge_stores

        # Done images are never resubmitted, so two done graphs of one key can only be copies
        # of each other; "keep-last" makes a retried failure show its latest reason.
        merged = merge_stores(shard_paths, out, on_conflict="keep-last", remove_sources=True)
        shutil.rmtree(shards, ignore_errors=False)
        summary["merged"] = True
        summary["merge"] = {k: merged[k] for k in ("copied", "duplicates", "identical", "conflicts", "seconds")}
        summary["store"] = {"done": merged["done"], "failed": merged["failed"]}
    seconds = time.perf_counter() - started
    summary["seconds"] = round(seconds, 3)
    summary["images_per_s"] = round(summary["submitted"] / seconds, 3) if summary["submitted"] and seconds > 0 else 0.0
    return summary


# ---------------------------------------------------------------------------- the runner strategy
class RayRunner:
    """Runner for :func:`gbc.annotators.run.annotate`: the run on a Ray cluster.

    The arguments are those of :func:`annotate_on_ray`. Image folders are listed here (and
    checked against the output and its shards); tar shards and URL lists are read by Ray tasks
    inside the cluster (:class:`gbc.distributed.ray_inputs.RayInputs`). The run record is saved
    in the output store when the shards were merged into it.
    """

    def __init__(self, address: Optional[str] = None, workers: int = 1, gpus_per_worker: float = 0,
                 cpus_per_worker: Optional[float] = None, merge: bool = True, verbose: bool = False):
        self.address = None if address == "local" else address
        self.workers, self.gpus_per_worker, self.cpus_per_worker = workers, gpus_per_worker, cpus_per_worker
        self.merge, self.verbose = merge, verbose

    def run(self, plan) -> Dict[str, Any]:
        from gbc.annotators.run import record_image_roots, run_record, save_run_record

        if any(u.kind != "images" for u in plan.units):
            from gbc.distributed.ray_inputs import RayInputs

            # Tar shards and URL lists are read by Ray tasks, a stream per input, and checked
            # against the output there; the limit and the shard apply as in a local run.
            images: Any = RayInputs(plan.units, columns=plan.columns, download=plan.download, part=plan.shard,
                                    limit=plan.limit)
            check_no_shadowing()  # before anything is printed or started (annotate_on_ray checks it too)
            plan.events.note(f"reading {len(images.units)} input(s) on Ray; annotating with {self.workers} worker(s)")
            found = None
        else:
            check_no_shadowing()
            found, images = _listed_images(plan)
            plan.events.note(f"{found} images found, {len(images)} considered; annotating on Ray with "
                             f"{self.workers} worker(s)")
        result = annotate_on_ray(images, plan.output, config=plan.config, address=self.address, workers=self.workers,
                                 gpus_per_worker=self.gpus_per_worker, cpus_per_worker=self.cpus_per_worker,
                                 retry_failed=plan.retry_failed, merge=self.merge, verbose=self.verbose)
        result["found"] = result["images"] if found is None else found
        run_record(result, plan)
        if result["merged"]:
            from gbc.store.shards import open_store

            with open_store(plan.output, readonly=False) as store:
                save_run_record(store, result, plan.config)
                record_image_roots(store, plan.image_folders)
        return result


def _listed_images(plan) -> Tuple[int, list]:
    """How many images the folders given hold in this job's shard, and those to annotate: without
    those finished (as in a local run: only the failed ones with ``retry_failed``), at most ``limit``."""
    from gbc.annotators.images import discover_images

    sources = discover_images(plan.image_folders)
    if plan.shard:
        from gbc.distributed.sharding import shard_of

        sources = [s for s in sources if shard_of(s.key, plan.shard[1]) == plan.shard[0]]
    found = len(sources)
    if plan.retry_failed:
        # Only the images that failed before (in the output or its shards).
        failed = finished_keys(plan.output, retry_failed=False) - finished_keys(plan.output, retry_failed=True)
        sources = [s for s in sources if s.key in failed]
    if plan.limit is not None:
        finished = finished_keys(plan.output, retry_failed=plan.retry_failed)
        sources = [s for s in sources if s.key not in finished][:plan.limit]
    return found, sources
