"""Synthetic GBC graphs of realistic size, for benchmarks and tests.

``synthetic_graph(i)`` builds a valid graph shaped like a GBC10M record: an image vertex,
entities (some in numbered groups with a composition vertex, some with parts), relation
vertices, and captions with lengths close to the released data. Deterministic in ``seed``.
"""

from __future__ import annotations

import random
from typing import Iterator, List

from gbc.schemas.bbox import Bbox, union_bboxes
from gbc.schemas.description import Description
from gbc.schemas.graph import Edge, GbcGraph, Vertex

_WORDS = (
    "the a small large red green wooden stone bright dark old young tall narrow wide soft "
    "rough shiny quiet busy distant near left right behind beside under above river tree "
    "house road sky cloud window door person dog cat boat car field mountain flower leaf "
    "table chair wall roof light shadow water grass street tower bridge hill"
).split()
_NAMES = ["tree", "house", "person", "dog", "boat", "car", "cloud", "window", "flower", "chair", "lamp", "bird"]


def _sentence(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n_words)]
    return " ".join(words).capitalize() + "."


def synthetic_graph(seed: int, layout: str = "gbc10m") -> GbcGraph:
    """A valid graph with about 12 vertices, 22 edges and 18 captions.

    ``layout="full"`` also fills the fields of the reference full layout (masks, full labels,
    image size).
    """
    rng = random.Random(seed)
    full = layout == "full"

    def desc(text: str, label: str, vertex_label: str) -> Description:
        if full:
            return Description.full_layout(text, label, vertex_label)
        return Description(text=text, label=label)

    vertices: List[Vertex] = []
    edges: List[Edge] = []
    names = rng.sample(_NAMES, 4)
    single_a, single_b, group, part = names
    root = Vertex(
        vertex_id="",
        bbox=Bbox.full(),
        label="image",
        descs=[
            desc(_sentence(rng, 70) + f" A {single_a} near the {single_b} and some {group}s.", "detail", "image"),
            desc(_sentence(rng, 18) + f" {single_a} {single_b} {group}s", "short", "image"),
        ],
    )
    vertices.append(root)

    def box() -> Bbox:
        x0, y0 = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
        return Bbox(left=x0, top=y0, right=x0 + rng.uniform(0.1, 0.4), bottom=y0 + rng.uniform(0.1, 0.4),
                    confidence=round(rng.uniform(0.35, 0.95), 6))

    def entity(vid: str, text_hint: str) -> Vertex:
        v = Vertex(vertex_id=vid, bbox=box(), label="entity",
                   descs=[desc(_sentence(rng, 34) + f" The {text_hint} has a {part}.", "detail", "entity")])
        vertices.append(v)
        return v

    a = entity(single_a, single_a)
    b = entity(single_b, single_b)
    edges += [Edge(source="", text=single_a, target=a.vertex_id), Edge(source="", text=single_b, target=b.vertex_id)]
    p = entity(f"{single_a}_{part}", part)
    edges.append(Edge(source=a.vertex_id, text=part, target=p.vertex_id))

    k = 3
    members = [entity(f"{group}s_{i}", group) for i in range(k)]
    comp = Vertex(
        vertex_id=f"{group}s",
        bbox=union_bboxes(m.bbox for m in members),
        label="composition",
        descs=[desc(_sentence(rng, 38), "composition", "composition")]
        + [desc(_sentence(rng, 15), "short", "composition") for _ in range(3)]
        + [desc(f"{group} {i + 1} is to the left of {group} {i + 2}.", "hardcode", "composition") for i in range(k - 1)],
    )
    vertices.append(comp)
    edges.append(Edge(source="", text=f"{group}s", target=comp.vertex_id))
    edges += [Edge(source=comp.vertex_id, text=f"{group} {i + 1}", target=m.vertex_id) for i, m in enumerate(members)]
    for m in members[:1]:
        q = entity(f"{m.vertex_id}_{part}", part)
        edges.append(Edge(source=m.vertex_id, text=part, target=q.vertex_id))

    rel_sets = [[single_a, single_b], [single_b, f"{group}s"], [single_a, single_b, f"{group}s"]]
    for members_ids in rel_sets:
        rid = "[" + "|".join(sorted(members_ids)) + "]"
        member_vertices = [v for v in vertices if v.vertex_id in members_ids]
        rel = Vertex(
            vertex_id=rid,
            bbox=union_bboxes(v.bbox for v in member_vertices),
            label="relation",
            descs=[desc(f"The {single_a} " + _sentence(rng, 14).lower(), "relation", "relation")],
        )
        vertices.append(rel)
        for mid in members_ids:
            edges.append(Edge(source="", text=mid, target=rid))
            edges.append(Edge(source=rid, text=mid, target=mid))

    index = {v.vertex_id: v for v in vertices}
    for e in edges:
        index[e.source].out_edges.append(e)
        index[e.target].in_edges.append(e.model_copy())
    graph = GbcGraph(
        vertices=vertices,
        img_url=f"https://example.org/images/{seed:08d}.jpg",
        img_path=f"images/{seed:08d}.jpg",
        original_caption=_sentence(rng, 12),
        short_caption=root.descs[1].text,
        detail_caption=root.descs[0].text,
    )
    if full:
        graph.img_size = (1024, 768)
        graph.mask_inside_threshold = 0.85
        graph.compute_masks()
    return graph


def synthetic_graphs(n: int, start: int = 0, layout: str = "gbc10m") -> Iterator[GbcGraph]:
    for i in range(start, start + n):
        yield synthetic_graph(i, layout=layout)
