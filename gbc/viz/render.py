"""Pictures of one graph: its boxes over the image, and the graph itself.

Drawing follows one contract, ``annotate(scene, data) -> scene``: ``draw_boxes(image,
graph)`` returns a new image with every vertex box drawn in the colour of its label and
named. ``draw_graph(graph)`` draws the graph with a layered layout (the image on top, each
level of entities and compositions below its parents, relations in a band at the bottom
with dashed links to their members). ``render_graph`` puts both side by side.

>>> from gbc.schemas.synthetic import synthetic_graph
>>> picture = render_graph(synthetic_graph(0))  # no image: boxes over a plain canvas
>>> picture.size[1]
800
"""

from __future__ import annotations

import textwrap
from typing import Dict, List, Optional, Sequence, Set, Tuple

from gbc.schemas import GbcGraph, Vertex

#: RGB colour of each vertex label (colour-blind safe palette).
LABEL_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "image": (214, 39, 40),
    "entity": (31, 119, 180),
    "composition": (44, 160, 44),
    "relation": (255, 127, 14),
}
#: Height in pixels of the picture made by ``render_graph``.
DEFAULT_HEIGHT = 800
#: Widest graph panel, in multiples of the height (very wide graphs are squeezed, not cropped).
MAX_GRAPH_ASPECT = 3.0
#: Characters per line of a vertex name in the graph panel.
NAME_WRAP = 16
#: Colour of vertices and boxes that are not near the highlighted vertex.
FADED = (200, 200, 200)


def vertex_name(v: Vertex) -> str:
    """A short readable name: ``image`` for the root, ``a | b`` for relation ``[a|b]``, else the
    last part of the id path (``"monk_robes"`` -> ``robes``, ``"trees_0"`` -> ``trees 0``)."""
    vid = v.vertex_id
    if v.label == "image":
        return vid or "image"
    if v.label == "relation" and vid.startswith("[") and vid.endswith("]"):
        return " | ".join(vertex_name_from_id(m) for m in vid[1:-1].split("|"))
    return vertex_name_from_id(vid)


def vertex_name_from_id(vid: str) -> str:
    parts = [p for p in vid.split("_") if p]
    if not parts:
        return vid or "image"
    if parts[-1].isdigit() and len(parts) > 1:
        return f"{parts[-2]} {parts[-1]}"
    return parts[-1]


def neighbourhood(graph: GbcGraph, vertex_id: Optional[str]) -> Optional[Set[str]]:
    """``vertex_id`` with its parents and children (``None`` when nothing is highlighted)."""
    if vertex_id is None:
        return None
    v = graph.vertex(vertex_id)  # KeyError names the missing id
    return {vertex_id} | {e.source for e in v.in_edges} | {e.target for e in v.out_edges}


# ---------------------------------------------------------------------------- boxes
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(8, size))


def draw_boxes(image, graph: GbcGraph, highlight: Optional[str] = None, labels: Sequence[str] = ("entity", "composition", "relation")):
    """A copy of ``image`` with the box of each vertex whose label is in ``labels`` drawn and named.

    Relation boxes (unions of their members) are drawn thinner so entity boxes stay visible.
    With ``highlight`` the vertex and its neighbours are drawn boldly, the others faded.
    """
    from PIL import ImageDraw

    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    # Sizes follow the longer side, so names stay legible on narrow portrait images.
    ref = max(w, h)
    width = max(2, int(ref / 300))
    font = _font(int(ref / 48))
    near = neighbourhood(graph, highlight)
    # Large boxes first, so small ones and their names end up on top.
    vertices = sorted((v for v in graph.vertices if v.label in labels), key=lambda v: -v.bbox.area())
    if near is not None:  # the highlighted neighbourhood last, on top of the faded rest
        vertices.sort(key=lambda v: v.vertex_id in near)
    tags = []
    for v in vertices:
        colour = LABEL_COLOURS[v.label]
        line = width if v.label != "relation" else max(1, width // 2)
        if near is not None:
            if v.vertex_id not in near:
                colour, line = FADED, max(1, width // 2)
            elif v.vertex_id == highlight:
                line = width * 2
        box = v.bbox.to_pixels(w, h)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=colour, width=line)
        if near is None or v.vertex_id in near:
            tags.append((vertex_name(v), box, colour, line))
    # Names are drawn after every box so that no line crosses a name.
    placed: List[Tuple[int, int, int, int]] = []
    for name, box, colour, line in tags:
        tb = draw.textbbox((0, 0), name, font=font)
        tw, th = tb[2] - tb[0] + 2 * line, tb[3] - tb[1] + 2 * line
        tx, ty = _place_tag(box, tw, th, w, h, placed)
        placed.append((tx, ty, tx + tw, ty + th))
        # A white rim keeps a tag visible on a background of its own colour (a blue tag on sky).
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=colour, outline=(255, 255, 255), width=1)
        draw.text((tx + line - tb[0], ty + line - tb[1]), name, fill=(255, 255, 255), font=font)
    return out


def _place_tag(box, tw: int, th: int, w: int, h: int, placed) -> Tuple[int, int]:
    """Where a name tag of ``tw`` x ``th`` goes: the first free spot among the box's corners."""
    x0, y0, x1, y1 = box
    candidates = [(x0, y0 - th), (x0, y0), (x1 - tw, y0 - th), (x1 - tw, y0), (x0, y1 - th), (x1 - tw, y1 - th),
                  (x0, y1), (x1 - tw, y1)]
    # Crowded corners: walk down the box's left edge, then its right edge.
    steps = range(y0 + th, max(y0 + th, y1 - th), max(1, th))
    candidates += [(x0, y) for y in steps] + [(x1 - tw, y) for y in steps]
    clamped = [(min(max(0, x), max(0, w - tw)), min(max(0, y), max(0, h - th))) for x, y in candidates]
    for x, y in clamped:
        if not any(x < p[2] and p[0] < x + tw and y < p[3] and p[1] < y + th for p in placed):
            return x, y
    return clamped[0]


def blank_canvas(graph: GbcGraph, height: int = DEFAULT_HEIGHT):
    """A plain canvas with the image's aspect ratio (``img_size`` when known, else 4:3)."""
    from PIL import Image

    iw, ih = graph.img_size or (4, 3)
    return Image.new("RGB", (max(1, round(height * iw / ih)), height), (245, 245, 245))


# ---------------------------------------------------------------------------- graph layout
def layered_layout(graph: GbcGraph) -> Dict[str, Tuple[float, int]]:
    """``vertex id -> (x in [0, 1], layer)``: entities and compositions by depth along
    non-relation edges, relations in one layer below them; order within a layer follows
    the mean position of the parents (fewer crossings)."""
    index = graph.vertex_dict
    layer: Dict[str, int] = {}
    frontier = [v.vertex_id for v in graph.roots if v.label != "relation"]
    for vid in frontier:
        layer[vid] = 0
    while frontier:
        nxt = []
        for vid in frontier:
            for e in index[vid].out_edges:
                child = index.get(e.target)
                if child is not None and child.label != "relation" and e.target not in layer:
                    layer[e.target] = layer[vid] + 1
                    nxt.append(e.target)
        frontier = nxt
    bottom = max(layer.values(), default=-1) + 1
    for v in graph.vertices:
        if v.vertex_id not in layer:
            layer[v.vertex_id] = bottom  # relations, and vertices no root reaches
    rows: Dict[int, List[str]] = {}
    for v in graph.vertices:  # graph order breaks ties
        rows.setdefault(layer[v.vertex_id], []).append(v.vertex_id)
    widest = max(len(ids) for ids in rows.values())
    gap = 1.0 / widest
    x: Dict[str, float] = {}
    for level in sorted(rows):
        ids = rows[level]
        n = len(ids)
        if level == 0:
            for i, vid in enumerate(ids):
                x[vid] = (i + 0.5) / n
            continue

        def barycentre(vid: str) -> float:
            v = index[vid]
            # relations sit under their members; others under their parents
            refs = [e.target for e in v.out_edges] if v.label == "relation" else [e.source for e in v.in_edges]
            xs = [x[r] for r in refs if r in x]
            return sum(xs) / len(xs) if xs else 0.5

        wanted = sorted((barycentre(vid), vid) for vid in ids)
        xs = _spread([b for b, _ in wanted], gap)
        for (_, vid), value in zip(wanted, xs):
            x[vid] = value
    return {vid: (x[vid], layer[vid]) for vid in x}


def _spread(wanted: List[float], gap: float) -> List[float]:
    """Positions as close as possible to the sorted ``wanted`` ones, at least ``gap`` apart, in [gap/2, 1-gap/2]."""
    lo, hi = gap / 2, 1 - gap / 2
    xs: List[float] = []
    for value in wanted:
        xs.append(max(value, lo, xs[-1] + gap if xs else lo))
    for i in range(len(xs) - 1, -1, -1):
        xs[i] = min(xs[i], hi if i == len(xs) - 1 else xs[i + 1] - gap)
    return xs


def _edge_groups(graph: GbcGraph) -> Dict[Tuple[str, str], List[str]]:
    groups: Dict[Tuple[str, str], List[str]] = {}
    index = graph.vertex_dict
    for v in graph.vertices:
        for e in v.out_edges:
            if e.target in index:
                texts = groups.setdefault((e.source, e.target), [])
                if e.text not in texts:
                    texts.append(e.text)
    return groups


def draw_graph(graph: GbcGraph, highlight: Optional[str] = None, size: Optional[Tuple[int, int]] = None,
               height: int = DEFAULT_HEIGHT, dpi: int = 100):
    """The graph as a picture (``PIL.Image``): vertices coloured by label, edges named by their
    phrase when it differs from the child's name, a legend of the colours.

    ``size`` (width, height) in pixels; by default ``height`` high and as wide as the widest
    layer needs (at most ``MAX_GRAPH_ASPECT`` times the height).
    """
    from io import BytesIO

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, Patch
    from PIL import Image

    pos = layered_layout(graph)
    index = graph.vertex_dict
    n_layers = max((layer for _, layer in pos.values()), default=0) + 1
    widest = max((sum(1 for _, l in pos.values() if l == k) for k in range(n_layers)), default=1)
    if size is None:
        width = int(min(max(height * 0.8, widest * 150 * height / DEFAULT_HEIGHT), height * MAX_GRAPH_ASPECT))
        size = (width, height)
    width, height = size
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.92))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, n_layers - 0.5)
    ax.invert_yaxis()
    ax.axis("off")
    near = neighbourhood(graph, highlight)
    # Font shrinks when a layer is crowded so that names stay apart.
    fontsize = max(5.0, min(10.0, (width / dpi) * 72 / max(widest, 1) / 9))

    def xy(vid: str) -> Tuple[float, float]:
        x, layer = pos[vid]
        return x, float(layer)

    def faded(*ids: str) -> bool:
        return near is not None and not all(i in near for i in ids)

    for (src, dst), texts in _edge_groups(graph).items():
        to_relation = index[dst].label == "relation"
        from_relation = index[src].label == "relation"
        # relation -> member: dashed orange; parent -> relation (who asked): faint dotted grey.
        if faded(src, dst):
            colour, style, lw = "#dddddd", "-", 0.8
        elif from_relation:
            colour, style, lw = "#e6a15c", "--", 1.0
        elif to_relation:
            colour, style, lw = "#cccccc", ":", 0.8
        else:
            colour, style, lw = "#555555", "-", 1.2
        arrow = FancyArrowPatch(xy(src), xy(dst), arrowstyle="-|>", mutation_scale=9, color=colour,
                                linestyle=style, linewidth=lw, shrinkA=12, shrinkB=12, zorder=1)
        ax.add_patch(arrow)
        phrase = ", ".join(texts)
        # Parent -> relation edges repeat the members' names: not labelled.
        if not to_relation and phrase != vertex_name(index[dst]) and not faded(src, dst):
            (x0, y0), (x1, y1) = xy(src), xy(dst)
            # Near the child: labels of edges fanning out from one parent do not pile up.
            ax.text(x0 + (x1 - x0) * 0.7, y0 + (y1 - y0) * 0.7, textwrap.fill(phrase, NAME_WRAP), fontsize=fontsize * 0.85, color="#333333",
                    ha="center", va="center", zorder=3,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))

    for vid, (x, layer) in pos.items():
        v = index[vid]
        rgb = FADED if faded(vid) else LABEL_COLOURS[v.label]
        face = tuple(c / 255 for c in rgb)
        edge = "black" if vid == highlight else face
        ax.text(x, layer, textwrap.fill(vertex_name(v), NAME_WRAP), fontsize=fontsize, ha="center", va="center",
                color="white", zorder=4, fontweight="bold" if vid == highlight else "normal",
                bbox=dict(boxstyle="round,pad=0.35", fc=face, ec=edge, lw=2.5 if vid == highlight else 1))

    handles = [Patch(color=tuple(c / 255 for c in rgb), label=label) for label, rgb in LABEL_COLOURS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=4, frameon=False, fontsize=9)
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


# ---------------------------------------------------------------------------- both
def render_graph(graph: GbcGraph, image=None, highlight: Optional[str] = None, height: int = DEFAULT_HEIGHT):
    """The image with its boxes (left) beside the drawing of the graph (right), ``height`` pixels high.

    ``image`` is a ``PIL.Image`` (``None``: boxes over a plain canvas of the image's aspect).
    ``highlight`` is a vertex id drawn boldly with its neighbours, the rest faded.
    """
    from PIL import Image

    if highlight is not None:
        neighbourhood(graph, highlight)  # fail early on an unknown id
    if image is None:
        scene = blank_canvas(graph, height)
    else:
        scale = height / image.height
        scene = image.convert("RGB").resize((max(1, round(image.width * scale)), height), Image.Resampling.LANCZOS)
    left = draw_boxes(scene, graph, highlight=highlight)
    right = draw_graph(graph, highlight=highlight, height=height, dpi=max(50, round(100 * height / DEFAULT_HEIGHT)))
    if right.height != height:
        right = right.resize((max(1, round(right.width * height / right.height)), height), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (left.width + right.width, height), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out
