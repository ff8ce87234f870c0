"""Replay the reference graphs through the engine and measure how much of them comes back.

The engine (``RecursiveAnnotator``) runs with ``replay:<graphs>`` as both MLLM and detector
and with the filters the reference already applied switched off (score threshold 0, no area
filters, no NMS / top-k / high-confidence / contained-box removal, no depth or vertex limits,
no crop margins). Every answer then comes from the recorded graph, so what differs between
the output and the recorded graphs is the engine's orchestration: id minting, duplicate
merging, composition and relation grouping, graph assembly.

Printed per image and in total: the share of reference vertices (id and label), edges
(source, text, target) and model-written captions (detail, short, composition, relation;
vertex id, label and text) found in the output, the extra vertices, and every miss grouped
by cause. The baseline column is what the reference pipeline's own orchestration reaches
when replayed the same way on the wiki file (99.1 % vertices, 97.0 % edges, 98.3 % captions).

The reproduction settings include ``queries.reference_parsing`` (answers read by the
reference's own rules); the column "without ref. parsing" is the same replay without it, and
``--patterns WORKDIR`` replays a small recording with the two patterns that setting decides.

    python bench/replay_reference.py [--graphs G.jsonl] [--images DIR] [--quick] [--json] [--cli WORKDIR]
    python bench/replay_reference.py --patterns WORKDIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "gbc-reference" / "wiki"

#: What the reference pipeline's own orchestration reaches when replayed on the wiki file.
REFERENCE_ORCHESTRATION = {"vertices": 0.991, "edges": 0.970, "captions": 0.983}
MODEL_WRITTEN = ("detail", "short", "composition", "relation")
#: Largest coordinate difference for a box to count as reproduced.
BOX_TOLERANCE = 1e-6
QUICK_IMAGES = 5

sys.path.insert(0, str(REPO))


def reproduction_config(seed: int = 0, queries: Optional[dict] = None, reference_parsing: bool = True):
    """Settings under which replayed answers give back the recorded graphs: no filter that the
    reference already applied, no bound the reference did not have, and answers read by the
    reference's rules (``queries.reference_parsing``)."""
    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.detection import DetectionSettings

    no_filters = {
        "score_threshold": 0.0,
        "nms_single": 0.0,  # 0 switches NMS off
        "nms_multiple": 0.0,
        "high_conf_tolerance": None,
        "topk": None,
        "min_rel_area": None,
        "min_abs_area_px": None,
        "max_rel_area": None,
        "remove_contained": False,
    }
    # Only the settings this engine version has (a renamed filter shows up as a miss, not a crash).
    no_filters = {k: v for k, v in no_filters.items() if k in DetectionSettings.model_fields}
    return AnnotateConfig.from_mapping({
        "detection": {"from_image": dict(no_filters), "from_entity": dict(no_filters)},
        "limits": {"max_depth": 1000, "max_vertices_per_image": 1_000_000, "crop_margin": 0.0,
                   "max_entities": 10, "images_in_flight": 8},
        "mllm": {"retries": 0}, "detector": {"retries": 0},
        "queries": {"reference_parsing": reference_parsing, **(queries or {})},
        "seed": seed,
    })


class CollectingStore:
    """The two store calls the engine makes, kept in memory."""

    def __init__(self):
        self.graphs: Dict[str, object] = {}
        self.failures: Dict[str, str] = {}

    def commit_image(self, key, graph, provenance=None, **_):
        self.graphs[key] = graph

    def mark_failed(self, key, reason, error_type=None, attempts=1, provenance=None, **_):
        self.failures[key] = f"{error_type}: {reason}"


# ---------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """Reference items found in the output of one image, and the misses with their causes."""

    key: str
    counts: Dict[str, List[int]] = field(default_factory=lambda: {k: [0, 0] for k in ("vertices", "edges", "captions")})
    extra: List[str] = field(default_factory=list)
    boxes: List[int] = field(default_factory=lambda: [0, 0])  # found vertices whose box matches
    checks: Dict[str, List[int]] = field(default_factory=dict)  # other fields: [equal, compared]
    box_misses: List[str] = field(default_factory=list)
    misses: List[Tuple[str, str, str]] = field(default_factory=list)  # (kind, cause, what)

    def add(self, kind: str, found: bool, cause: str = "", what: str = "") -> None:
        self.counts[kind][1] += 1
        if found:
            self.counts[kind][0] += 1
        else:
            self.misses.append((kind, cause, what))


def _norm(text: str) -> str:
    return " ".join(text.split())


def _name_of(vertex_id: str) -> str:
    """The object name at the end of an entity id (``"display case_crowns_1"`` -> ``"crowns"``)."""
    parts = [p for p in vertex_id.split("_") if p and not p.isdigit()]
    return parts[-1] if parts else vertex_id


def _fmt(box) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in box.to_xyxy()) + ")"


def _entity_parents(graph, vertex) -> List[str]:
    return [e.source for e in vertex.in_edges
            if e.source in graph.vertex_dict and graph.vertex_dict[e.source].label in ("image", "entity")]


def compare(key: str, ref, out) -> Comparison:
    """Compare one reference graph with the engine's graph of the same image (None: failed)."""
    from gbc.annotators.text import same_object

    c = Comparison(key)
    ours = {v.vertex_id: v for v in out.vertices} if out is not None else {}
    ref_ids = {v.vertex_id: v for v in ref.vertices}
    our_edges = Counter(e.key() for v in (out.vertices if out is not None else []) for e in v.out_edges)
    pairs = defaultdict(list)
    for (s, t, g) in our_edges:
        pairs[(s, g)].append(t)

    def vertex_cause(v) -> str:
        if out is None:
            return "image failed"
        if v.vertex_id in ours:
            return f"label differs (ours {ours[v.vertex_id].label})"
        if v.label == "relation":
            parents = {e.source for e in v.in_edges}
            if not parents & set(ours):
                return "relation parent missing"
            members = {e.target for e in v.out_edges}
            gone = sorted(m for m in members if m not in ours)
            if gone:
                return f"relation member missing ({vertex_cause(ref_ids[gone[0]]) if gone[0] in ref_ids else gone[0]})"
            return "relation not formed (member set differs)"
        if v.label == "composition":
            members = [e.target for e in v.out_edges]
            foreign = [m for m in members if not m.startswith(v.vertex_id + "_")]
            if foreign and not same_object(_name_of(v.vertex_id), _name_of(foreign[0])):
                return (f"merge of differently named objects ({_name_of(v.vertex_id)!r} boxes merged into "
                        f"{foreign[0]!r}: the reference's learned classifier)")
            have = [m for m in members if m in ours]
            return "composition not formed" + (f" ({len(have)}/{len(members)} members present)" if members else "")
        parents = _entity_parents(ref, v)
        if parents and not any(p in ours for p in parents):
            return "detection parent missing"
        if v.bbox.confidence is None:
            return "entity merged in the reference (box without confidence)"
        return "entity not created"

    for v in ref.vertices:
        found = v.vertex_id in ours and ours[v.vertex_id].label == v.label
        c.add("vertices", found, "" if found else vertex_cause(v), f"{v.label} {v.vertex_id!r}")
        if found:
            c.boxes[1] += 1
            mine = ours[v.vertex_id].bbox
            if max(abs(a - b) for a, b in zip(mine.to_xyxy(), v.bbox.to_xyxy())) <= BOX_TOLERANCE:
                c.boxes[0] += 1
            else:
                c.box_misses.append(f"{v.label} {v.vertex_id!r}: ours {_fmt(mine)} reference {_fmt(v.bbox)}")

    for v in ref.vertices:
        for e in v.out_edges:
            found = our_edges.get(e.key(), 0) > 0
            cause = ""
            if not found:
                if e.source not in ours or e.target not in ours:
                    gone = [x for x in (e.source, e.target) if x not in ours]
                    cause = "endpoint missing: " + vertex_cause(ref_ids[gone[0]]) if gone[0] in ref_ids else "endpoint missing"
                elif pairs.get((e.source, e.target)):
                    cause = "edge text differs"
                    what_ours = pairs[(e.source, e.target)]
                    c.add("edges", False, cause, f"{e.source!r} -[{e.text}]-> {e.target!r} (ours: {', '.join(map(repr, what_ours))})")
                    continue
                elif ref_ids.get(e.target) is not None and ref_ids[e.target].label == "entity" \
                        and v.label in ("image", "entity") and not e.target.startswith(
                            (e.text if e.source == "" else f"{e.source}_{e.text}")):
                    if same_object(e.text, _name_of(e.target)):
                        cause = "edge to a vertex merged from another parent not made"
                    else:
                        cause = (f"merge of differently named objects ({e.text!r} into {e.target!r}: "
                                 "the reference's learned classifier)")
                else:
                    cause = "edge not made"
            c.add("edges", found, cause, f"{e.source!r} -[{e.text}]-> {e.target!r}")

    our_caps = Counter((vid, d.label, d.text) for vid, v in ours.items() for d in v.descs if d.label in MODEL_WRITTEN)
    our_caps_norm = Counter((vid, d.label, _norm(d.text)) for vid, v in ours.items() for d in v.descs
                            if d.label in MODEL_WRITTEN)
    for v in ref.vertices:
        for d in v.descs:
            if d.label not in MODEL_WRITTEN:
                continue
            k = (v.vertex_id, d.label, d.text)
            if our_caps[k] > 0:
                our_caps[k] -= 1
                c.add("captions", True)
                continue
            if v.vertex_id not in ours:
                cause = "vertex missing: " + vertex_cause(v)
            elif our_caps_norm[(v.vertex_id, d.label, _norm(d.text))] > 0:
                cause = "whitespace differs"
            else:
                theirs = [x.text for x in ours[v.vertex_id].descs if x.label == d.label]
                if any(t.startswith(d.text.rstrip()) or d.text.startswith(t.rstrip()) for t in theirs):
                    cause = "text differs at the end (appended member names)"
                elif v.label == "relation":
                    cause = "relation sentence grouped elsewhere"
                else:
                    cause = "text differs"
            c.add("captions", False, cause, f"{d.label} of {v.vertex_id!r}: {d.text[:70]!r}")

    c.extra = [f"{v.label} {vid!r}" for vid, v in ours.items() if vid not in ref_ids]
    if out is not None:
        _check_fields(c, ref, out, ours)
    return c


def _check_fields(c: Comparison, ref, out, ours) -> None:
    """Informational checks of the fields the shares above do not cover."""

    def check(name: str, equal: bool) -> None:
        pair = c.checks.setdefault(name, [0, 0])
        pair[0] += int(equal)
        pair[1] += 1

    for attr in ("short_caption", "detail_caption", "img_size"):
        a, b = getattr(ref, attr, None), getattr(out, attr, None)
        check(attr, (tuple(a) if isinstance(a, (list, tuple)) else a) == (tuple(b) if isinstance(b, (list, tuple)) else b))
    common = [v.vertex_id for v in ref.vertices if v.vertex_id in ours]
    order = [v.vertex_id for v in out.vertices if v.vertex_id in set(common)]
    check("vertex order", order == common)
    for v in ref.vertices:
        if v.vertex_id not in ours:
            continue
        mine = ours[v.vertex_id]
        keep = set(common)
        for masks in ("sub_masks", "super_masks"):
            theirs = getattr(v, masks, None)
            if theirs is not None:
                check(masks, {m for m in theirs if m in keep} == {m for m in (getattr(mine, masks) or []) if m in keep})
        check("confidence", (v.bbox.confidence is None) == (mine.bbox.confidence is None)
              and (v.bbox.confidence is None or abs(v.bbox.confidence - mine.bbox.confidence) < 1e-6))
        hints = Counter(d.text for d in v.descs if d.label == "hardcode")
        if hints:
            got = Counter(d.text for d in mine.descs if d.label == "hardcode")
            for text, n in hints.items():
                for i in range(n):
                    check("hardcode hints", got[text] > i)


# ---------------------------------------------------------------------------- patterns
#: The objects of the pattern recording's image answer, in the order its list named them.
PATTERN_LISTED = ["table", "bowls", "cup", "plate", "fork", "knife", "spoon", "napkin", "vase", "flowers",
                  "candle", "glass"]


def write_reference_patterns(folder: Path) -> Tuple[Path, Path]:
    """Write a small recording in the reference pipeline's output layout with the two patterns
    its rules decide, and its image; returns (graphs file, images folder).

    (a) The image answer listed 12 objects: the reference keeps the first 10 of the list and
    also every object tagged in the concise caption ("glass"), but not "candle" (listed 11th,
    not tagged). (b) A relation answer wrote ``[bowl]`` while the entity is ``bowls``: the
    reference does not make it a member, so the relation is ``[spoon|table]`` and its sentence
    keeps the bracket.
    """
    from PIL import Image

    from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex

    folder.mkdir(parents=True, exist_ok=True)
    images = folder / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (320, 240), (180, 150, 110)).save(images / "kitchen_table.png")
    children = ["glass"] + PATTERN_LISTED[:10]  # concise-caption-only objects first, then the list
    boxes = {name: (0.02 + 0.08 * i, 0.1 + 0.05 * (i % 3), 0.09 + 0.08 * i, 0.5 + 0.05 * (i % 3))
             for i, name in enumerate(children)}
    relations = {"[spoon|table]": (["spoon", "table"], "The [bowl] is between the spoon and the table."),
                 "[glass|table]": (["glass", "table"], "The glass stands on the table.")}
    edges = [("", name, name) for name in children]
    for rid, (members, _) in relations.items():
        edges += [("", m, rid) for m in members] + [(rid, m, m) for m in members]

    def vertex(vid, label, box, descs, confidence=None):
        return Vertex(vertex_id=vid, label=label, bbox=Bbox.from_xyxy(box, confidence=confidence),
                      descs=[Description(text=t, label=lab) for t, lab in descs],
                      out_edges=[Edge(source=s_, text=t, target=g) for s_, t, g in edges if s_ == vid],
                      in_edges=[Edge(source=s_, text=t, target=g) for s_, t, g in edges if g == vid])

    detail = ("A wooden table holds bowls, a cup, a plate, a fork, a knife, a spoon, a napkin, "
              "a vase with flowers, a candle and a glass.")
    vertices = [vertex("", "image", (0, 0, 1, 1), [(detail, "detail"), ("A table with bowls, a spoon and a glass.", "short")])]
    vertices += [vertex(name, "entity", boxes[name], [(f"A close view of the {name}.", "detail")], 0.9 - 0.01 * i)
                 for i, name in enumerate(children)]
    for rid, (members, sentence) in relations.items():
        union = (min(boxes[m][0] for m in members), min(boxes[m][1] for m in members),
                 max(boxes[m][2] for m in members), max(boxes[m][3] for m in members))
        vertices.append(vertex(rid, "relation", union, [(sentence, "relation")]))
    graph = GbcGraph(vertices=vertices, img_path="images/kitchen_table.png", img_size=(320, 240),
                     short_caption=vertices[0].descs[1].text, detail_caption=detail)
    path = folder / "reference_patterns.jsonl"
    path.write_text(graph.to_json().decode() + "\n")
    return path, images


# ---------------------------------------------------------------------------- running
def run_replay(graphs_path: Path, images_dir: Path, limit: Optional[int] = None, seed: int = 0, config=None,
               queries: Optional[dict] = None, reference_parsing: bool = True):
    """Annotate the reference images with the replay backends (under ``reproduction_config``
    unless ``config`` is given); returns (reference graphs by key, store with the results, run
    summary, wall seconds)."""
    from gbc.annotators.backends.registry import create_detector, create_mllm
    from gbc.annotators.backends.replay import ReplayIndex
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import ImageSource

    index = ReplayIndex.for_file(graphs_path)
    sources, refs = [], {}
    for rec in index.images:
        name = (rec.graph.img_path or rec.graph.img_url or "").rsplit("/", 1)[-1]
        path = images_dir / name
        if not path.exists():
            raise SystemExit(f"Error: image {name} of {graphs_path} is not in {images_dir}")
        sources.append(ImageSource(key=name, path=str(path)))
        refs[name] = rec.graph
        if limit and len(sources) >= limit:
            break
    config = config if config is not None else reproduction_config(seed, queries, reference_parsing)
    spec = f"replay:{graphs_path}"
    annotator = RecursiveAnnotator(config, create_mllm(spec), create_detector(spec))
    store = CollectingStore()
    start = time.perf_counter()
    summary = annotator.run(sources, store)
    return refs, store, summary, time.perf_counter() - start


def _sum_checks(comparisons: List[Comparison]) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {}
    for c in comparisons:
        for name, (ok, n) in c.checks.items():
            pair = out.setdefault(name, [0, 0])
            pair[0] += ok
            pair[1] += n
    return out


def run_replay_cli(graphs_path: Path, images_dir: Path, workdir: Path, limit: Optional[int] = None, seed: int = 0):
    """The same replay through the command line: ``gbc annotate`` with the reproduction settings
    in a YAML file, into an LMDB store that is then read back. Same return values as
    ``run_replay`` (the summary is the store's status counts)."""
    import subprocess

    import yaml

    import gbc
    from gbc.annotators.backends.replay import ReplayIndex

    index = ReplayIndex.for_file(graphs_path)
    refs, files = {}, []
    for rec in index.images[: limit or None]:
        name = (rec.graph.img_path or rec.graph.img_url or "").rsplit("/", 1)[-1]
        refs[name] = rec.graph
        files.append(str(images_dir / name))
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "reproduction.yaml"
    config_file.write_text(yaml.safe_dump(reproduction_config(seed).model_dump(mode="json")))
    store_path = workdir / "replayed.lmdb"
    spec = f"replay:{graphs_path}"
    cmd = [sys.executable, "-m", "gbc.cli.main", "annotate", *files, "-o", str(store_path),
           "--config", str(config_file), "--mllm", spec, "--detector", spec]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"Error: gbc annotate failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    store = CollectingStore()
    with gbc.open_store(store_path) as db:
        for key, graph in db.items():
            store.graphs[key] = graph
        for key, status in db.statuses():
            if status.status == "failed":
                store.failures[key] = f"{status.error_type}: {status.reason}"

    class _Summary:
        model_calls = 0

    return refs, store, _Summary(), elapsed


def _share(pair: List[int]) -> float:
    return pair[0] / pair[1] if pair[1] else 1.0


def _totals(comparisons: List[Comparison]) -> Dict[str, List[int]]:
    totals = {k: [0, 0] for k in ("vertices", "edges", "captions")}
    for c in comparisons:
        for k, (f, n) in c.counts.items():
            totals[k][0] += f
            totals[k][1] += n
    return totals


def _shares(comparisons: Optional[List[Comparison]]) -> Optional[dict]:
    if comparisons is None:
        return None
    return ({k: round(_share(v), 4) for k, v in _totals(comparisons).items()}
            | {"extra_vertices": sum(len(c.extra) for c in comparisons)})


def report(refs, store, comparisons: List[Comparison], summary, elapsed: float,
           default_comparisons: Optional[List[Comparison]] = None,
           plain_comparisons: Optional[List[Comparison]] = None) -> dict:
    """The result as a JSON-ready dict (``default_comparisons``: the same replay under the
    engine's default settings, reported as a baseline; ``plain_comparisons``: under the
    reproduction settings without ``queries.reference_parsing``)."""
    totals = _totals(comparisons)
    extra = sum(len(c.extra) for c in comparisons)
    causes: Dict[str, List[Tuple[str, str, str]]] = defaultdict(list)
    for c in comparisons:
        for kind, cause, what in c.misses:
            causes[f"{kind}: {cause}"].append((c.key, kind, what))
        for what in c.extra:
            causes["extra vertex"].append((c.key, "vertices", what))
    return {
        "images": len(comparisons),
        "failed": sorted(store.failures.items()),
        "totals": {k: {"found": f, "reference": n, "share": round(_share([f, n]), 4)} for k, (f, n) in totals.items()},
        "extra_vertices": extra,
        "extra_share": round(extra / max(1, totals["vertices"][1]), 4),
        "baseline": REFERENCE_ORCHESTRATION,
        "default_settings": _shares(default_comparisons),
        "without_reference_parsing": _shares(plain_comparisons),
        "checks": _sum_checks(comparisons),
        "boxes": {"equal": sum(c.boxes[0] for c in comparisons), "of": sum(c.boxes[1] for c in comparisons),
                  "differing": [f"{c.key}: {m}" for c in comparisons for m in c.box_misses]},
        "per_image": {c.key: {k: v for k, v in c.counts.items()} | {"extra": len(c.extra)} for c in comparisons},
        "misses_by_cause": {cause: [f"{key}: {what}" for key, _, what in items] for cause, items in sorted(causes.items())},
        "elapsed_s": round(elapsed, 3),
        "model_calls": summary.model_calls,
    }


def print_report(result: dict, out=sys.stdout) -> None:
    w = out.write
    w(f"{'image':34} {'vertices':>11} {'edges':>11} {'captions':>11} {'extra':>5}\n")
    for key, row in result["per_image"].items():
        cells = " ".join(f"{row[k][0]:>4}/{row[k][1]:<4} " for k in ("vertices", "edges", "captions"))
        w(f"{key[:34]:34} {cells}{row['extra']:>5}\n")
    w("\n")
    default = result.get("default_settings") or {}
    plain = result.get("without_reference_parsing") or {}
    w(f"{'total':12} {'found':>7} {'of':>5} {'share':>8} {'reference orch.':>16} {'ratio':>7}"
      f" {'without ref. parsing':>21} {'default settings':>17}\n")
    for k, t in result["totals"].items():
        base = result["baseline"][k]
        p = f"{100 * plain[k]:>20.1f}%" if k in plain else f"{'':>21}"
        d = f"{100 * default[k]:>16.1f}%" if k in default else ""
        w(f"{k:12} {t['found']:>7} {t['reference']:>5} {100 * t['share']:>7.1f}% {100 * base:>15.1f}% "
          f"{t['share'] / base:>7.3f} {p} {d}\n")
    p = f"{plain['extra_vertices']:>21}" if plain else f"{'':>21}"
    d = f"{default['extra_vertices']:>17}" if default else ""
    w(f"{'extra':12} {result['extra_vertices']:>7} {'':>5} {100 * result['extra_share']:>7.1f}% {0.0:>15.1f}% "
      f"{'':>7} {p} {d}\n")
    boxes = result["boxes"]
    w(f"boxes of found vertices equal to the reference (within {BOX_TOLERANCE:g}): {boxes['equal']}/{boxes['of']}\n")
    w("other fields (equal / compared): " + ", ".join(
        f"{name} {ok}/{n}" for name, (ok, n) in result["checks"].items()) + "\n")
    w(f"\n{result['images']} images, {result['model_calls']} backend calls, {result['elapsed_s']:.2f} s\n")
    for key, reason in result["failed"]:
        w(f"FAILED {key}: {reason}\n")
    if boxes["differing"]:
        w("\nboxes that differ\n")
        for item in boxes["differing"]:
            w(f"      {item}\n")
    if result["misses_by_cause"]:
        w("\nmisses by cause\n")
    for cause, items in result["misses_by_cause"].items():
        w(f"  {cause} ({len(items)})\n")
        for item in items:
            w(f"      {item}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=Path, default=DEFAULT_DIR / "wiki_gbc_graphs.jsonl")
    parser.add_argument("--images", type=Path, default=DEFAULT_DIR / "images")
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK_IMAGES} images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--same-object", choices=["rule", "semantic"], default=None,
                        help="queries.same_object of the engine (default: the engine's default)")
    parser.add_argument("--semantic-threshold", type=float, default=None, help="queries.semantic_threshold")
    parser.add_argument("--cli", type=Path, metavar="WORKDIR",
                        help="run `gbc annotate` in a subprocess (store and config written to WORKDIR)")
    parser.add_argument("--patterns", type=Path, metavar="WORKDIR",
                        help="replay a small recording written to WORKDIR with the two patterns that "
                             "queries.reference_parsing decides (more than 10 objects; [bowl] for bowls)")
    args = parser.parse_args(argv)
    if args.patterns:
        args.graphs, args.images = write_reference_patterns(args.patterns)
    if not args.graphs.exists():
        print(f"Error: no graphs file {args.graphs}", file=sys.stderr)
        return 2
    limit = QUICK_IMAGES if args.quick else None
    queries = {k: v for k, v in (("same_object", args.same_object), ("semantic_threshold", args.semantic_threshold))
               if v is not None}
    if args.cli:
        refs, store, summary, elapsed = run_replay_cli(args.graphs, args.images, args.cli, limit, args.seed)
    else:
        refs, store, summary, elapsed = run_replay(args.graphs, args.images, limit, args.seed, queries=queries)
    comparisons = [compare(key, ref, store.graphs.get(key)) for key, ref in refs.items()]
    # Baseline measured in the same run: the engine's shipped default settings (filters on).
    from gbc.annotators.config import AnnotateConfig

    _, default_store, _, _ = run_replay(args.graphs, args.images, limit, args.seed, AnnotateConfig(seed=args.seed))
    default = [compare(key, ref, default_store.graphs.get(key)) for key, ref in refs.items()]
    # The same reproduction settings but the engine's own answer rules.
    _, plain_store, _, _ = run_replay(args.graphs, args.images, limit, args.seed, queries=queries,
                                      reference_parsing=False)
    plain = [compare(key, ref, plain_store.graphs.get(key)) for key, ref in refs.items()]
    result = report(refs, store, comparisons, summary, elapsed, default, plain)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
