"""The recursive annotation engine: many images in flight, batches formed across images.

``RecursiveAnnotator(config, mllm, detector).run(images, store)`` annotates every image and
commits each graph to ``store`` as soon as its image is finished (images finish out of order).
A loader thread decodes images ahead of the engine, one worker thread per backend forms
batches from the pending tasks of all in-flight images, and the engine thread turns answers
into follow-up tasks, assembles finished graphs and commits them. Every image ends ``done`` or
``failed`` (with a reason) in the store; the run itself only stops on store errors, on a
failing image list, and on a ``BackendUnavailable`` (a backend that cannot serve any request:
model missing, server unreachable, bad credentials). Then ``run`` stops its threads and raises:
images committed so far stay committed, images in flight get no status (a rerun resumes them).

Example (with the rule-based demo backends)::

    from gbc.annotators.backends.registry import create_mllm, create_detector
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import discover_images
    import gbc

    config = AnnotateConfig()
    annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
    with gbc.open_store("out.lmdb", readonly=False) as store:
        print(annotator.run(discover_images(["examples/images"]), store))
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from gbc.errors import GbcError
from gbc.annotators.backends.base import BackendUnavailable
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.images import ImageLoadError, ImageSource, keep_freed_memory
from gbc.annotators.job import DETECTION, ImageJob
from gbc.annotators.job_settings import JobSettings
from gbc.annotators.kinds import ImageFailure
from gbc.annotators.regions import PixelBudget, open_image
from gbc.annotators.scheduler import BackendWorker, BatchOutcome, RetryPolicy, Task
from gbc.store.keys import is_text, key_from_name, printable


@dataclass
class RunSummary:
    """What a run did; ``to_dict()`` is what ``gbc annotate`` prints and saves in the store meta."""

    images: int = 0
    done: int = 0
    failed: int = 0
    vertices: int = 0
    edges: int = 0
    elapsed_s: float = 0.0
    failures: Dict[str, int] = field(default_factory=dict)  # error type -> count
    duplicates: int = 0  # images whose key was already in flight (a duplicate key in the inputs): not annotated
    warnings: List[str] = field(default_factory=list)  # one line per duplicate key caught here (the first 50)
    backends: Dict[str, dict] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return (self.done + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def model_calls(self) -> int:
        return sum(b.get("calls", 0) for b in self.backends.values())

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "done": self.done,
            "failed": self.failed,
            "vertices": self.vertices,
            "edges": self.edges,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 3),
            "failures": dict(self.failures),
            "duplicates": self.duplicates,
            "backends": {k: dict(v) for k, v in self.backends.items()},
        }

    def __str__(self) -> str:
        parts = [f"{self.done} done, {self.failed} failed of {self.images} images in {self.elapsed_s:.1f} s "
                 f"({self.images_per_s:.2f} images/s)"]
        for name, b in self.backends.items():
            parts.append(f"{name}: {b.get('calls', 0)} calls, {b.get('requests', 0)} requests, "
                         f"mean batch fill {100 * b.get('mean_batch_fill', 0):.0f}%")
        if self.failures:
            parts.append("failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.failures.items())))
        return "; ".join(parts)


_END = object()


class RecursiveAnnotator:
    """Annotates images into GBC graphs with one MLLM backend and one detector backend."""

    def __init__(self, config: Optional[AnnotateConfig], mllm: Any, detector: Any):
        self.config = config or AnnotateConfig()
        self.mllm = mllm
        self.detector = detector
        self.settings = JobSettings.from_config(self.config)
        from gbc.annotators import prompts

        fingerprint = getattr(prompts, "prompts_fingerprint", None)
        self._prompts_fingerprint = fingerprint(self.settings.prompts) if fingerprint else None

    # ------------------------------------------------------------------ public
    def run(
        self,
        images: Iterable[Union[ImageSource, str]],
        store: Any,
        on_progress: Optional[Callable[[RunSummary, "RecursiveAnnotator"], None]] = None,
    ) -> RunSummary:
        """Annotate ``images`` (``ImageSource`` or paths) and commit each result to ``store``.

        Raises ``BackendUnavailable`` as soon as a backend reports that it cannot serve any
        request; the images finished before stay in ``store`` and the summary of the work done
        until then is attached to the exception as ``run_summary``.
        """
        cfg = self.config
        keep_freed_memory(cfg.limits.allocator_keep_mb)
        events: "queue.Queue" = queue.Queue()
        summary = RunSummary()
        start = time.perf_counter()
        mllm_worker = BackendWorker("mllm", self.mllm.generate, self._batch_size(cfg.mllm, self.mllm),
                                    _policy(cfg.mllm), events, concurrency=cfg.mllm.concurrency)
        det_worker = BackendWorker("detector", self.detector.detect, self._batch_size(cfg.detector, self.detector),
                                   _policy(cfg.detector), events, concurrency=cfg.detector.concurrency)
        self.workers = {"mllm": mllm_worker, "detector": det_worker}
        slots = threading.Semaphore(cfg.limits.images_in_flight)
        budget = self.pixel_budget = PixelBudget(cfg.limits.pixels_in_flight)
        stop_loading = threading.Event()
        loader = threading.Thread(target=self._load_images, args=(images, events, slots, budget, stop_loading),
                                  name="gbc-loader", daemon=True)
        jobs: Dict[str, ImageJob] = {}
        seq = 0
        loading = True
        mllm_worker.start()
        det_worker.start()
        loader.start()

        # Finished graphs wait here until the event that finished them is handled, and while
        # more answers are already queued; then they go to the store in one transaction (with
        # fast backends a commit per image costs more than the image). When nothing else is
        # waiting (slow backends) an image is committed as soon as its event is handled.
        pending: List[tuple] = []
        commit_many = getattr(store, "commit_images", None)

        def flush() -> None:
            if not pending:
                return
            batch = list(pending)
            pending.clear()
            if commit_many is not None and len(batch) > 1:
                commit_many(batch)  # items of images from tar shards and lists carry their origin
            else:
                for key, graph, provenance, *origin in batch:
                    store.commit_image(key, graph, provenance=provenance, **({"origin": origin[0]} if origin else {}))
            for _, graph, *_ in batch:
                summary.done += 1
                summary.vertices += graph.n_vertices
                summary.edges += graph.n_edges
            if on_progress is not None:
                summary.elapsed_s = time.perf_counter() - start
                on_progress(summary, self)

        def finish(job: ImageJob, error: Optional[BaseException] = None, attempts: int = 1) -> None:
            if job.finished:
                return
            job.finished = True
            jobs.pop(job.key, None)
            try:
                graph = None
                if error is None:
                    try:
                        graph = self._assemble(job)
                    except Exception as exc:  # a bug for this image only: recorded, the run goes on
                        error = exc
                # Where the image came from (input and position), when the input says: kept with
                # its status so that a later run tells a resumed image from a duplicate key.
                origin = {"origin": job.origin} if job.origin else {}
                if job.origin and _taken_elsewhere(store, job.key, job.origin):
                    # The same key from another input finished while this one was waiting or
                    # in flight: keep the first one's record (inputs check before, this closes the gap).
                    _duplicate(summary, job.key, job.origin, _recorded_origin(store, job.key))
                elif graph is not None:
                    # committed after the event that finished it (with the other images it
                    # finished), or now when a group is full
                    pending.append((job.key, graph, self._provenance(job)) + ((job.origin,) if job.origin else ()))
                    if len(pending) >= self.COMMIT_BATCH:
                        flush()
                    return
                else:
                    reason, etype = _describe(error)
                    store.mark_failed(job.key, reason, error_type=etype, attempts=attempts,
                                      provenance=self._provenance(job), **origin)
                    summary.failed += 1
                    summary.failures[etype] = summary.failures.get(etype, 0) + 1
            finally:
                job.release()
                budget.release(job.charged_pixels)
                slots.release()
            if on_progress is not None:
                summary.elapsed_s = time.perf_counter() - start
                on_progress(summary, self)

        def submit(tasks: List[Task]) -> None:
            if len(tasks) == 1:
                (det_worker if tasks[0].kind is DETECTION else mllm_worker).submit(tasks[0])
                return
            det_worker.submit_many([t for t in tasks if t.kind is DETECTION])
            mllm_worker.submit_many([t for t in tasks if t.kind is not DETECTION])

        def guarded(job: ImageJob, fn: Callable[[], Optional[List[Task]]]) -> None:
            if job.finished:
                return
            try:
                tasks = fn() or []
            except Exception as exc:  # parser/engine problem on this image: it fails, the run goes on
                finish(job, exc)
                return
            submit(tasks)
            if job.done:
                finish(job)

        try:
            while loading or jobs:
                if pending and events.empty():
                    flush()  # nothing else to handle now: commit before waiting
                event = events.get()
                if event is _END:
                    loading = False
                    continue
                if isinstance(event, _LoaderFailure):
                    raise event.error
                if isinstance(event, tuple):  # (source, image or ImageLoadError)
                    source, image = event
                    if source.key in jobs:
                        # Two inputs gave the same key while the first is in flight: one graph would
                        # replace the other, so the second is left out (and counted).
                        _duplicate(summary, source.key, source.origin, jobs[source.key].origin)
                        if not isinstance(image, BaseException):
                            budget.release(image.decode_pixels)
                        slots.release()
                        continue
                    summary.images += 1
                    if isinstance(image, BaseException):
                        job = _with_input(ImageJob(source.key, _Blank(), self.settings, seq), source)
                        jobs[source.key] = job
                        finish(job, image)
                        continue
                    job = _with_input(ImageJob(source.key, image, self.settings, seq), source)
                    job.charged_pixels = image.decode_pixels
                    job.source_path = printable(os.path.abspath(source.path))  # recorded in the provenance
                    seq += 1
                    jobs[source.key] = job
                    guarded(job, job.start)
                    continue
                self._handle_outcome(event, finish, guarded)
            flush()
        except BaseException as exc:
            try:
                flush()  # images finished before the error stay committed
            except Exception:  # noqa: BLE001 - the first error is the one reported
                pass
            if isinstance(exc, BackendUnavailable):
                # the images still in flight get no status: a rerun picks them up
                exc.run_summary = summary
            raise
        finally:
            stop_loading.set()
            for worker in (mllm_worker, det_worker):
                worker.stop()
            # wake a loader blocked on a slot or on the pixel budget so it sees stop_loading
            slots.release()
            budget.stop()
            if loader.is_alive():
                loader.join(self.LOADER_JOIN_S)
            summary.elapsed_s = time.perf_counter() - start
            summary.backends = {name: w.stats.to_dict() for name, w in self.workers.items()}
            for name, backend in (("mllm", self.mllm), ("detector", self.detector)):
                # a backend that retries requests itself (HTTP) reports those retries too
                request_stats = getattr(backend, "request_stats", None)
                if callable(request_stats):
                    summary.backends[name].update(request_stats())
        return summary

    #: Most finished images committed in one store transaction.
    COMMIT_BATCH = 32

    #: How long ``run`` waits, when it ends early, for the loader thread to notice (it may be
    #: decoding one image); it is a daemon thread, so a slow image list never blocks exit.
    LOADER_JOIN_S = 10.0

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _batch_size(section, backend) -> int:
        return section.batch_size or int(getattr(backend, "max_batch_size", 1) or 1)

    def _load_images(self, images, events, slots, budget, stop) -> None:
        # Only headers are read here (size, orientation, limits): pixels are decoded when a
        # backend first needs them. The decoded pixels an image may hold are reserved from the
        # pixel budget before it goes in flight, so a few huge images cannot exhaust memory.
        limits = self.config.limits
        try:
            for item in images:
                source = item if isinstance(item, ImageSource) else ImageSource(key=_name_of(item), path=str(item))
                if not is_text(source.key):  # undecodable file name bytes: no JSON, LMDB key or log takes them
                    source = ImageSource(key=key_from_name(source.key), path=source.path)
                slots.acquire()
                if stop.is_set():
                    return
                try:
                    if source.error is not None:  # the input could not deliver it (HTTP 404, no image member, ...)
                        raise ImageLoadError(source.error, source.error_type or "InputError")
                    image: Any = open_image(source.path if source.data is None else source.data,
                                            max_pixels=limits.max_image_pixels,
                                            max_decoded_side=limits.max_decoded_side)
                except ImageLoadError as exc:
                    image = exc
                except Exception as exc:  # an unexpected decoder failure is still this image's failure
                    image = ImageLoadError(f"{type(exc).__name__}: {exc}", type(exc).__name__)
                if not isinstance(image, BaseException) and not budget.acquire(image.decode_pixels):
                    return
                if stop.is_set():
                    return
                events.put((source, image))
        except BaseException as exc:  # the image list itself failed: the engine re-raises it
            events.put(_LoaderFailure(exc))
        finally:
            events.put(_END)

    def _handle_outcome(self, outcome: BatchOutcome, finish, guarded) -> None:
        for task, exc in outcome.build_errors:
            finish(task.job, exc)
        if outcome.error is not None:
            err = outcome.error
            if isinstance(err, BackendUnavailable):
                raise err  # ends the run; the images of this batch are not failed for it
            reason = (f"{outcome.worker} call failed after {outcome.attempts} attempt(s): "
                      f"{type(err).__name__}: {err}")
            for task in outcome.tasks:
                finish(task.job, _BackendFailure(reason, type(err).__name__), attempts=outcome.attempts)
            return
        for i, (task, result) in enumerate(zip(outcome.tasks, outcome.results or [])):
            job = task.job
            if i in outcome.errors:
                err = outcome.errors[i]
                reason = (f"{outcome.worker} call failed after {outcome.attempts} attempt(s) and alone once more: "
                          f"{type(err).__name__}: {err}")
                finish(job, _BackendFailure(reason, type(err).__name__), attempts=outcome.attempts + 1)
                continue
            if task.kind is DETECTION:
                guarded(job, lambda t=task, r=result: job.on_detections(t, r))
            elif not isinstance(result, str):
                finish(job, _BackendFailure(f"MLLM returned {type(result).__name__} instead of text", "BadAnswer"))
            else:
                guarded(job, lambda t=task, r=result: job.on_answer(t, r))

    def _assemble(self, job: ImageJob):
        from gbc.annotators.assembly import build_graph

        graph = build_graph(job, self.config.queries.mask_inside_threshold)
        problems = graph.validate()
        if problems:
            raise _InternalGraphError("assembled graph is invalid: " + "; ".join(problems[:5]))
        return graph

    def _provenance(self, job: ImageJob) -> dict:
        from gbc.annotators import prompts

        return {
            "mllm": self.config.mllm.spec or getattr(self.mllm, "name", type(self.mllm).__name__),
            "detector": self.config.detector.spec or getattr(self.detector, "name", type(self.detector).__name__),
            "prompt_version": getattr(prompts, "PROMPT_VERSION", None),
            "prompts_fingerprint": self._prompts_fingerprint,
            "config_fingerprint": self.config.fingerprint(),
            "seed": self.config.seed,
            "source_path": getattr(job, "source_path", None),
            "answers": list(job.answers),
            "detections": list(job.raw_detections),
            "notes": list(job.notes),
        }


class _BackendFailure(GbcError):
    def __init__(self, reason: str, error_type: str):
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class _LoaderFailure:
    def __init__(self, error: BaseException):
        self.error = error


class _InternalGraphError(GbcError):
    """The engine assembled a graph that fails validation: recorded as the image's failure."""


class _Blank:
    """Stand-in pixels for an image that failed to load (its job only records the failure)."""

    size = (0, 0)


def _recorded_origin(store: Any, key: str) -> Optional[str]:
    status = getattr(store, "status", None)
    record = status(key) if status is not None else None
    return getattr(record, "origin", None)


def _taken_elsewhere(store: Any, key: str, origin: str) -> bool:
    recorded = _recorded_origin(store, key)
    return bool(recorded) and recorded not in (origin, "imported")


def _duplicate(summary: RunSummary, key: str, origin: Optional[str], first: Optional[str]) -> None:
    summary.duplicates += 1
    if len(summary.warnings) < 50:
        summary.warnings.append(f"duplicate key {key!r}: at {origin or 'an input'}, already taken from "
                                f"{first or 'another input'}; left out")


def _with_input(job: ImageJob, source: ImageSource) -> ImageJob:
    """What the input says about the image beyond its pixels (URL, alt-text, origin)."""
    job.img_url, job.original_caption, job.origin = source.url, source.caption, source.origin
    return job


def _describe(error: BaseException) -> tuple:
    if isinstance(error, (ImageFailure, ImageLoadError, _BackendFailure)):
        return error.reason, error.error_type
    return f"{type(error).__name__}: {error}", type(error).__name__


def _name_of(path: Any) -> str:
    return os.path.basename(os.fspath(path) if isinstance(path, os.PathLike) else str(path))


def _policy(section) -> RetryPolicy:
    return RetryPolicy(timeout_s=section.timeout_s, retries=section.retries, backoff_s=section.backoff_s,
                       backoff_factor=section.backoff_factor)
