"""``gbc filter``: drop captions by CLIP score, bottom percent per label or toxicity.

The options are shared with ``gbc export`` (``score_filter_options``), so a curated export
needs no second store.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Optional, Tuple

import click

from gbc.cli.common import handle_errors, progress


def score_filter_options(func: Callable) -> Callable:
    """The score thresholds of ``gbc filter``, as options of any command."""
    options = [
        click.option("--min-clip", "min_clip", multiple=True, metavar="[LABEL=]VALUE",
                     help="Drop captions whose CLIP score is under VALUE; LABEL is a full caption label "
                          "(detail-entity) or a description label (relation); none: every caption. Repeatable."),
        click.option("--drop-bottom", type=click.FloatRange(0, 100, max_open=True), default=None, metavar="PCT",
                     help="Drop the PCT percent lowest CLIP scores of each caption label (measured over SRC)."),
        click.option("--max-toxicity", type=float, default=None, metavar="VALUE",
                     help="Drop captions whose highest toxicity score is above VALUE."),
        click.option("--score-name", "score_names", multiple=True, metavar="NAME",
                     help="CLIP score(s) to filter on, averaged (default: every score name in SRC). Repeatable."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def build_score_filter(min_clip, drop_bottom, max_toxicity, score_names):
    """A ``ScoreFilter`` from the option values, or ``None`` when no threshold is given."""
    from gbc.scoring.filters import ScoreFilter, parse_min_clip

    flt = ScoreFilter(min_clip=parse_min_clip(min_clip), drop_bottom=drop_bottom, max_toxicity=max_toxicity,
                      score_names=list(score_names) or None)
    if not flt.active:
        if score_names:
            raise click.UsageError("--score-name needs --min-clip or --drop-bottom")
        return None
    return flt


def fit_score_filter(flt, src: Path, show_progress: Optional[bool] = None) -> None:
    """The first pass over SRC: score names present, drop-bottom percentiles."""
    if not flt.uses_clip:
        return
    from gbc.cli.files import GraphSource

    with GraphSource(src, validate=False) as source:
        graphs = progress((g for _, g in source.graphs()), total=source.total(), desc="scan scores", unit=" graphs",
                          disable=None if show_progress is None else not show_progress)
        try:
            flt.fit(graphs)
        finally:
            graphs.close()


@click.command("filter")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Output: a store (.lmdb) or a graph file (.jsonl, .json, .parquet).")
@score_filter_options
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@handle_errors
def filter_command(src: Path, out: Path, min_clip: Tuple[str, ...], drop_bottom: Optional[float],
                   max_toxicity: Optional[float], score_names: Tuple[str, ...], overwrite: bool, as_json: bool,
                   show_progress: Optional[bool]):
    """Drop captions of the graphs in SRC whose scores miss the bars; write the rest to OUT.

    A caption without the needed score, or with a NaN score, is dropped. A vertex that loses
    every caption is removed with its edges; a graph whose image vertex loses every caption is
    dropped. The output validates. Scores come from `gbc score`.

    \b
    Examples:
      gbc filter scored.lmdb -o curated.lmdb --min-clip 0.2 --min-clip detail-entity=0.15
      gbc filter scored.jsonl -o curated.jsonl --drop-bottom 5 --max-toxicity 0.1
    """
    from gbc.cli.files import GraphSource, check_graph_output, write_whole
    from gbc.store.files import detect_format

    flt = build_score_filter(min_clip, drop_bottom, max_toxicity, score_names)
    if flt is None:
        raise click.UsageError("give at least one of --min-clip, --drop-bottom, --max-toxicity")
    if not src.exists():
        raise FileNotFoundError(f"no such file or store: {src}")
    check_graph_output(src, out, overwrite, click.UsageError("OUT must differ from SRC"))
    detect_format(out)  # an output of no known format is refused before anything is read
    fit_score_filter(flt, src, show_progress)

    with GraphSource(src, validate=False) as source:
        bar = progress(source.graphs(), total=source.total(), desc="filter", unit=" graphs",
                       disable=None if show_progress is None else not show_progress)
        try:
            write_whole(out, ((key, graph) for key, graph in bar if flt.apply(graph) is not None),
                        failed_from=source.reader)
        finally:
            bar.close()
    summary = flt.summary.to_dict()
    summary["output"] = str(out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    print_filter_summary(summary)


def print_filter_summary(summary) -> None:
    click.echo(f"graphs read:    {summary['graphs_read']}")
    click.echo(f"graphs kept:    {summary['graphs_kept']}" + (f" ({summary['graphs_dropped']} dropped: image vertex "
                                                             f"lost every caption)" if summary["graphs_dropped"] else ""))
    click.echo(f"vertices removed: {summary['vertices_removed']}; edges removed: {summary['edges_removed']}")
    click.echo(f"{'caption label':<26} {'kept':>8} {'dropped':>8}")
    for label, row in summary["captions"].items():
        click.echo(f"{label:<26} {row['kept']:>8} {row['dropped']:>8}")
    if summary["reasons"]:
        click.echo("dropped because: " + ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()))
    if "output" in summary:
        click.echo(f"output: {summary['output']}")
