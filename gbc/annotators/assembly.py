"""Turning a finished ``ImageJob`` into a ``GbcGraph`` in the released full layout.

Vertex order: the image, entities in minting order, compositions, relations. Edges follow the
reference rules (image/entity -> child named by the tag text; composition -> member named
``"<singular> <k>"``; parent -> relation once per member; relation -> member), and each edge
carries the ``span`` of its phrase in the parent's captions when it is mentioned there.
Vertices whose query found nothing (object not present, no caption) are left out together
with the edges that point at them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from gbc.schemas.bbox import Bbox, union_bboxes
from gbc.schemas.description import Description
from gbc.schemas.graph import Edge, EdgeSpan, GbcGraph, Vertex


def build_graph(job, mask_inside_threshold: float = 0.85) -> GbcGraph:
    """The graph of ``job`` (an ``ImageJob`` whose tasks are all done)."""
    text = job.settings.text
    budget = job.settings.max_vertices_per_image
    vertices: Dict[str, Vertex] = {}
    edges: List[Edge] = []

    def descs_of(pairs, vertex_label):
        return [Description.full_layout(t, label, vertex_label) for t, label in pairs]

    def span(texts: List[str], phrase: str) -> Optional[EdgeSpan]:
        found = text.first_mention(texts, phrase)
        return EdgeSpan(desc_index=found[0], start=found[1], end=found[2]) if found else None

    def add_edge(source: str, label: str, target: str, texts: List[str]) -> None:
        edges.append(Edge(source=source, text=label, target=target, span=span(texts, label)))

    # Composition and relation queries are sent when a parent's children have answered, so
    # their order in the job depends on timing (concurrent calls, latency); the graph takes
    # them in canonical order: parents in minting order, a parent's groups in phrase order.
    rank = {vid: i for i, vid in enumerate(job.order)}
    group_pos = {(vid, g.prefix): k for vid in job.order for k, g in enumerate(job.nodes[vid].groups)}
    compositions = sorted(job.compositions, key=lambda q: (rank[q.parent_id], group_pos.get((q.parent_id, q.vertex_id), -1)))
    relations = sorted(job.relations, key=lambda q: rank[q.parent_id])

    # --- image and entity vertices
    for vid in job.order:
        node = job.nodes[vid]
        if vid != "" and not (node.present and node.descs):
            continue
        label = "image" if vid == "" else "entity"
        bbox = Bbox.full() if vid == "" else node.bbox
        vertices[vid] = Vertex(vertex_id=vid, bbox=bbox, label=label, descs=descs_of(node.descs, label))

    # --- compositions with at least two members that exist
    comp_members: Dict[str, List[Tuple[int, str]]] = {}
    for query in compositions:
        members = [(k, m) for k, m in enumerate(query.members, 1) if m in vertices]
        if len(members) < 2 or not query.descs or query.parent_id not in vertices or len(vertices) >= budget:
            continue
        bbox = union_bboxes(vertices[m].bbox for _, m in members)
        vertices[query.vertex_id] = Vertex(vertex_id=query.vertex_id, bbox=bbox, label="composition",
                                           descs=descs_of(query.descs, "composition"))
        comp_members[query.vertex_id] = [(k, m) for k, m in members]

    def resolve(group) -> List[str]:
        """The vertices a parent's phrase points at: its composition, else its existing boxes."""
        if group.prefix in comp_members:
            return [group.prefix]
        return [t for t in group.targets if t in vertices]

    # --- edges of image and entity vertices
    for vid in job.order:
        if vid not in vertices:
            continue
        node = job.nodes[vid]
        texts = [d.text for d in vertices[vid].descs]
        for group in node.groups:
            for target in resolve(group):
                add_edge(vid, group.phrase, target, texts)

    # --- composition -> member edges ("tree 1", "tree 2", ...)
    for query in compositions:
        if query.vertex_id not in comp_members:
            continue
        texts = [d.text for d in vertices[query.vertex_id].descs]
        for k, member in comp_members[query.vertex_id]:
            add_edge(query.vertex_id, query.member_names[k - 1], member, texts)

    # --- relation vertices: one per set of >= 2 members named together
    for query in relations:
        parent = query.parent_id
        if parent not in vertices:
            continue
        groups = {g.prefix: g for g in job.nodes[parent].groups}
        by_id: Dict[str, dict] = {}
        for sentence, indices in query.relations:
            members = []
            for i in sorted(set(indices)):
                if 0 <= i < len(query.member_ids):
                    prefix = query.member_ids[i]
                    group = groups.get(prefix)
                    if group is not None and resolve(group):
                        members.append(i)
            if len(members) < 2:
                continue
            rid = "[" + "|".join(sorted(query.member_ids[i] for i in members)) + "]"
            entry = by_id.get(rid)
            if entry is None:
                if len(vertices) + len(by_id) >= budget:
                    job.notes.append(f"vertex budget reached: relation {rid!r} skipped")
                    continue
                entry = by_id[rid] = {"members": members, "sentences": []}
            if sentence not in entry["sentences"]:
                entry["sentences"].append(sentence)
        parent_texts = [d.text for d in vertices[parent].descs]
        for rid, entry in by_id.items():
            if rid in vertices:
                continue  # same member set from an earlier query of this parent
            targets = {i: resolve(groups[query.member_ids[i]]) for i in entry["members"]}
            bbox = union_bboxes(vertices[t].bbox for ts in targets.values() for t in ts)
            vertices[rid] = Vertex(vertex_id=rid, bbox=bbox, label="relation",
                                   descs=[Description.full_layout(s, "relation", "relation") for s in entry["sentences"]])
            rel_texts = entry["sentences"]
            for i in entry["members"]:
                add_edge(parent, query.member_names[i], rid, parent_texts)
            for i in entry["members"]:
                for target in targets[i]:
                    add_edge(rid, query.member_names[i], target, rel_texts)

    # --- attach edges on both ends
    for edge in edges:
        vertices[edge.source].out_edges.append(edge)
        vertices[edge.target].in_edges.append(edge.model_copy())

    root = vertices[""]
    graph = GbcGraph(
        vertices=list(vertices.values()),
        img_url=getattr(job, "img_url", None),
        img_path=job.key,
        original_caption=getattr(job, "original_caption", None),
        short_caption=next((d.text for d in root.descs if d.label == "short"), None),
        detail_caption=next((d.text for d in root.descs if d.label == "detail"), None),
        img_size=tuple(job.size),
        mask_inside_threshold=mask_inside_threshold,
    )
    graph.compute_masks(mask_inside_threshold)
    return graph
