"""``gbc render``: one graph drawn over its image, beside the graph itself."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from gbc.cli.common import handle_errors
from gbc.schemas import GbcGraph


def find_graph(path: Path, key: str) -> Tuple[str, GbcGraph]:
    """The graph named ``key`` in a store or graph file: its image key (img_path, else img_url),
    else the base name of its img_path, else (files) its 0-based position."""
    from gbc.store.keys import key_from_name
    from gbc.store.reader import open_graphs, records_statuses

    key = key_from_name(key)  # a name typed as its raw bytes (not UTF-8) finds its escaped key
    with open_graphs(path, validate=False) as reader:
        graph = reader.get(key)
        if graph is not None:
            return key, graph
        by_position = not records_statuses(reader)  # a store's graphs are named by key, not position
        by_name = None
        for i, (k, graph) in enumerate(reader.items()):
            if k == key or (by_position and key.isdigit() and int(key) == i):
                return k, graph
            if by_name is None and graph.img_path and Path(graph.img_path).name == key:
                by_name = (k, graph)
    if by_name is not None:
        return by_name
    raise KeyError(f"no graph {key!r} in {path} (give an image key, an image file name or a position)")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("key")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Picture to write (.png or .jpg).")
@click.option("--images-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the images: img_path is looked up there, then its base name.")
@click.option("--allow-outside-root", is_flag=True,
              help="Also read an image file that resolves outside --images-root ('..', absolute path, symlink).")
@click.option("--vertex", "vertex_id", default=None,
              help="Highlight this vertex and its neighbours (use '' for an image vertex with an empty id).")
@click.option("--height", type=click.IntRange(200, 4000), default=800, show_default=True, help="Picture height in pixels.")
@handle_errors
def render(path: Path, key: str, out: Path, images_root: Optional[Path], allow_outside_root: bool, vertex_id: Optional[str], height: int):
    """Draw the graph KEY of PATH (a store or graph file) over its image, beside the graph.

    KEY is the graph's image key, the file name of its image, or (graph files) its position.
    Boxes are coloured by vertex label (image, entity, composition, relation) and named.
    Without its image the boxes are drawn over a blank canvas.

    \b
    Example:
      gbc render graphs.jsonl Wild_horses.jpg -o horses.png --images-root images/ --vertex horse
    """
    from gbc.export.images import locate_image
    from gbc.viz.render import render_graph

    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise click.BadParameter("the picture must end in .png, .jpg or .jpeg", param_hint="--output")
    try:
        found_key, graph = find_graph(path, key)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    if vertex_id is not None and vertex_id not in graph:
        ids = ", ".join(repr(v.vertex_id) for v in graph.vertices[:10])
        raise click.ClickException(f"no vertex {vertex_id!r} in graph {found_key!r} (ids: {ids}, ...)")
    image = None
    from gbc.export.source import recorded_image_roots

    # Without --images-root, the input folders the store recorded at annotate time.
    lookup = locate_image(graph.img_path, images_root, allow_outside_root,
                          () if images_root is not None else recorded_image_roots(path))
    source = lookup.path
    if lookup.refused is not None:
        click.echo(f"image of {found_key!r} refused: {lookup.refused} is outside the images root "
                   "(--allow-outside-root reads it); boxes drawn over a blank canvas", err=True)
    elif source is not None:
        from PIL import Image

        with Image.open(source) as im:
            image = im.convert("RGB")
    else:
        click.echo(f"image of {found_key!r} not found; boxes drawn over a blank canvas", err=True)
    picture = render_graph(graph, image=image, highlight=vertex_id, height=height)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    click.echo(str(out))
