"""Small graphs shared by the viewer's tests."""

from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.description import ClipScores

XSS = '<img src=x onerror=alert(1)>'
ODD_KEYS = ["with space.jpg", "ünïcødé/猫.png", "hash#tag.jpg", "what?.jpg", "a/b/c.jpg"]


def small_graph(img_path: str, caption: str, child: str = "dog", clip=None) -> GbcGraph:
    root = Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                  descs=[Description(text=caption, label="short",
                                     clip_scores=ClipScores(scores={"clip": clip}) if clip is not None else None)])
    kid = Vertex(vertex_id=child, bbox=Bbox(left=0.1, top=0.1, right=0.5, bottom=0.6, confidence=0.8), label="entity",
                 descs=[Description(text=f"The {child} is brown.", label="detail")])
    edge = Edge(source="", text=child, target=child)
    root.out_edges.append(edge)
    kid.in_edges.append(edge.model_copy())
    return GbcGraph(vertices=[root, kid], img_path=img_path)
