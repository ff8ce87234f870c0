"""``gbc annotate``: annotate image folders into an LMDB graph store (resumable)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Tuple

import click

from gbc.cli.common import handle_errors, progress, register_user_error


def _settings_epilog() -> str:
    from gbc.annotators.config import describe_settings

    lines = ["\b", "Every setting (YAML --config keys, or --set NAME=VALUE) and its default:"]
    for name, (default, desc) in describe_settings().items():
        shown = json.dumps(default) if not isinstance(default, str) else default
        lines.append(f"  {name} = {shown}" + (f"  # {desc}" if desc else ""))
    lines += [
        "",
        "\b",
        "Backends are chosen by spec: --mllm transformers:<model>, --mllm openai:<url>#<model>,",
        "--detector grounding-dino:<model>, --detector owlv2:<model>, replay:<graphs file>.",
        "For a demo without any model: --mllm scripted --detector scripted.",
    ]
    return "\n".join(lines)


def _parse_pairs(pairs: Tuple[str, ...], what: str) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=what)
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[name.strip()] = value
    return out


class _EpilogCommand(click.Command):
    """Builds the (long) settings list only when --help is shown."""

    def format_epilog(self, ctx, formatter):
        self.epilog = _settings_epilog()
        super().format_epilog(ctx, formatter)


def _default_specs(config) -> dict:
    """The default models for the backends not given: LLaVA-1.6 (Mistral-7B) on CUDA, a small
    LLaVA-OneVision on CPU, Grounding DINO tiny for detection."""
    try:
        from gbc.annotators.backends.hf_detectors import default_detector_spec
        from gbc.annotators.backends.hf_mllm import default_mllm_spec

        overrides = {}
        if not config.mllm.spec:
            overrides["mllm.spec"] = default_mllm_spec(config.mllm.options.get("device"))
        if not config.detector.spec:
            overrides["detector.spec"] = default_detector_spec()
    except ImportError as exc:
        raise click.UsageError(
            f"no --mllm/--detector given, and the default model backends need torch and transformers "
            f"({exc.name} is missing): pip install 'gbc[models]', or pass --mllm SPEC --detector SPEC "
            "(for a demo without models: --mllm scripted --detector scripted)"
        ) from None
    for name, spec in overrides.items():
        click.echo(f"{name.split('.')[0]}: {spec} (default)", err=True)
    return overrides


def _check_default_models(config) -> None:
    """Without network, say in seconds (before torch is even imported) that a default model is
    neither cached nor downloadable, instead of letting the hub client retry for minutes."""
    from gbc.annotators.backends import hf_detectors, hf_mllm, hub
    from gbc.annotators.backends.base import BackendUnavailable

    try:
        import huggingface_hub  # noqa: F401  (without it, the models extra is missing: reported below)
    except ImportError:
        return
    needed = []  # (model to name, models any of which will do)
    if not config.mllm.spec:
        device = str(config.mllm.options.get("device") or "auto")
        cuda = device.startswith("cuda") or (device == "auto" and os.path.exists("/proc/driver/nvidia/version"))
        either = [hf_mllm.DEFAULT_CUDA_MLLM, hf_mllm.DEFAULT_CPU_MLLM] if device == "auto" else []
        needed.append((hf_mllm.DEFAULT_CUDA_MLLM if cuda else hf_mllm.DEFAULT_CPU_MLLM, either))
    if not config.detector.spec:
        needed.append((hf_detectors.DEFAULT_DETECTOR, []))
    missing = [name for name, either in needed if not any(hub.is_cached(m) for m in either or [name])]
    if not missing:
        return
    reason = hub.hub_unreachable_reason()
    if reason is None:
        return  # downloadable
    fetch = " and ".join(f"`hf download {name}`" for name in missing)
    raise BackendUnavailable(
        f"no --mllm/--detector given, and the default model{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(m) for m in missing)} {'are' if len(missing) > 1 else 'is'} not in the Hugging Face cache "
        f"and the hub at {hub.hub_endpoint()} cannot be reached ({reason}): fetch "
        f"{'them' if len(missing) > 1 else 'it'} first with {fetch} (then run with HF_HUB_OFFLINE=1 if offline), "
        "or pass --mllm SPEC --detector SPEC (a demo without models: --mllm scripted --detector scripted)")


@click.command(cls=_EpilogCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="LMDB store to write (created if needed; resumed if it exists).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML file of settings (see the list below).")
@click.option("--mllm", "mllm_spec", help="MLLM backend spec (default: LLaVA-1.6 Mistral-7B on CUDA, LLaVA-OneVision 0.5B on CPU).")
@click.option("--detector", "detector_spec", help="Detector backend spec (default: grounding-dino:IDEA-Research/grounding-dino-tiny).")
@click.option("--mllm-option", multiple=True, metavar="K=V", help="MLLM backend option (repeatable).")
@click.option("--detector-option", multiple=True, metavar="K=V", help="Detector backend option (repeatable).")
@click.option("--max-depth", type=int, help="Deepest entity level (limits.max_depth; default 4).")
@click.option("--max-vertices", type=int, help="Vertex budget per graph (limits.max_vertices_per_image; default 64).")
@click.option("--mllm-batch-size", type=int, help="Largest MLLM batch (mllm.batch_size; default: the backend's).")
@click.option("--detector-batch-size", type=int, help="Largest detector batch (detector.batch_size; default: the backend's).")
@click.option("--images-in-flight", type=int, help="Images annotated at once (limits.images_in_flight; default 64).")
@click.option("--max-image-side", type=int, help="Longest side of images and crops sent to models (limits.max_image_side; default 1024).")
@click.option("--min-crop-side", type=int, help="Tiny crops are scaled up to this shortest side (limits.min_crop_side; default 128).")
@click.option("--crop-margin", type=float, help="Context around entity crops, share of the box size (limits.crop_margin; default 0.05).")
@click.option("--retries", type=int, help="Retries of a failed backend call (mllm/detector.retries; default 2).")
@click.option("--timeout", "timeout_s", type=float, help="Per-call timeout in seconds (mllm/detector.timeout_s; default 600).")
@click.option("--no-entity", is_flag=True, help="Image query only (queries.include_entity=false).")
@click.option("--no-composition", is_flag=True, help="No composition queries (queries.include_composition=false).")
@click.option("--no-relation", is_flag=True, help="No relation queries (queries.include_relation=false).")
@click.option("--seed", type=int, help="Seed (default 0): same inputs, settings and seed give the same graphs.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Any setting by its dotted name (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Run again only the images that failed in the store.")
@click.option("--shard", metavar="I/N", help="Annotate only shard I of N (0-based, stable hash of the image key).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run on Ray: alone, a local Ray instance; 'auto', the cluster of this machine; or a cluster "
                   "ADDRESS (host:6379, ray://host:10001). One annotator actor per worker, each writing its own shard.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: annotator actors (on GPU nodes, one per GPU).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0, show_default=True,
              help="With --ray: GPUs per actor (1: one actor per GPU; 0.5: two actors share a GPU).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --ray: CPUs per actor (default: 1 with GPUs, else a share of the cluster's CPUs).")
@click.option("--no-merge", is_flag=True,
              help="With --ray: leave the per-worker shards in OUTPUT/shards (read as one store; gbc merge later).")
@click.option("--limit", type=int, help="Annotate at most N images (after skipping finished ones).")
@click.option("--url-col", default="url", show_default=True, help="URL lists: the column of image URLs.")
@click.option("--key-col", help="URL lists: the column of image keys (default: LIST-STEM/ROW).")
@click.option("--caption-col", help="URL lists: the column of original captions.")
@click.option("--download-concurrency", type=click.IntRange(min=1), default=16, show_default=True,
              help="URL lists: downloads at once.")
@click.option("--download-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="URL lists: seconds per download attempt.")
@click.option("--download-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="URL lists: retries of a timeout, connection error, HTTP 429 or 5xx (with backoff).")
@click.option("--max-download-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="URL lists: larger images fail as too large.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--progress/--no-progress", "show_progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("-v", "--verbose", is_flag=True,
              help="Let the logs of Ray (with --ray) and the model hub client's retry warnings through to the terminal.")
@handle_errors
def annotate(images, output, config_path, mllm_spec, detector_spec, mllm_option, detector_option, max_depth,
             max_vertices, mllm_batch_size, detector_batch_size, images_in_flight, max_image_side, min_crop_side,
             crop_margin, retries, timeout_s, no_entity, no_composition, no_relation, seed, sets, retry_failed,
             shard, limit, as_json, show_progress, ray_address=None, workers=1, gpus_per_worker=0,
             cpus_per_worker=None, no_merge=False, verbose=False, url_col="url", key_col=None, caption_col=None,
             download_concurrency=16, download_timeout=10.0, download_retries=2, max_download_mb=20.0):
    """Annotate IMAGES into GBC graphs in the store OUTPUT.

    IMAGES are folders (searched recursively) and image files, WebDataset tar shards (paths or
    URLs, with brace ranges like shards/{00000..00099}.tar), img2dataset output folders, and URL
    lists (.parquet, .csv, .tsv, .jsonl, .txt), mixed freely. They are read as the run goes:
    tar samples and list rows are checked against OUTPUT one by one, and URLs are downloaded
    just ahead of the engine. A missing or truncated shard is a warning; the run goes on.

    The run resumes by default: images already done or failed in OUTPUT are skipped, and
    each image is committed as soon as it is finished, so a killed run loses nothing that
    was committed. Every image ends `done` or `failed` with a reason. A backend that cannot
    work at all (model not downloadable, server unreachable, key rejected) stops the run with
    one error instead; nothing is marked failed for it, and a rerun resumes.

    \b
    Example:
      gbc annotate photos/ -o photos.lmdb --mllm transformers:llava-hf/llava-v1.6-mistral-7b-hf \\
          --detector grounding-dino:IDEA-Research/grounding-dino-tiny --max-depth 3
    """
    from gbc.annotators.backends.base import BackendError, BackendUnavailable
    from gbc.annotators.config import AnnotateConfig, ConfigError

    register_user_error(ConfigError)
    register_user_error(BackendError)
    _register_store_errors()
    if verbose:
        from gbc.annotators.backends.hub import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"

    config = AnnotateConfig.from_yaml(config_path) if config_path else AnnotateConfig()
    overrides: Dict[str, Any] = {
        "mllm.spec": mllm_spec,
        "detector.spec": detector_spec,
        "limits.max_depth": max_depth,
        "limits.max_vertices_per_image": max_vertices,
        "mllm.batch_size": mllm_batch_size,
        "detector.batch_size": detector_batch_size,
        "limits.images_in_flight": images_in_flight,
        "limits.max_image_side": max_image_side,
        "limits.min_crop_side": min_crop_side,
        "limits.crop_margin": crop_margin,
        "mllm.retries": retries,
        "detector.retries": retries,
        "mllm.timeout_s": timeout_s,
        "detector.timeout_s": timeout_s,
        "queries.include_entity": False if no_entity else None,
        "queries.include_composition": False if no_composition else None,
        "queries.include_relation": False if no_relation else None,
        "seed": seed,
    }
    if mllm_option:
        overrides["mllm.options"] = {**config.mllm.options, **_parse_pairs(mllm_option, "--mllm-option")}
    if detector_option:
        overrides["detector.options"] = {**config.detector.options, **_parse_pairs(detector_option, "--detector-option")}
    overrides.update(_parse_pairs(sets, "--set"))
    config = config.with_overrides(overrides)
    if limit is not None and limit < 0:
        raise click.BadParameter("must be >= 0", param_hint="--limit")
    if not config.mllm.spec or not config.detector.spec:
        if limit != 0:  # --limit 0 loads nothing
            _check_default_models(config)
        config = config.with_overrides(_default_specs(config))

    from gbc.inputs import Columns, DownloadOptions, InputStream, StoreResume, resolve

    units = resolve(images)
    part = None
    if shard:
        from gbc.distributed.sharding import parse_shard

        part = parse_shard(shard)
    columns = Columns(url=url_col, key=key_col, caption=caption_col)
    download = DownloadOptions(concurrency=download_concurrency, timeout_s=download_timeout,
                               retries=download_retries, max_bytes=int(max_download_mb * 1024 * 1024))

    def open_inputs(store):
        return InputStream(units, columns=columns, download=download, skip=StoreResume(store, retry_failed),
                           shard=part, limit=limit, warn=lambda message: click.echo(f"Warning: {message}", err=True))

    from gbc.store.writer_lock import WriterLock

    # One run per store (a second is refused, naming the first); dropped by the OS if we die.
    click.get_current_context().call_on_close(WriterLock(output, command="gbc annotate").acquire().release)
    if ray_address is not None:
        from gbc.annotators.images import discover_images

        if any(u.kind != "images" for u in units):
            # Tar shards and URL lists are read by Ray tasks, a stream per input, and checked
            # against OUTPUT there; --limit and --shard apply as in a local run.
            from gbc.distributed.ray_inputs import RayInputs

            inputs = RayInputs(units, columns=columns, download=download, part=part, limit=limit)
            _annotate_on_ray(inputs, output, config, ray_address, workers, gpus_per_worker, cpus_per_worker,
                             retry_failed, no_merge, None, as_json, verbose,
                             [u.location for u in units if u.kind == "images"])
            return
        sources = discover_images([u.location for u in units])
        if part:
            from gbc.distributed.sharding import shard_of

            sources = [s for s in sources if shard_of(s.key, part[1]) == part[0]]
        _annotate_on_ray(sources, output, config, ray_address, workers, gpus_per_worker, cpus_per_worker,
                         retry_failed, no_merge, limit, as_json, verbose, images)
        return

    from gbc.annotators.backends.registry import create_detector, create_mllm

    mllm = create_mllm(config.mllm.spec, config.mllm.options)
    detector = create_detector(config.detector.spec, config.detector.options)

    from gbc.store.shards import open_store
    from gbc.annotators.engine import RecursiveAnnotator

    from gbc.store.health import StoreFullError

    committed = {"done": 0}  # images committed by this run, for a disk-full message
    store = open_store(output, readonly=False)
    try:
        _record_image_roots(store, [u.location for u in units if u.kind == "images"])
        todo = open_inputs(store)
        kinds = sorted({u.kind for u in todo.selected_units()})
        click.echo(f"reading {len(todo.selected_units())} input(s) ({', '.join(kinds) or 'none'})"
                   + (f", shard {shard} by {'file' if todo.by_file else 'image key'}" if shard else "")
                   + f"; images already in {output} are skipped", err=True)
        annotator = RecursiveAnnotator(config, mllm, detector)
        bar = progress(total=None, desc="annotate", unit="img",
                       disable=None if show_progress is None else not show_progress)
        started = time.perf_counter()
        state = {"finished": 0}

        def on_progress(summary, engine):
            finished = summary.done + summary.failed
            bar.update(finished - state["finished"])
            state["finished"] = finished
            committed["done"] = summary.done
            workers = getattr(engine, "workers", {})
            calls = sum(w.stats.calls for w in workers.values())
            elapsed = max(time.perf_counter() - started, 1e-9)
            mllm_fill = workers["mllm"].stats.mean_fill if "mllm" in workers else 0.0
            bar.set_postfix_str(f"done={summary.done} failed={summary.failed} calls/s={calls / elapsed:.1f} "
                                f"fill={100 * mllm_fill:.0f}%", refresh=False)

        try:
            summary = annotator.run(todo, store, on_progress=on_progress)
        except BackendUnavailable as exc:
            # the run stops (printed as one `Error:` line); keep a record of what it did before
            partial = getattr(exc, "run_summary", None)
            if partial is not None:
                store.update_meta({"last_run": {**partial.to_dict(), "stopped": str(exc), "output": str(output)}})
            raise
        finally:
            bar.close()
        result = summary.to_dict()
        for line in summary.warnings:  # duplicates caught by the engine rather than by the inputs
            click.echo(f"Warning: {line}", err=True)
        counts = todo.counts
        # counted as the inputs were read (nothing listed them up front)
        click.echo(f"{counts.found} images found, {counts.skipped} skipped (already in {output}), "
                   f"{summary.images} annotated", err=True)
        result.update({"found": counts.found, "skipped": counts.skipped, "shard": shard, "output": str(output),
                       "duplicates": counts.duplicates + summary.duplicates, "inputs": counts.inputs,
                       "inputs_missing": counts.inputs_missing, "warnings": counts.warnings + summary.warnings,
                       "downloads": getattr(todo, "download_stats", None),
                       "mllm": config.mllm.spec, "detector": config.detector.spec,
                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        store.update_meta({"last_run": result, "config": config.model_dump(mode="json")})
        totals = {"done": _count(store, "done"), "failed": _count(store, "failed")}
        result["store"] = totals
    except StoreFullError as exc:  # committed images are intact: the same command resumes
        raise click.ClickException(f"no space left on {exc.mount}: {committed['done']} images committed, "
                                   "rerun to resume") from None
    finally:
        store.close()
        for backend in (mllm, detector):
            close = getattr(backend, "close", None)
            if close is not None:
                close()
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(_format_summary(result))


def _annotate_on_ray(sources, output, config, address, workers, gpus_per_worker, cpus_per_worker,
                     retry_failed, no_merge, limit, as_json, verbose=False, images=()) -> None:
    """``--ray``: the same run on a Ray cluster (see ``gbc.distributed.ray_runner``)."""
    from gbc.distributed.ray_runner import annotate_on_ray, finished_keys
    from gbc.distributed.shadowing import check_no_shadowing

    check_no_shadowing()  # before anything is printed or started (annotate_on_ray checks it too)
    streamed = hasattr(sources, "dataset")
    found = None if streamed else len(sources)
    if streamed:
        click.echo(f"reading {len(sources.units)} input(s) on Ray; annotating with {workers} worker(s)", err=True)
    elif retry_failed:
        # As in-process: only the images that failed before (in the output or its shards).
        failed = finished_keys(output, retry_failed=False) - finished_keys(output, retry_failed=True)
        sources = [s for s in sources if s.key in failed]
    if limit is not None and not streamed:
        finished = finished_keys(output, retry_failed=retry_failed)
        sources = [s for s in sources if s.key not in finished][:limit]
    if not streamed:
        click.echo(f"{found} images found, {len(sources)} considered; annotating on Ray with {workers} worker(s)",
                   err=True)
    result = annotate_on_ray(
        sources, output, config=config,
        mllm_spec=config.mllm.spec, mllm_options=config.mllm.options,
        detector_spec=config.detector.spec, detector_options=config.detector.options,
        address=None if address == "local" else address, workers=workers, gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker, retry_failed=retry_failed, merge=not no_merge, verbose=verbose,
    )
    result.update({"found": result["images"] if streamed else found, "output": str(output), "mllm": config.mllm.spec, "detector": config.detector.spec,
                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if result["merged"]:
        from gbc.store.shards import open_store

        with open_store(output, readonly=False) as store:
            store.update_meta({"last_run": result, "config": config.model_dump(mode="json")})
            _record_image_roots(store, images)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    click.echo(f"annotated {result['submitted']} images on Ray ({workers} worker(s)): {result['done']} done, "
               f"{result['failed']} failed ({result['skipped']} skipped) in {result['seconds']:.1f} s, "
               f"{result['images_per_s']:.2f} images/s")
    if result["merged"]:
        store = result["store"]
        click.echo(f"store {output}: {store['done']} done, {store['failed']} failed")
    elif result["shards"]:
        click.echo(f"{len(result['shards'])} shard(s) left in {output}/shards (gbc.open_store reads them as one); "
                   f"merge with: gbc merge {output}/shards -o {output}")


def _record_image_roots(store, images) -> None:
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


def _count(store, status: str) -> int:
    counter = getattr(store, "count", None)
    if counter is not None:
        return counter(status)
    return sum(1 for _ in store.keys(status=status))


def _format_summary(result: dict) -> str:
    lines = [
        f"annotated {result['images']} images: {result['done']} done, {result['failed']} failed "
        f"({result['skipped']} skipped) in {result['elapsed_s']:.1f} s, {result['images_per_s']:.2f} images/s",
    ]
    for name, b in result["backends"].items():
        lines.append(f"{name}: {b['calls']} calls, {b['requests']} requests, mean batch fill "
                     f"{100 * b['mean_batch_fill']:.0f}% of {b['batch_size']}, {b['retries']} retries"
                     + (f", {b['request_retries']} requests sent again" if "request_retries" in b else ""))
    for etype, n in sorted(result["failures"].items()):
        lines.append(f"failed: {etype} x{n}")
    if result.get("duplicates"):
        lines.append(f"duplicate keys left out: {result['duplicates']}")
    if result.get("inputs_missing"):
        lines.append(f"missing inputs skipped: {result['inputs_missing']}")
    lines.append(f"store {result['output']}: {result['store']['done']} done, {result['store']['failed']} failed")
    return "\n".join(lines)


def _register_store_errors() -> None:
    try:
        from gbc.store.lmdb_store import StoreError
    except ImportError:  # pragma: no cover - the store ships with the package
        return
    register_user_error(StoreError)
