"""``gbc ls``, ``gbc show``, ``gbc stats`` and ``gbc validate``: looking into graph files and stores."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import click

from gbc.cli.common import handle_errors, one_line, plural, report_damaged
from gbc.cli.files import GraphSource
from gbc.schemas.graph import GbcGraph, Vertex

#: Width of ``gbc show`` output when the terminal width is unknown.
DEFAULT_WIDTH = 100
#: Captions are never wrapped narrower than this, however deep the tree.
MIN_CAPTION_WIDTH = 30
#: ``gbc validate`` prints at most this many violations per invalid graph.
MAX_PROBLEMS_SHOWN = 20

_PATH = click.Path(path_type=Path)
_NO_VALIDATE = click.option("--no-validate", "no_validate", is_flag=True,
                            help="Do not check the graphs' invariants while reading.")


# ---------------------------------------------------------------------------- ls
@click.command()
@click.argument("path", type=_PATH)
@click.option("--status", type=click.Choice(["done", "failed"]), default=None,
              help="Only images with this status (stores; every graph of a file is done).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {key, status, reason, ...}.")
@_NO_VALIDATE
@handle_errors
def ls(path: Path, status: Optional[str], as_json: bool, no_validate: bool):
    """List the image keys of a store or graph file.

    For a store: one line per image, KEY STATUS [REASON]. For a file: INDEX KEY, where KEY
    is the graph's img_path (else img_url, else #INDEX).
    """
    with GraphSource(path, validate=not no_validate) as source:
        entries = source.entries(status=status)
        if as_json:
            _echo_json_array(_entry_dict(e, source.is_store) for e in entries)
            return
        for e in entries:
            if source.is_store:
                fields = [e.key, e.status] + ([f"{e.error_type + ': ' if e.error_type else ''}{e.reason}"]
                                              if e.reason or e.error_type else [])
            else:
                fields = [str(e.index), e.key]
            click.echo("\t".join(one_line(f) for f in fields))


def _entry_dict(e, is_store: bool) -> Dict:
    if is_store:
        return {"key": e.key, "status": e.status, "reason": e.reason, "error_type": e.error_type}
    return {"index": e.index, "key": e.key, "status": e.status}


def _echo_json_array(items) -> None:
    """Stream a JSON array, one element per line, without holding the list in memory."""
    it = iter(items)
    previous = next(it, _END)
    if previous is _END:
        click.echo("[]")
        return
    click.echo("[")
    for item in it:
        click.echo("  " + json.dumps(previous, ensure_ascii=False) + ",")
        previous = item
    click.echo("  " + json.dumps(previous, ensure_ascii=False))
    click.echo("]")


_END = object()


# ---------------------------------------------------------------------------- show
_UNICODE = {"tee": "├─ ", "last": "└─ ", "pipe": "│  ", "blank": "   ", "arrow": "→"}
_ASCII = {"tee": "|- ", "last": "`- ", "pipe": "|  ", "blank": "   ", "arrow": "->"}


def _box(v: Vertex) -> str:
    b = v.bbox
    text = f"box [{b.left:.2f} {b.top:.2f} {b.right:.2f} {b.bottom:.2f}]"
    if b.confidence is not None:
        text += f"  conf {b.confidence:.2f}"
    return text


def format_tree(graph: GbcGraph, width: int = DEFAULT_WIDTH, ascii_only: bool = False) -> str:
    """``graph`` as an indented tree: every vertex once, with its captions and named edges.

    A vertex with several parents is drawn under the first one met in depth-first order;
    later edges to it print ``(#k above)``. Several edges to the same child (one per member
    of a relation) share one line with all their texts.
    """
    chars = _ASCII if ascii_only else _UNICODE
    index = graph.vertex_dict
    number: Dict[str, int] = {}
    lines: List[str] = []

    def header(v: Vertex) -> str:
        number[v.vertex_id] = len(number)
        return f"#{number[v.vertex_id]} {v.label} {json.dumps(v.vertex_id, ensure_ascii=False)}  {_box(v)}"

    def captions(v: Vertex, prefix: str) -> None:
        for d in v.descs:
            lead = f"{d.label}: "
            room = max(MIN_CAPTION_WIDTH, width - len(prefix) - len(lead))
            wrapped = textwrap.wrap(" ".join(d.text.split()), room) or [""]
            lines.append(prefix + lead + wrapped[0])
            lines.extend(prefix + " " * len(lead) + rest for rest in wrapped[1:])

    def children(v: Vertex):
        groups: Dict[str, List[str]] = {}
        for e in v.out_edges:
            groups.setdefault(e.target, []).append(e.text)
        return list(groups.items())

    def visit(v: Vertex, prefix: str) -> None:
        # ``prefix`` is the indentation of the vertex's body (captions and child lines).
        kids = children(v)
        captions(v, prefix + (chars["pipe"] if kids else chars["blank"]))
        for i, (target, texts) in enumerate(kids):
            last = i == len(kids) - 1
            connector = prefix + (chars["last"] if last else chars["tee"])
            named = ", ".join(json.dumps(t, ensure_ascii=False) for t in dict.fromkeys(texts))
            if len(texts) > 1:
                named += f" ({len(texts)} edges)"
            child = index.get(target)
            if child is None:
                lines.append(f"{connector}{named} {chars['arrow']} {json.dumps(target)} (missing vertex)")
            elif target in number:
                lines.append(f"{connector}{named} {chars['arrow']} #{number[target]} {child.label} "
                             f"{json.dumps(target, ensure_ascii=False)} (above)")
            else:
                lines.append(f"{connector}{named} {chars['arrow']} {header(child)}")
                visit(child, prefix + (chars["blank"] if last else chars["pipe"]))

    for root in graph.roots:
        if root.vertex_id not in number:
            lines.append(header(root))
            visit(root, "")
    # Vertices no root reaches (only in invalid graphs, e.g. a cycle) are still shown.
    for v in graph.vertices:
        if v.vertex_id not in number:
            lines.append(header(v) + "  (unreachable from the image vertex)")
            visit(v, "")
    return "\n".join(lines)


def _graph_heading(key: str, graph: GbcGraph) -> List[str]:
    head = [key]
    if graph.img_url and graph.img_url != key:
        head.append(f"url: {graph.img_url}")
    if graph.img_size:
        head.append(f"size: {graph.img_size[0]}x{graph.img_size[1]}")
    depths = graph.depths()
    head.append(f"{graph.n_vertices} vertices, {graph.n_edges} edges, {graph.n_captions} captions, "
                f"depth {max(depths.values()) if depths else 0}")
    return head


@click.command()
@click.argument("path", type=_PATH)
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the graph's JSON record (as stored) instead.")
@click.option("--width", type=int, default=None, help="Wrap captions to this many columns (default: terminal width).")
@click.option("--ascii", "ascii_only", is_flag=True, help="Draw the tree with ASCII characters only.")
@_NO_VALIDATE
@handle_errors
def show(path: Path, key: str, as_json: bool, width: Optional[int], ascii_only: bool, no_validate: bool):
    """Print one graph as a readable tree.

    KEY is the image key (img_path, else img_url) as `gbc ls` prints it, the image's file
    name, or the graph's 0-based position (in a store: among its graphs in key order). Each vertex shows its number,
    label, id, box and detector confidence, then its captions and the edges to its children
    (with their texts). A vertex with several parents is shown once and referenced later.
    """
    with GraphSource(path, validate=not no_validate) as source:
        found_key, graph = source.find(key)
    if as_json:
        click.echo(graph.to_json().decode())
        return
    if width is None:
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    click.echo("\n".join(_graph_heading(found_key, graph)))
    click.echo("")
    click.echo(format_tree(graph, width=width, ascii_only=ascii_only))


# ---------------------------------------------------------------------------- stats
@click.command()
@click.argument("path", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Also draw histograms (vertices, depth, caption lengths, labels) into this PNG.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@_NO_VALIDATE
@handle_errors
def stats(path: Path, as_json: bool, plot_path: Optional[Path], show_progress: Optional[bool], no_validate: bool):
    """Summary statistics of a set of graphs (as in the GBC paper).

    Per-graph means, minima and maxima of vertices, edges, captions, words and depth;
    vertices and descriptions by label; caption lengths by full label; composition sizes,
    relation arities and detector confidences. Published figures (the reference sample
    'wiki' and the GBC1M dataset card) are shown beside them where known.
    """
    from gbc.cli.common import progress
    from gbc.stats import format_stats, reader_stats

    with GraphSource(path, validate=not no_validate) as source:
        graphs = progress((g for _, g in source.graphs()), total=source.total(), desc="stats", unit=" graphs",
                          disable=None if show_progress is None else not show_progress)
        try:
            result = reader_stats(source.reader, graphs)
        finally:
            graphs.close()
        damaged = source.damaged
    if plot_path is not None:
        from gbc.viz.stats_plot import plot_stats

        plot_stats(result, plot_path, title=f"{path.name}: {result.n_graphs} graphs"
                   + (f" ({result.n_failed} failed images)" if result.n_failed is not None else ""))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(format_stats(result))
    if plot_path is not None:
        click.echo(f"Plot written to {plot_path}", err=True)
    if damaged:
        report_damaged(damaged, "left out of these statistics")


# ---------------------------------------------------------------------------- validate
@click.command()
@click.argument("path", type=_PATH)
@handle_errors
def validate(path: Path):
    """Check every graph's invariants; non-zero exit when one is invalid.

    Prints each invalid graph's key and its violations (duplicate ids, edges to missing
    vertices, in/out edges that disagree, boxes outside [0,1], several or no image
    vertices, cycles), then a summary. Unreadable input also exits non-zero.
    """
    checked = invalid = 0
    with GraphSource(path, validate=False) as source:
        try:
            for key, graph in source.graphs():
                checked += 1
                problems = graph.validate()
                if problems:
                    invalid += 1
                    click.echo(f"{key}: {plural(len(problems), 'problem')}")
                    for p in problems[:MAX_PROBLEMS_SHOWN]:
                        click.echo(f"  - {p}")
                    if len(problems) > MAX_PROBLEMS_SHOWN:
                        click.echo(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        except Exception:
            # The error itself is printed by handle_errors; say how far the check got first.
            click.echo(f"Stopped after {plural(checked, 'graph')} "
                       f"({invalid} invalid): {path} could not be read further.", err=True)
            raise
        failed = source.n_failed
        damaged = source.damaged
    for key, message in damaged:
        click.echo(f"{key}: damaged: {message}")
    summary = f"{plural(checked, 'graph')} checked: {checked - invalid} valid, {invalid} invalid"
    if damaged:
        summary += f", {len(damaged)} damaged (unreadable; gbc salvage copies the rest)"
    if failed:
        summary += f" ({plural(failed, 'failed image')} in the store)"
    click.echo(summary + ".")
    if invalid or damaged:
        click.get_current_context().exit(1)
