"""The Ray Data pipeline of a run: images (or the rows that input tasks read) through a pool of
annotator actors (:class:`gbc.distributed.worker.ShardAnnotator`), one store shard each.

:func:`run_pipeline` starts (or joins) Ray, streams the work through the pool, counts what the
actors report, and turns an actor's ``BackendUnavailable`` back into the backend's own
exception. The driver side of a run (resume, merging, the summary) is
:mod:`gbc.distributed.ray_runner`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Sequence

from gbc.distributed.ray_session import (
    ACTOR_CPU_SHARE,
    ACTOR_START_TIMEOUT_S,
    backend_unavailable,
    check_resources,
    init_ray,
    ray_output_aside,
)
from gbc.distributed.worker import read_stop

__all__ = ["DEFAULT_IMAGES_PER_BATCH", "MIN_IMAGES_PER_BATCH", "TASKS_IN_FLIGHT_PER_ACTOR", "run_pipeline"]

#: Images per ``map_batches`` batch when the config does not say: each batch is one engine
#: run inside an actor, so it should cover the engine's in-flight window (``limits.images_in_flight``).
DEFAULT_IMAGES_PER_BATCH = 64
#: Smallest batch: tiny batches pay Ray's per-task overhead and drain the engine's pipeline often.
MIN_IMAGES_PER_BATCH = 4
#: Batches queued at one actor: 2 lets the next batch arrive while one runs, without piling
#: work on the first actor that is ready (and redoing little if that actor dies).
TASKS_IN_FLIGHT_PER_ACTOR = 2


def images_per_batch(config) -> int:
    limits = getattr(config, "limits", None)
    window = getattr(limits, "images_in_flight", None)
    if isinstance(window, int) and window > 0:
        return max(MIN_IMAGES_PER_BATCH, window)
    return DEFAULT_IMAGES_PER_BATCH


def _progress(total, stream):
    from tqdm import tqdm

    return tqdm(total=total, desc="annotate (ray)", unit="img", file=stream,
                disable=not stream.isatty(), dynamic_ncols=True)


def run_pipeline(todo, shards: Path, config, modules: Sequence[str], address, workers: int, gpus_per_worker: float,
                 cpus_per_worker, retry_failed: bool, verbose: bool = False, run_id: str = "") -> Dict[str, Any]:
    """Annotate ``todo`` (a list of ``{"key", "path"}`` rows, or ``RayInputs``) into shards under
    ``shards``; returns the counts the actors reported (``done``, ``failed``, ``missing``,
    ``per_shard``, ``engine_seconds``, ``startup_seconds``)."""
    with ray_output_aside(verbose) as terminal:
        return _run_on_ray(todo, shards, config, modules, address, workers, gpus_per_worker, cpus_per_worker,
                           retry_failed, verbose, terminal, run_id or uuid.uuid4().hex)


def _run_on_ray(todo, shards: Path, config, modules, address, workers, gpus_per_worker, cpus_per_worker,
                retry_failed, verbose, terminal, run_id: str) -> Dict[str, Any]:
    import ray

    owns_ray = init_ray(address, verbose)
    try:
        if cpus_per_worker is None:
            if gpus_per_worker:
                cpus_per_worker = 1.0
            else:
                total = float(ray.cluster_resources().get("CPU", 1.0))
                cpus_per_worker = round(min(1.0, ACTOR_CPU_SHARE * total / workers), 3)
        remote = address not in (None, "", "local")
        warning = check_resources(ray.cluster_resources(), workers, gpus_per_worker, cpus_per_worker, remote=remote)
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
            return _stream(ray, todo, shards, config, modules, workers, gpus_per_worker, cpus_per_worker,
                           retry_failed, run_id, terminal)
        except Exception as exc:
            # Ray wraps the actor's exception (RayTaskError, UserCodeException), drops its
            # cause and adds remote tracebacks: the caller gets the backend's own exception
            # and message, recorded by the actor (or found in the chain, when Ray keeps it).
            unavailable = read_stop(shards, run_id) or backend_unavailable(exc)
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


def _stream(ray, todo, shards: Path, config, modules: List[str], workers, gpus_per_worker, cpus_per_worker,
            retry_failed, run_id, terminal) -> Dict[str, Any]:
    from gbc.distributed.worker import ShardAnnotator

    shards.mkdir(parents=True, exist_ok=True)
    if hasattr(todo, "dataset"):  # inputs read by Ray tasks: the number of images is not known ahead
        total = None
        batch_size = images_per_batch(config)
        dataset = todo.dataset(ray, shards.parent, retry_failed, run_id)
    else:
        total = len(todo)
        # Small runs are cut finer so that every worker gets a share.
        spread = workers * TASKS_IN_FLIGHT_PER_ACTOR * 2
        batch_size = min(images_per_batch(config), max(MIN_IMAGES_PER_BATCH, -(-len(todo) // spread)))
        dataset = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo), workers * 4)))
    annotated = dataset.map_batches(
        ShardAnnotator,
        fn_constructor_kwargs={"shards": str(shards), "config": config, "backend_modules": modules,
                               "retry_failed": retry_failed, "run_id": run_id},
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
