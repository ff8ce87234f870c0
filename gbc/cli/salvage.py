"""``gbc salvage``: copy every graph that can still be read out of a damaged store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gbc.cli.common import handle_errors


@click.command("salvage")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="New store to write (must not exist).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def salvage(store: Path, out: Path, as_json: bool):
    """Copy every graph, status and provenance of the damaged STORE that can still be read
    into the new store OUT, and say how many graphs could not be read.

    The damaged file is read only by child processes: a page that crashes LMDB costs the
    graphs on that page, never the run. Exit 0 when every graph was recovered, 1 when some
    were lost (OUT then holds all the others; `gbc annotate` into OUT redoes the lost images).

    \b
    Example:
      gbc salvage run.lmdb -o run-rescued.lmdb
    """
    from gbc.store.salvage import MAX_KEYS_LISTED, salvage_store

    report = salvage_store(store, out)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"salvaged {store} into {out}: {report.graphs_copied} graph(s) copied, "
                   f"{report.failed_copied} failed image record(s) copied, {report.graphs_lost} graph(s) could not be read")
        for key in report.lost_keys:
            click.echo(f"  lost: {key}")
        if report.graphs_lost > len(report.lost_keys) and len(report.lost_keys) >= MAX_KEYS_LISTED:
            click.echo(f"  ... and {report.graphs_lost - len(report.lost_keys)} more")
        for note in report.notes:
            click.echo(f"  note: {note}")
    if report.graphs_lost:
        click.get_current_context().exit(1)
