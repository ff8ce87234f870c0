"""The Ray session of a run: joining or starting Ray, keeping its output off the terminal,
checking that the cluster can hold the actor pool, and finding a backend's own error inside
Ray's wrappers. Nothing here imports Ray at module level.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, List, Mapping, Optional, Set

__all__ = ["ACTOR_CPU_SHARE", "ACTOR_START_TIMEOUT_S", "backend_unavailable", "check_resources", "init_ray",
           "ray_output_aside"]

#: Share of the cluster's CPUs given to annotator actors when ``cpus_per_worker`` is not set
#: on a CPU-only run; the rest stays free for Ray Data's own tasks (a pool that takes every
#: CPU can stall the pipeline).
ACTOR_CPU_SHARE = 0.75
#: Seconds to wait for every annotator actor to start (on a cluster that must first scale up,
#: this includes getting the nodes) before the run fails with a timeout.
ACTOR_START_TIMEOUT_S = 600


def init_ray(address: Optional[str], verbose: bool = False) -> bool:
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
def ray_output_aside(verbose: bool):
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


def check_resources(resources: Mapping[str, float], workers: int, gpus: float, cpus: float,
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


def backend_unavailable(exc: BaseException):
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
