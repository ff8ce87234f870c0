"""``gbc export``: captions (and images) of graphs for CLIP training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from gbc.cli.common import handle_errors, progress, report_damaged
from gbc.cli.filter import build_score_filter, fit_score_filter, score_filter_options
from gbc.export.captions import DEFAULT_EXCLUDED_DESC_LABELS, STRATEGIES, CaptionFilter
from gbc.export.images import DEFAULT_JPEG_QUALITY
from gbc.export.options import (
    DEFAULT_SHARD_SIZE,
    FORMATS,
    GRAPH_JSON_POLICIES,
    IMAGE_POLICIES,
    MISSING_POLICIES,
    ExportOptions,
)
from gbc.export.output import check_output
from gbc.export.tokens import CLIP_MAX_TOKENS
from gbc.export.writers import export_graphs
from gbc.schemas import DESC_LABELS, VERTEX_LABELS

_TOKEN_MODES = {"auto": None, "exact": True, "estimate": False}


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Output: a .csv file for --format csv, else a folder of shards.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help="csv: open_clip tab-separated filepath/title; wds: WebDataset tar shards (img2dataset "
                   "layout); parquet: Parquet shards.")
@click.option("--captions", "strategy", type=click.Choice(list(STRATEGIES)), default="gbc-captions",
              show_default=True, help="Caption strategy (see the README).")
@click.option("--vertex-label", "vertex_labels", multiple=True, type=click.Choice(VERTEX_LABELS),
              help="Keep only captions of vertices with this label (repeatable).")
@click.option("--desc-label", "desc_labels", multiple=True, type=click.Choice(DESC_LABELS),
              help="Keep only captions with this label (repeatable). 'hardcode' captions are left out "
                   "unless named here.")
@click.option("--min-box-size", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Minimum width and height of a vertex box, relative to the image.")
@click.option("--max-depth", type=click.IntRange(min=0), default=None, help="Deepest vertex level kept (image = 0).")
@click.option("--max-tokens", type=click.IntRange(min=0), default=CLIP_MAX_TOKENS, show_default=True,
              help="CLIP token limit; longer captions are split at sentence boundaries (0: no limit).")
@click.option("--tokens", "token_mode", type=click.Choice(list(_TOKEN_MODES)), default="auto", show_default=True,
              help="Token counting: exact CLIP BPE (needs $GBC_CLIP_BPE or open_clip), a conservative "
                   "estimate, or auto (exact when available).")
@click.option("--images-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the images: img_path is looked up there, then its base name.")
@click.option("--allow-outside-root", is_flag=True,
              help="Also read image files that resolve outside --images-root ('..', absolute paths, symlinks); "
                   "by default they are refused and counted.")
@click.option("--max-side", type=click.IntRange(min=1), default=None, help="Resize images so the longer side is at most N.")
@click.option("--shard-size", type=click.IntRange(min=1), default=DEFAULT_SHARD_SIZE, show_default=True,
              help="Samples per shard (wds, parquet).")
@click.option("--text-only", is_flag=True, help="Write no images (every graph is exported).")
@click.option("--missing", type=click.Choice(MISSING_POLICIES), default="skip", show_default=True,
              help="Graphs whose image file is missing: skip them (counted) or export them text-only.")
@click.option("--graph-json", type=click.Choice(GRAPH_JSON_POLICIES), default="first", show_default=True,
              help="wds: which samples' .json carry the whole graph: the first row of each graph, every row, or none.")
@click.option("--images", "image_policy", type=click.Choice(IMAGE_POLICIES), default="all", show_default=True,
              help="wds: which samples carry their image: every caption row, or only the first row of each graph "
                   "that uses it (the others name that sample in image_in: about one image per graph).")
@click.option("--align-with", "align_with", multiple=True, metavar="SHARDS",
              help="wds: write caption shards that line up with these input tar shards (same names, same sample "
                   "keys in the same order, captions only, no images). Repeatable; brace ranges and "
                   "img2dataset folders work. SRC must be a store.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=DEFAULT_JPEG_QUALITY, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes making captions and images (the output is the same for any number).")
@click.option("--validate", is_flag=True, help="Check every graph's invariants while reading.")
@score_filter_options
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output whole (the CSV and its images folder, or the shard folder); "
                   "without it a used output is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def export(src: Path, out: Path, fmt: str, strategy: str, vertex_labels: Tuple[str, ...], desc_labels: Tuple[str, ...],
           min_box_size: float, max_depth: Optional[int], max_tokens: int, token_mode: str, images_root: Optional[Path],
           allow_outside_root: bool, max_side: Optional[int], shard_size: int, text_only: bool, missing: str,
           graph_json: str, jpeg_quality: int, workers: int, validate: bool, overwrite: bool, as_json: bool,
           min_clip: Tuple[str, ...] = (),
           drop_bottom: Optional[float] = None, max_toxicity: Optional[float] = None, score_names: Tuple[str, ...] = (),
           image_policy: str = "all", align_with: Tuple[str, ...] = ()):
    """Export captions (and images) of the graphs in SRC for CLIP training.

    SRC is a store (.lmdb, or a folder of store shards) or a graph file (.jsonl, .json,
    .parquet). A progress bar goes to stderr; a summary with the rows per caption type to
    stdout.

    \b
    Examples:
      gbc export graphs.lmdb -o train.csv --images-root images/
      gbc export graphs.jsonl -o shards/ --format wds --max-side 512 --images-root images/
      gbc export graphs.lmdb -o text/ --format parquet --captions short --text-only
      gbc export cc12m.lmdb -o captions/ --format wds --align-with /data/cc12m-wds
    """
    from gbc.export.source import open_source, reads_views

    if images_root is not None and not images_root.is_dir():
        raise click.BadParameter(f"{images_root} is not a folder", param_hint="--images-root")
    flt = CaptionFilter(
        vertex_labels=frozenset(vertex_labels) or None,
        desc_labels=frozenset(desc_labels) or None,
        exclude_desc_labels=DEFAULT_EXCLUDED_DESC_LABELS - set(desc_labels),
        min_box_size=min_box_size,
        max_depth=max_depth,
        max_tokens=max_tokens or None,
        exact_tokens=_TOKEN_MODES[token_mode],
    )
    from gbc.export.source import recorded_image_roots

    # Without --images-root, the input folders the store recorded at annotate time.
    roots = () if images_root is not None else tuple(recorded_image_roots(src))
    options = ExportOptions(fmt=fmt, strategy=strategy, caption_filter=flt,
                            images_root=str(images_root) if images_root else None, image_roots=roots,
                            max_side=max_side,
                            shard_size=shard_size, text_only=text_only, missing=missing, jpeg_quality=jpeg_quality,
                            graph_json=graph_json, workers=workers, allow_outside_root=allow_outside_root,
                            overwrite=overwrite, images=image_policy)
    check_output(out, fmt, overwrite)  # before any reading (fitting score bars reads SRC once)
    score_filter = build_score_filter(min_clip, drop_bottom, max_toxicity, score_names)
    if align_with:
        if score_filter is not None:
            raise click.BadParameter("caption shards aligned with input shards take no score filter (yet)",
                                     param_hint="--align-with")
        _export_aligned(src, out, fmt, align_with, options, as_json)
        return
    if score_filter is not None:
        fit_score_filter(score_filter, src)
    damaged = []  # (key, message) of graphs whose stored value cannot be decoded: skipped, listed
    view = reads_views(options, validate=validate, rewrites_graphs=score_filter is not None)
    pairs, total = open_source(src, validate=validate, on_damaged=lambda key, message: damaged.append((key, message)),
                               view=view)
    if score_filter is not None:
        # captions under the score bars never reach the caption strategies
        pairs = ((key, graph) for key, graph in pairs if score_filter.apply(graph) is not None)
    try:
        with progress(pairs, total=total, desc="export", unit="graph") as bar:
            summary = export_graphs(bar, out, options)  # removes its partial files when it fails
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(out)  # name the output in a disk-full message
        raise
    if not summary.rows:
        _refuse_empty(summary, out, "--images-root" if images_root is not None else "recorded" if roots else "")
    if as_json:
        data = {**summary.to_dict(), "damaged": [key for key, _ in damaged]}
        if score_filter is not None:
            data["score_filter"] = score_filter.summary.to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        _print_summary(summary, out)
        if score_filter is not None:
            from gbc.cli.filter import print_filter_summary

            click.echo("score filter:")
            print_filter_summary(score_filter.summary.to_dict())
    if damaged:
        report_damaged(damaged, "skipped by this export")


def _refuse_empty(s, out: Path, looked_under: str) -> None:
    """Nothing exported: remove the empty outputs and say why in one line (exit 1).
    ``looked_under``: where images were looked for ("--images-root", "recorded" or "")."""
    for name in s.files:  # the paths of the files this export wrote
        if Path(name).is_file():
            Path(name).unlink()
    if s.skipped_missing_image:
        hint = {"--images-root": "they are not under --images-root",
                "recorded": "they are not where the store recorded them: give --images-root DIR"}.get(
                    looked_under, "give --images-root DIR")
        why = (f"the image of {s.skipped_missing_image} graph(s) was not found ({hint}, "
               "or use --missing text or --text-only)")
    elif s.skipped_image_error:
        why = f"the image of {s.skipped_image_error} graph(s) could not be read"
    elif not s.graphs_read:
        why = "the source holds no graph"
    else:
        why = "no caption passed the filters"
    raise click.ClickException(f"nothing exported from {s.graphs_read} graph(s): {why}")


def _export_aligned(src: Path, out: Path, fmt: str, align_with: Tuple[str, ...], options, as_json: bool) -> None:
    """``--align-with``: one caption shard per input shard (see ``gbc.export.aligned``)."""
    from gbc.export.aligned import export_aligned
    from gbc.inputs import resolve
    from gbc.inputs.tars import iter_tar_keys

    if fmt != "wds":
        raise click.BadParameter("caption shards aligned with input shards are WebDataset shards: add --format wds",
                                 param_hint="--align-with")
    from gbc.store.reader import open_graphs, records_statuses

    with open_graphs(src, validate=False) as reader:
        if not records_statuses(reader):
            raise click.BadParameter(f"{src} is not a store; aligned shards look graphs up by key in a store",
                                     param_hint="SRC")
        units = resolve(align_with)
        for unit in units:
            if unit.kind != "tar":
                raise click.BadParameter(f"{unit.location} is not a tar shard", param_hint="--align-with")
            if not unit.location.startswith(("http://", "https://")) and not Path(unit.location).is_file():
                raise click.BadParameter(f"shard {unit.location} does not exist", param_hint="--align-with")
        if not units:
            raise click.BadParameter("no tar shard found", param_hint="--align-with")
        summary = export_aligned(reader, ((u.label, iter_tar_keys(u.location)) for u in units), out, options)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"caption shards: {summary['shards']} in {out} (aligned with the input shards)")
    click.echo(f"samples: {summary['done']} with captions, {summary['failed']} failed, "
               f"{summary['missing']} not in the store; {summary['rows']} captions")


def _print_summary(s, out: Path) -> None:
    click.echo(f"graphs read:      {s.graphs_read}")
    click.echo(f"graphs exported:  {s.graphs_exported}" + (f" ({s.graphs_text_only} text-only)" if s.graphs_text_only else ""))
    if s.skipped_missing_image:
        click.echo(f"skipped, image missing: {s.skipped_missing_image}")
        if not s.graphs_exported:
            click.echo("  (no image was found: give --images-root, or use --missing text or --text-only)", err=True)
    if s.skipped_outside_root:
        click.echo(f"skipped, image outside the images root (refused): {s.skipped_outside_root}")
        for name in s.refused_images:
            click.echo(f"  refused: {name}")
        if s.skipped_outside_root > len(s.refused_images):
            click.echo(f"  ... and {s.skipped_outside_root - len(s.refused_images)} more")
    if s.skipped_invalid_box:
        click.echo(f"skipped, box not a finite number: {s.skipped_invalid_box}")
    if s.skipped_image_error:
        click.echo(f"skipped, image unreadable: {s.skipped_image_error}")
    if s.graphs_without_rows:
        click.echo(f"graphs without captions: {s.graphs_without_rows}")
    if s.dropped_sentences:
        click.echo(f"sentences over the token limit (dropped): {s.dropped_sentences}")
    click.echo(f"rows:             {s.rows}")
    for ctype, n in sorted(s.rows_by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"  {ctype:<26} {n}")
    click.echo(f"tokens counted by: {s.token_counter}")
    click.echo(f"output: {out} ({len(s.files)} file(s))")
    for err in s.errors:
        click.echo(f"error: {err}", err=True)
