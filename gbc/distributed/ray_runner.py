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
    from gbc.annotators.images import discover_images
    from gbc.distributed.ray_runner import annotate_on_ray

    summary = annotate_on_ray(
        discover_images(["photos/"]), "graphs.lmdb", config=AnnotateConfig(),
        mllm_spec="scripted", mllm_options={}, detector_spec="scripted", detector_options={},
        workers=2,
    )
    print(summary["done"], summary["failed"])
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from gbc.distributed.shadowing import check_no_shadowing
from gbc.distributed.worker import DEATHS_LOG, STOP_FILE, read_stop

__all__ = ["annotate_on_ray", "finished_keys", "shards_dir"]

#: Images per ``map_batches`` batch when the config does not say: each batch is one engine
#: run inside an actor, so it should cover the engine's in-flight window (``limits.images_in_flight``).
DEFAULT_IMAGES_PER_BATCH = 64
#: Smallest batch: tiny batches pay Ray's per-task overhead and drain the engine's pipeline often.
MIN_IMAGES_PER_BATCH = 4
#: Batches queued at one actor: 2 lets the next batch arrive while one runs, without piling
#: work on the first actor that is ready (and redoing little if that actor dies).
TASKS_IN_FLIGHT_PER_ACTOR = 2
#: Share of the cluster's CPUs given to annotator actors when ``cpus_per_worker`` is not set
#: on a CPU-only run; the rest stays free for Ray Data's own tasks (a pool that takes every
#: CPU can stall the pipeline).
ACTOR_CPU_SHARE = 0.75
#: Seconds to wait for every annotator actor to start (on a cluster that must first scale up,
#: this includes getting the nodes) before the run fails with a timeout.
ACTOR_START_TIMEOUT_S = 600
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
def _images_per_batch(config) -> int:
    limits = getattr(config, "limits", None)
    window = getattr(limits, "images_in_flight", None)
    if isinstance(window, int) and window > 0:
        return max(MIN_IMAGES_PER_BATCH, window)
    return DEFAULT_IMAGES_PER_BATCH


def _init_ray(address: Optional[str], verbose: bool = False) -> bool:
    """Connect to (or start) Ray; return True when this call started it (and must shut it down).

    The actors' output reaches this terminal only when ``verbose`` (``log_to_driver``).
    """
    import ray

    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        # A private local instance: token auth only adds a file under ~/.ray here.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=verbose,
                 configure_logging=False)
    else:
        ray.init(address=address, configure_logging=False, log_to_driver=verbose)
    return True


@contextmanager
def _ray_output_aside(verbose: bool):
    """Yield the stream for our own progress bar; unless ``verbose``, everything else written to
    this process's stderr meanwhile (Ray's Python loggers, the INFO lines of Ray Data, the
    native lines of Ray's core such as "Actor ... max_restarts > 0", and the processes that a
    local Ray starts) goes to a log file instead of running through the bar. The file is
    removed after a successful run and named in a note of the exception otherwise."""
    if verbose:
        yield sys.stderr
        return
    sys.stderr.flush()
    fd, log_path = tempfile.mkstemp(prefix="gbc-ray-", suffix=".log")
    terminal_fd = os.dup(2)
    terminal = os.fdopen(os.dup(terminal_fd), "w", buffering=1)
    # Swap what file descriptor 2 points to: native code writes to it directly, and so does
    # Python's sys.stderr underneath (sys.stderr itself is left alone: logging handlers made
    # during the run keep a reference to it).
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield terminal
    except BaseException as exc:
        exc.add_note(f"Ray's output during the run: {log_path}")
        raise
    else:
        os.unlink(log_path)
    finally:
        sys.stderr.flush()
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)
        terminal.close()


def _progress(total: int, stream=None):
    from tqdm import tqdm

    stream = stream or sys.stderr
    return tqdm(total=total, desc="annotate (ray)", unit="img", file=stream,
                disable=not stream.isatty(), dynamic_ncols=True)


def annotate_on_ray(
    images: Iterable[Any],
    out_path,
    *,
    config,
    mllm_spec: str,
    mllm_options: Optional[Mapping[str, Any]],
    detector_spec: str,
    detector_options: Optional[Mapping[str, Any]],
    address: Optional[str] = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: Optional[float] = None,
    retry_failed: bool = False,
    merge: bool = True,
    verbose: bool = False,
) -> Dict[str, Any]:
    """Annotate ``images`` ((key, path) pairs or ``ImageSource``) into the store ``out_path`` on Ray.

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
    from gbc.annotators.backends import create_detector, create_mllm

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

    probes = (create_mllm(mllm_spec, dict(mllm_options or {})), create_detector(detector_spec, dict(detector_options or {})))
    try:
        RecursiveAnnotator(config, *probes)
    finally:
        for probe in probes:
            probe.close()
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
        ray_started = time.perf_counter()
        # The reason an earlier run stopped is no reason to stop this one.
        (shards / STOP_FILE).unlink(missing_ok=True)
        if retry_failed:
            # Images failed for killing their workers get a fresh count of worker deaths.
            (shards / DEATHS_LOG).unlink(missing_ok=True)
        run_id = uuid.uuid4().hex
        try:
            counts = _run_pipeline(todo, shards, config, mllm_spec, mllm_options, detector_spec, detector_options,
                                   modules, address, workers, gpus_per_worker, cpus_per_worker, retry_failed, verbose,
                                   run_id)
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


def _check_resources(resources: Mapping[str, float], workers: int, gpus: float, cpus: float,
                     remote: bool) -> Optional[str]:
    """A fixed pool of actors that the cluster cannot hold would wait forever: refuse it on a
    local instance; on a remote cluster (which may be autoscaling) return a warning."""
    problems = []
    for name, per_worker in (("GPU", gpus), ("CPU", cpus)):
        need, have = workers * (per_worker or 0), float(resources.get(name, 0))
        if need > have + 1e-9:
            problems.append(f"{workers} worker(s) x {per_worker:g} {name} need {need:g} {name}s; the Ray cluster has {have:g}")
    if not problems:
        return None
    message = "; ".join(problems)
    if not remote:
        raise ValueError(message + ": lower --workers, --gpus-per-worker or --cpus-per-worker")
    return f"{message}: the run fails unless the cluster grows within {ACTOR_START_TIMEOUT_S} s"


def _backend_unavailable(exc: BaseException):
    """The ``BackendUnavailable`` raised in an actor, found inside Ray's wrappers of ``exc``; else None."""
    from gbc.annotators.backends.base import BackendUnavailable

    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - ray is imported before this is called
        RayError = ()
    seen: Set[int] = set()
    todo: List[Any] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        # A RayTaskError may itself subclass the cause's class (as_instanceof_cause): skip it,
        # its message holds the remote traceback.
        if isinstance(current, BackendUnavailable) and not isinstance(current, RayError):
            try:
                fresh = type(current)(*current.args)
            except Exception:
                fresh = BackendUnavailable(str(current))
            return fresh
        todo.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    return None


def _run_pipeline(todo, shards: Path, config, mllm_spec, mllm_options, detector_spec, detector_options,
                  modules, address, workers, gpus_per_worker, cpus_per_worker, retry_failed,
                  verbose: bool = False, run_id: str = "") -> Dict[str, Any]:
    with _ray_output_aside(verbose) as terminal:
        return _run_on_ray(todo, shards, config, mllm_spec, mllm_options, detector_spec, detector_options, modules,
                           address, workers, gpus_per_worker, cpus_per_worker, retry_failed, verbose, terminal,
                           run_id or uuid.uuid4().hex)


def _run_on_ray(todo, shards: Path, config, mllm_spec, mllm_options, detector_spec, detector_options,
                modules, address, workers, gpus_per_worker, cpus_per_worker, retry_failed, verbose,
                terminal, run_id: str) -> Dict[str, Any]:
    import ray

    owns_ray = _init_ray(address, verbose)
    try:
        if cpus_per_worker is None:
            if gpus_per_worker:
                cpus_per_worker = 1.0
            else:
                total = float(ray.cluster_resources().get("CPU", 1.0))
                cpus_per_worker = round(min(1.0, ACTOR_CPU_SHARE * total / workers), 3)
        remote = address not in (None, "", "local")
        warning = _check_resources(ray.cluster_resources(), workers, gpus_per_worker, cpus_per_worker, remote=remote)
        if warning:
            print(f"Warning: {warning}", file=terminal)
        context = ray.data.DataContext.get_current()
        saved = (context.enable_progress_bars, context.wait_for_min_actors_s)
        context.enable_progress_bars = False  # our own bar counts images
        # Start every actor before the first batch: work spreads over all workers, and a pool
        # that a remote cluster cannot hold fails with a clear timeout instead of waiting forever.
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        unavailable = None
        try:
            return _stream(ray, todo, shards, config, mllm_spec, mllm_options, detector_spec, detector_options,
                           modules, workers, gpus_per_worker, cpus_per_worker, retry_failed, run_id, terminal)
        except Exception as exc:
            # Ray wraps the actor's exception (RayTaskError, UserCodeException), drops its
            # cause and adds remote tracebacks: the caller gets the backend's own exception
            # and message, recorded by the actor (or found in the chain, when Ray keeps it).
            unavailable = read_stop(shards, run_id) or _backend_unavailable(exc)
            if unavailable is None:
                raise
        finally:
            context.enable_progress_bars, context.wait_for_min_actors_s = saved
        # Raised outside the except block: as its __context__, Ray's exception would keep the
        # pipeline's frames, and with them its actor handles, alive. The failed pipeline's
        # objects form reference cycles: collect them now, so that its actors end and free
        # their CPUs and GPUs for the next run in this process.
        import gc

        gc.collect()
        # The actors were stopped by the driver, not killed by their images: their in-flight
        # files must not count as worker deaths in the next run (their stop record stays; it
        # names this run and is ignored by the next).
        for path in list(shards.glob("*.inflight")) + list(shards.glob("*.inflight.tmp")):
            path.unlink(missing_ok=True)
        raise unavailable
    finally:
        if owns_ray:
            ray.shutdown()


def _stream(ray, todo, shards: Path, config, mllm_spec, mllm_options, detector_spec, detector_options,
            modules, workers, gpus_per_worker, cpus_per_worker, retry_failed, run_id, terminal=None) -> Dict[str, Any]:
    from gbc.distributed.worker import ShardAnnotator

    shards.mkdir(parents=True, exist_ok=True)
    if hasattr(todo, "dataset"):  # inputs read by Ray tasks: the number of images is not known ahead
        total = None
        batch_size = _images_per_batch(config)
        dataset = todo.dataset(ray, shards.parent, retry_failed, run_id)
    else:
        total = len(todo)
        # Small runs are cut finer so that every worker gets a share.
        spread = workers * TASKS_IN_FLIGHT_PER_ACTOR * 2
        batch_size = min(_images_per_batch(config), max(MIN_IMAGES_PER_BATCH, -(-len(todo) // spread)))
        dataset = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo), workers * 4)))
    annotated = dataset.map_batches(
        ShardAnnotator,
        fn_constructor_kwargs={
            "shards": str(shards), "config": config, "mllm_spec": mllm_spec,
            "mllm_options": dict(mllm_options or {}), "detector_spec": detector_spec,
            "detector_options": dict(detector_options or {}), "backend_modules": modules,
            "retry_failed": retry_failed, "run_id": run_id,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_ACTOR),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )
    counts: Dict[str, Any] = {"done": 0, "failed": 0, "missing": 0}
    per_shard: Dict[str, int] = {}
    engine_seconds = 0.0
    started_at = time.time()
    first_batch_at = None
    bar = _progress(total, terminal)
    try:
        # One pass over the rows: the pipeline runs once and results stream in as batches finish.
        for row in annotated.iter_rows():
            engine_seconds += float(row["batch_seconds"])
            batch_started = float(row["batch_started"])
            first_batch_at = batch_started if first_batch_at is None else min(first_batch_at, batch_started)
            status = str(row["status"])
            if status in ("done", "failed"):
                counts[status] += 1
            else:
                counts["missing"] += 1
            shard = str(row["shard"])
            per_shard[shard] = per_shard.get(shard, 0) + 1
            bar.update(1)
    finally:
        bar.close()
    counts["per_shard"] = dict(sorted(per_shard.items()))
    counts["engine_seconds"] = round(engine_seconds, 3)
    # Actor start-up and scheduling: until the first batch started inside an actor (wall clocks
    # of one machine, or of synchronised nodes).
    counts["startup_seconds"] = round(max(0.0, (first_batch_at or started_at) - started_at), 3)
    return counts
