import pytest
from PIL import Image

from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.synthetic import synthetic_graph
from gbc.viz.render import (
    FADED,
    LABEL_COLOURS,
    draw_boxes,
    draw_graph,
    layered_layout,
    render_graph,
    vertex_name,
)

GREY = (128, 128, 128)


def _graph():
    """image -> cat (left), dogs composition (right) -> dogs_0, dogs_1; relation [cat|dogs]."""

    def v(vid, label, box):
        return Vertex(vertex_id=vid, bbox=Bbox.from_xyxy(box), label=label,
                      descs=[Description(text=f"about {vid}", label="detail")])

    vs = {
        "": v("", "image", (0, 0, 1, 1)),
        "cat": v("cat", "entity", (0.05, 0.1, 0.35, 0.5)),
        "dogs": v("dogs", "composition", (0.5, 0.2, 0.95, 0.9)),
        "dogs_0": v("dogs_0", "entity", (0.55, 0.3, 0.7, 0.8)),
        "dogs_1": v("dogs_1", "entity", (0.75, 0.3, 0.9, 0.8)),
        "[cat|dogs]": v("[cat|dogs]", "relation", (0.02, 0.05, 0.98, 0.95)),
    }
    edges = [("", "cat", "cat"), ("", "dogs", "dogs"), ("dogs", "dog 1", "dogs_0"), ("dogs", "dog 2", "dogs_1"),
             ("", "cat", "[cat|dogs]"), ("", "dogs", "[cat|dogs]"), ("[cat|dogs]", "cat", "cat"),
             ("[cat|dogs]", "dogs", "dogs")]
    for s, t, d in edges:
        e = Edge(source=s, text=t, target=d)
        vs[s].out_edges.append(e)
        vs[d].in_edges.append(e.model_copy())
    g = GbcGraph(vertices=list(vs.values()), img_path="pets.jpg")
    assert g.validate() == []
    return g


def _close(pixel, colour, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour))


def _left_edge_mid(box, w, h):
    x0, y0, x1, y1 = Bbox.from_xyxy(box).to_pixels(w, h)
    return x0, (y0 + y1) // 2


def _bottom_edge_mid(box, w, h):
    x0, y0, x1, y1 = Bbox.from_xyxy(box).to_pixels(w, h)
    return (x0 + x1) // 2, y1 - 1


@pytest.mark.parametrize(
    "vertex_id, label, box",
    [
        ("cat", "entity", (0.05, 0.1, 0.35, 0.5)),
        ("dogs_0", "entity", (0.55, 0.3, 0.7, 0.8)),
        ("dogs", "composition", (0.5, 0.2, 0.95, 0.9)),
        ("[cat|dogs]", "relation", (0.02, 0.05, 0.98, 0.95)),
    ],
)
def test_box_edges_have_the_label_colour(vertex_id, label, box):
    image = Image.new("RGB", (600, 400), GREY)
    out = draw_boxes(image, _graph())
    assert out.size == image.size and image.getpixel((0, 0)) == GREY  # input untouched
    for point in (_left_edge_mid(box, 600, 400), _bottom_edge_mid(box, 600, 400)):
        assert _close(out.getpixel(point), LABEL_COLOURS[label]), (point, out.getpixel(point))
    # the inside of a box stays the image
    x0, y0, x1, y1 = Bbox.from_xyxy(box).to_pixels(600, 400)
    assert out.getpixel(((x0 + x1) // 2, (y0 + y1) // 2 + 3)) in (GREY,) or label == "relation"


def test_highlight_fades_vertices_away_from_it():
    image = Image.new("RGB", (600, 400), GREY)
    out = draw_boxes(image, _graph(), highlight="dogs_0")
    # dogs_0 and its parent dogs keep their colours; cat (not a neighbour) is faded
    assert _close(out.getpixel(_left_edge_mid((0.55, 0.3, 0.7, 0.8), 600, 400)), LABEL_COLOURS["entity"])
    assert _close(out.getpixel(_bottom_edge_mid((0.5, 0.2, 0.95, 0.9), 600, 400)), LABEL_COLOURS["composition"])
    assert _close(out.getpixel(_left_edge_mid((0.05, 0.1, 0.35, 0.5), 600, 400)), FADED)


def test_render_graph_size_and_panels():
    image = Image.new("RGB", (600, 400), GREY)
    out = render_graph(_graph(), image, height=400)
    assert out.height == 400
    assert out.width > 600  # the image panel (600 wide at this height) plus the graph panel
    panel = out.crop((600, 0, out.width, 400))
    colours = panel.getcolors(maxcolors=1 << 20)
    for label, rgb in LABEL_COLOURS.items():
        assert sum(n for n, c in colours if _close(c, rgb, 10)) > 50, label


def test_render_without_image_uses_a_blank_canvas():
    g = synthetic_graph(0)
    out = render_graph(g, height=300)
    assert out.height == 300 and out.width > 400


def test_render_rejects_unknown_highlight():
    with pytest.raises(KeyError):
        render_graph(_graph(), highlight="nope")


def test_layered_layout_puts_relations_at_the_bottom_and_spreads_layers():
    g = synthetic_graph(4)
    pos = layered_layout(g)
    assert set(pos) == {v.vertex_id for v in g.vertices}
    assert pos[""][1] == 0
    bottom = max(layer for _, layer in pos.values())
    for v in g.vertices:
        x, layer = pos[v.vertex_id]
        assert 0 <= x <= 1
        assert (layer == bottom) == (v.label == "relation")
    by_layer = {}
    for x, layer in pos.values():
        by_layer.setdefault(layer, []).append(x)
    widest = max(len(xs) for xs in by_layer.values())
    for xs in by_layer.values():
        xs.sort()
        assert all(b - a >= 1 / widest - 1e-9 for a, b in zip(xs, xs[1:]))


@pytest.mark.parametrize("vid, label, name", [("", "image", "image"), ("image", "image", "image"),
                                              ("monk_robes", "entity", "robes"), ("trees_0", "entity", "trees 0"),
                                              ("[horse|snow_patch]", "relation", "horse | patch")])
def test_vertex_names(vid, label, name):
    assert vertex_name(Vertex(vertex_id=vid, bbox=Bbox.full(), label=label)) == name


def test_reference_graphs_render(reference_dir, reference_jsonl, tmp_path):
    graphs = [GbcGraph.from_json(line) for line in open(reference_jsonl, "rb") if line.strip()]
    biggest = max(graphs, key=lambda g: g.n_vertices)
    image = Image.open(reference_dir / "images" / biggest.img_path.rsplit("/", 1)[-1])
    out = render_graph(biggest, image, highlight=biggest.vertices[1].vertex_id, height=500)
    assert out.height == 500
    out.save(tmp_path / "biggest.png")
    assert draw_graph(biggest, height=300).height == 300
