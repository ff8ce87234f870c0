"""``gbc annotate``: annotate image folders into an LMDB graph store (resumable)."""

from __future__ import annotations

import json
import os
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
    from gbc.annotators.backends.base import BackendError
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
        from gbc.annotators.backends.defaults import ModelsExtraMissing, check_default_models, default_specs

        if limit != 0:  # --limit 0 loads nothing
            check_default_models(config)
        try:
            chosen = default_specs(config)
        except ModelsExtraMissing as exc:
            raise click.UsageError(str(exc)) from None
        for name, spec in chosen.items():
            click.echo(f"{name.split('.')[0]}: {spec} (default)", err=True)
        config = config.with_overrides(chosen)

    from gbc.annotators.run import annotate as run_annotation
    from gbc.inputs import Columns, DownloadOptions

    part = None
    if shard:
        from gbc.distributed.sharding import parse_shard

        part = parse_shard(shard)
    runner = None
    if ray_address is not None:
        from gbc.distributed.ray_runner import RayRunner

        runner = RayRunner(address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                           cpus_per_worker=cpus_per_worker, merge=not no_merge, verbose=verbose)
    events = _PrintedEvents(show_progress)
    try:
        result = run_annotation(
            images, output, config, runner=runner, retry_failed=retry_failed, shard=part, limit=limit,
            columns=Columns(url=url_col, key=key_col, caption=caption_col),
            download=DownloadOptions(concurrency=download_concurrency, timeout_s=download_timeout,
                                     retries=download_retries, max_bytes=int(max_download_mb * 1024 * 1024)),
            events=events, command="gbc annotate")
    finally:
        events.progress_end()
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    elif runner is not None:
        click.echo(_format_ray_summary(result, workers))
    else:
        click.echo(_format_summary(result))


class _PrintedEvents:
    """The run's lines and warnings on stderr, its progress as a bar there (see ``gbc.annotators.run``)."""

    def __init__(self, show_progress):
        self.disable = None if show_progress is None else not show_progress
        self.bar = None
        self.finished = 0

    def note(self, line: str) -> None:
        click.echo(line, err=True)

    def warning(self, line: str) -> None:
        click.echo(f"Warning: {line}", err=True)

    def progress(self, p) -> None:
        if self.bar is None:
            self.bar = progress(total=None, desc="annotate", unit="img", disable=self.disable)
        finished = p.done + p.failed
        self.bar.update(finished - self.finished)
        self.finished = finished
        self.bar.set_postfix_str(f"done={p.done} failed={p.failed} calls/s={p.calls_per_s:.1f} "
                                 f"fill={100 * p.mllm_fill:.0f}%", refresh=False)

    def progress_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _format_ray_summary(result: dict, workers: int) -> str:
    lines = [f"annotated {result['submitted']} images on Ray ({workers} worker(s)): {result['done']} done, "
             f"{result['failed']} failed ({result['skipped']} skipped) in {result['seconds']:.1f} s, "
             f"{result['images_per_s']:.2f} images/s"]
    output = result["output"]
    if result["merged"]:
        store = result["store"]
        lines.append(f"store {output}: {store['done']} done, {store['failed']} failed")
    elif result["shards"]:
        lines.append(f"{len(result['shards'])} shard(s) left in {output}/shards (gbc.open_store reads them as one); "
                     f"merge with: gbc merge {output}/shards -o {output}")
    return "\n".join(lines)


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
