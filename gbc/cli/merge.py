"""``gbc merge``: merge store shards (from ``--shard i/N`` jobs or a Ray run) into one store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gbc.cli.common import handle_errors, progress


def _expand(paths):
    """Stores as given; a folder that is not a store stands for the stores inside it."""
    from gbc.store.shards import find_shards

    sources = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not (path / "data.mdb").exists():
            found = find_shards(path)
            if not found:
                raise click.ClickException(f"{path} is neither a graph store nor a folder of *.lmdb stores")
            sources.extend(found)
        else:
            sources.append(path)
    return sources


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Store to merge into (created when missing; an existing one counts as the first source).")
@click.option("--on-conflict", type=click.Choice(["error", "keep-first", "keep-last", "skip-identical"]),
              default="error", show_default=True,
              help="What to do when two sources hold different graphs for one image.")
@click.option("--remove-sources", is_flag=True, help="Delete the shard stores after a successful merge.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def merge(shards, out, on_conflict, remove_sources, as_json):
    """Merge the graph stores SHARDS into the store OUT.

    SHARDS are stores (``*.lmdb``) or folders of stores (such as ``OUT.lmdb/shards`` left by
    ``gbc annotate --ray --no-merge``). Graphs, statuses and provenance are copied; an image
    done in one shard and failed in another ends up done; images whose graphs are identical
    in several shards are fine; different graphs for one image stop the merge before anything
    is written, unless --on-conflict says which to keep.

    \b
    Example (Slurm array of 8 jobs, then one merge):
      gbc annotate imgs/ -o part-$SLURM_ARRAY_TASK_ID.lmdb --shard $SLURM_ARRAY_TASK_ID/8 ...
      gbc merge part-*.lmdb -o all.lmdb
    """
    from gbc.distributed.merge import merge_stores
    from gbc.store.writer_lock import WriterLock

    sources = _expand(shards)
    bars = [progress(desc="merge: planning", unit="img")]

    def report(stage, n):
        if stage == "copy" and len(bars) == 1:  # the plan is made: the shards are copied together
            bars[0].close()
            bars.append(progress(desc=f"merge: copying {len(sources)} store(s)", unit="graph"))
        bars[-1].update(n)

    try:
        # one writer at a time: a merge into a store that a run (or another merge) is writing is refused
        with WriterLock(out, command="gbc merge"):
            summary = merge_stores(sources, out, on_conflict=on_conflict, progress=report,
                                   remove_sources=remove_sources)
    finally:
        bars[-1].close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"merged {len(summary['sources'])} store(s) into {summary['out']} in {summary['seconds']:.1f} s")
    click.echo(f"  images in the sources: {summary['keys']}  copied: {summary['copied']}  "
               f"in several stores: {summary['duplicates']}  identical duplicates: {summary['identical']}")
    click.echo(f"  output now holds: {summary['done']} done, {summary['failed']} failed")
    if summary["conflicts"]:
        shown = ", ".join(summary["conflict_keys"])
        verb = "left out" if on_conflict == "skip-identical" else f"resolved by {on_conflict}"
        click.echo(f"  conflicts ({verb}): {summary['conflicts']}: {shown}")
