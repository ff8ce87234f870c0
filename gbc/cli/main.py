"""Entry point of the ``gbc`` command.

Commands are registered by name and imported only when used, so ``gbc --help`` and the
light commands never import torch, transformers, pyarrow or ray.
"""

from __future__ import annotations

import functools
import importlib

import click

from gbc._version import __version__

# command name -> "module:attribute" of a click command
COMMANDS = {
    "annotate": "gbc.cli.annotate:annotate",
    "backends": "gbc.cli.backends:backends",
    "convert": "gbc.cli.files:convert",
    "export": "gbc.cli.export:export",
    "filter": "gbc.cli.filter:filter_command",
    "ls": "gbc.cli.inspect:ls",
    "merge": "gbc.cli.merge:merge",
    "render": "gbc.cli.render:render",
    "salvage": "gbc.cli.salvage:salvage",
    "score": "gbc.cli.score:score",
    "show": "gbc.cli.inspect:show",
    "stats": "gbc.cli.inspect:stats",
    "validate": "gbc.cli.inspect:validate",
    "view": "gbc.cli.view:view",
}

SHORT_HELP = {
    "annotate": "Annotate image folders into GBC graphs (LMDB store).",
    "backends": "List the registered model backends and their options.",
    "convert": "Convert graphs between JSONL, JSON, Parquet and LMDB stores.",
    "export": "Export captions (and images) for CLIP training.",
    "filter": "Drop captions by CLIP score, bottom percent per label or toxicity.",
    "ls": "List the image keys of a store or graph file.",
    "merge": "Merge store shards into one store.",
    "render": "Draw a graph over its image, beside the graph itself.",
    "salvage": "Copy every graph still readable out of a damaged store.",
    "score": "Score every caption: CLIP-style models against its region, toxicity.",
    "show": "Print one graph as a readable tree.",
    "stats": "Summary statistics of a set of graphs (as in the GBC paper).",
    "validate": "Check every graph's invariants; non-zero exit when one is invalid.",
    "view": "Browse, search and inspect graphs in a local web page.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gbc")
@click.pass_context
def cli(ctx):
    """gbc: graph-based captioning of images.

    Annotate image folders into GBC graphs, inspect and convert them, and export their
    captions for CLIP training.
    """
    from gbc.store import health

    # Commands walk a store's pages in a child process (once per change) before opening it,
    # so that damage is reported instead of killing the command by a signal.
    health.DEEP_CHECK = True
    ctx.call_on_close(functools.partial(setattr, health, "DEEP_CHECK", False))


if __name__ == "__main__":  # pragma: no cover
    cli()
