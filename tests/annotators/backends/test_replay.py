"""The replay backends answer from recorded graphs in formats the engine's parsers read back."""

from __future__ import annotations

import json

import pytest

from gbc.annotators import parsers
from gbc.annotators.backends.base import BackendError, BackendUnavailable, DetectionRequest, MllmRequest
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.backends.replay import ReplayDetector, ReplayIndex, ReplayMllm, _monotone_scores
from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex


def _graph() -> GbcGraph:
    """A small recorded graph: a dog with a collar, two trees (the middle box of three was
    dropped) in a composition, a relation, and a merged vertex reached from two parents."""
    boxes = {
        "": (0, 0, 1, 1, None),
        "dog": (0.1, 0.4, 0.5, 0.9, 0.8),
        "dog_collar": (0.2, 0.5, 0.3, 0.55, 0.4),
        "trees_0": (0.6, 0.1, 0.8, 0.5, 0.6),
        "trees_2": (0.85, 0.1, 0.95, 0.4, 0.3),
        "trees": (0.6, 0.1, 0.95, 0.5, None),
        "ball": (0.4, 0.8, 0.45, 0.85, None),
        "[dog|trees]": (0.1, 0.1, 0.95, 0.9, None),
    }
    labels = {"": "image", "trees": "composition", "[dog|trees]": "relation"}
    descs = {
        "": [("A brown dog plays with a ball near two Trees on a lawn.", "detail"),
             ("A dog and trees on the lawn.", "short")],
        "dog": [("A brown dog wearing a red collar, holding a ball.", "detail")],
        "dog_collar": [("A red leather collar.", "detail"), ("Leather collar.", "short")],
        "trees_0": [("A tall tree.", "detail")], "trees_2": [("A short tree.", "detail")],
        "ball": [("A small ball.", "detail")],
        "trees": [("Tree 1 is left of tree 2. ", "composition"), ("Both trees are green.", "short")],
        "[dog|trees]": [("The dog runs past the trees.", "relation"), ("Trees shade the dog.", "relation")],
    }
    edges = [("", "dog", "dog"), ("", "trees", "trees"), ("", "ball", "ball"), ("dog", "collar", "dog_collar"),
             ("dog", "ball", "ball"), ("trees", "tree 1", "trees_0"), ("trees", "tree 2", "trees_2"),
             ("", "dog", "[dog|trees]"), ("", "trees", "[dog|trees]"),
             ("[dog|trees]", "dog", "dog"), ("[dog|trees]", "trees", "trees")]
    vertices = []
    for vid, (l, t, r, b, c) in boxes.items():
        label = labels.get(vid, "entity")
        vertices.append(Vertex(
            vertex_id=vid, label=label, bbox=Bbox(left=l, top=t, right=r, bottom=b, confidence=c),
            descs=[Description(text=text, label=lab) for text, lab in descs[vid]],
            out_edges=[Edge(source=s, text=x, target=tg) for s, x, tg in edges if s == vid],
            in_edges=[Edge(source=s, text=x, target=tg) for s, x, tg in edges if tg == vid]))
    graph = GbcGraph(vertices=vertices, img_path="data/images/dog.jpg")
    assert graph.validate() == []
    return graph


@pytest.fixture()
def graphs_file(tmp_path):
    path = tmp_path / "graphs.jsonl"
    other = GbcGraph(vertices=[Vertex(vertex_id="", label="image", bbox=Bbox.full(),
                                      descs=[Description(text="A cat.", label="detail")])],
                     img_url="https://example.org/x/cat.png")
    path.write_text(_graph().to_json().decode() + "\n" + other.to_json().decode() + "\n")
    return path


def _mllm_req(kind, key="photos/dog.jpg", **context):
    return MllmRequest(image=None, system_prompt="", user_prompt="", kind=kind, image_key=key, context=context)


def _det_req(parent, phrases, crop=(0, 0, 1, 1), key="dog.jpg"):
    return DetectionRequest(image=None, phrases=phrases, image_key=key,
                            context={"vertex_id": parent, "crop_box": list(crop), "labels": {}})


def test_index_is_shared_and_matches_by_file_name(graphs_file):
    mllm = create_mllm(f"replay:{graphs_file}")
    det = create_detector(f"replay:{graphs_file}", {"max_batch_size": 8})
    assert isinstance(mllm, ReplayMllm) and isinstance(det, ReplayDetector)
    assert mllm.index is det.index is ReplayIndex.for_file(graphs_file) and len(mllm.index) == 2
    assert det.max_batch_size == 8
    import pickle

    copy = pickle.loads(pickle.dumps(det))
    assert copy._index is None and copy.index is det.index  # same process: the shared index
    index = mllm.index
    assert index.get("dog.jpg") is index.get("elsewhere/dog.jpg") is index.get("data/images/dog.jpg")
    assert index.get("cat.png").graph.img_url.endswith("cat.png")
    assert index.find("https://example.org/x/cat.png") is index.get("cat.png")
    assert index.find("dog.png") is None


def test_graphs_are_replayed_from_a_store_with_its_shards(graphs_file, tmp_path):
    from gbc.store import GraphStore, read_graphs

    dog, cat = list(read_graphs(graphs_file))
    root = tmp_path / "run.lmdb"
    with GraphStore(root, readonly=False) as store:
        store.commit_image(dog.img_path, dog)
    (root / "shards").mkdir()
    with GraphStore(root / "shards" / "w0.lmdb", readonly=False) as shard:
        shard.commit_image(cat.img_url, cat)
    index = create_mllm(f"replay:{root}").index
    assert len(index) == 2 and index.get("cat.png").graph.img_url == cat.img_url
    text = create_mllm(f"replay:{root}").generate([_mllm_req("image", vertex_id="")])[0]
    assert parsers.parse_image_answer(text).detail == dog.vertex("").descs[0].text


@pytest.mark.parametrize("spec, options, message", [
    ("replay", None, "needs a graphs file"),
    ("replay:/no/such/file.jsonl", None, "no such file"),
])
def test_bad_specs(spec, options, message):
    with pytest.raises(BackendError, match=message):
        create_mllm(spec, options)


def test_unknown_option_is_an_error(graphs_file):
    with pytest.raises(BackendError, match="latency_s"):
        create_detector(f"replay:{graphs_file}", {"latency_s": 1})


def test_unknown_image_key_raises_naming_it(graphs_file):
    mllm = create_mllm(f"replay:{graphs_file}")
    with pytest.raises(BackendError, match="'photos/horse.jpg'"):
        mllm.generate([_mllm_req("image", "photos/horse.jpg", vertex_id="")])
    with pytest.raises(BackendError, match="horse.jpg"):
        create_detector(f"replay:{graphs_file}").detect([_det_req("", ["dog"], key="horse.jpg")])


def test_image_answer_retags_the_short_caption(graphs_file):
    text = create_mllm(f"replay:{graphs_file}").generate([_mllm_req("image", vertex_id="")])[0]
    answer = parsers.parse_image_answer(text)
    graph = _graph()
    assert answer.detail == graph.vertex("").descs[0].text
    assert answer.short == graph.vertex("").descs[1].text  # the recorded short, tags removed
    assert {(e.text, e.label) for e in answer.entities} == {("dog", "single"), ("trees", "multiple"), ("ball", "single")}


def test_entity_answers_follow_the_recorded_vertices(graphs_file):
    mllm = create_mllm(f"replay:{graphs_file}")
    dog, collar, missing, trees_1 = mllm.generate([
        _mllm_req("entity", vertex_id="dog", name="dog", label="single"),
        _mllm_req("entity", vertex_id="dog_collar", name="collar", label="single"),
        _mllm_req("entity", vertex_id="dog_leash", name="leash", label="single"),
        _mllm_req("entity", vertex_id="trees_1", name="trees", label="multiple"),
    ])
    parsed = parsers.parse_entity_answer(dog, "dog")
    assert parsed.present and parsed.detail.startswith("A brown dog")
    assert [(e.text, e.label) for e in parsed.entities] == [("collar", "single"), ("ball", "single")]
    collar = parsers.parse_entity_answer(collar, "collar")
    assert collar.entities == [] and collar.shorts == ["Leather collar."]
    assert not parsers.parse_entity_answer(missing, "leash").present
    assert not parsers.parse_entity_answer(trees_1, "trees").present  # the dropped middle box


def test_detection_returns_recorded_boxes_in_numbering_order(graphs_file):
    det = create_detector(f"replay:{graphs_file}")
    image, inside_dog = det.detect([_det_req("", ["dog", "trees", "cat"]),
                                    _det_req("dog", ["collar", "ball"], crop=(0.1, 0.4, 0.5, 0.9))])
    assert set(image) == {"dog", "trees"}  # nothing recorded for "cat"
    assert image["dog"].boxes == [pytest.approx((0.1, 0.4, 0.5, 0.9))] and image["dog"].scores == [0.8]
    trees = image["trees"]
    assert len(trees.boxes) == 3  # trees_0, a placeholder for the dropped trees_1, trees_2
    assert trees.boxes[0] == pytest.approx((0.6, 0.1, 0.8, 0.5)) and trees.boxes[2] == pytest.approx((0.85, 0.1, 0.95, 0.4))
    placeholder = Bbox.from_xyxy(trees.boxes[1])  # the largest free square: survives area filters and NMS
    assert placeholder.area() >= 0.01 and all(placeholder.intersection_area(Bbox.from_xyxy(b)) == 0 for b in trees.boxes[::2])
    assert trees.scores[0] == 0.6 and trees.scores[2] == 0.3 and 0.3 < trees.scores[1] < 0.6
    # relative to the dog's crop; the merged "ball" (no confidence) scores 1.0
    assert inside_dog["collar"].boxes == [pytest.approx((0.25, 0.2, 0.5, 0.3))]
    assert inside_dog["ball"].boxes == [pytest.approx((0.75, 0.8, 0.875, 0.9))] and inside_dog["ball"].scores == [1.0]
    assert det.detect([_det_req("dog_collar", ["buckle"])]) == [{}]


def test_composition_and_relation_answers(graphs_file):
    mllm = create_mllm(f"replay:{graphs_file}")
    comp, rel, none = mllm.generate([
        _mllm_req("composition", vertex_id="trees", name="trees", member_names=["tree 1", "tree 2"]),
        _mllm_req("relation", vertex_id="", member_names=["dog", "trees", "ball"]),
        _mllm_req("relation", vertex_id="dog", member_names=["collar", "ball"]),
    ])
    parsed = parsers.parse_composition_answer(comp, ["tree 1", "tree 2"])
    assert parsed.composition == "Tree 1 is left of tree 2. " and parsed.descriptions == ["Both trees are green."]
    relations = parsers.parse_relation_answer(rel, ["dog", "trees", "ball"]).relations
    assert relations == [("The dog runs past the trees.", [0, 1]), ("Trees shade the dog.", [0, 1])]
    assert parsers.parse_relation_answer(none, ["collar", "ball"]).relations == []


def test_batches_answer_like_single_requests(graphs_file):
    mllm = create_mllm(f"replay:{graphs_file}")
    reqs = [_mllm_req("image", vertex_id=""), _mllm_req("entity", vertex_id="dog", name="dog"),
            _mllm_req("composition", vertex_id="trees", name="trees", member_names=["tree 1", "tree 2"]),
            _mllm_req("entity", vertex_id="nothing", name="nothing")]
    assert mllm.generate(reqs) == [mllm.generate([r])[0] for r in reversed(reqs)][::-1]


@pytest.mark.parametrize("given, expected", [
    ([0.5], [0.5]), ([None], [1.0]), ([0.5, None, None, 0.1], [0.5, 0.3, 0.2, 0.1]),
    ([None, 0.3, 0.2], [0.307, 0.3, 0.2]), ([0.3, 0.5, 0.1], [0.3, 0.2, 0.1]), ([0.4, None], [0.4, 0.3996]),
])
def test_scores_keep_the_numbering_order(given, expected):
    out = _monotone_scores(given)
    assert out == pytest.approx(expected)
    assert all(a > b for a, b in zip(out, out[1:]))


def test_every_reference_answer_parses_back(reference_jsonl):
    """On the real graphs: every vertex's answer gives back its recorded captions and children."""
    mllm = create_mllm(f"replay:{reference_jsonl}")
    det = create_detector(f"replay:{reference_jsonl}")
    for line in reference_jsonl.read_text().splitlines():
        graph = GbcGraph.from_dict(json.loads(line))
        key = graph.img_path.rsplit("/", 1)[-1]
        rec = mllm.index.get(key)
        image = parsers.parse_image_answer(mllm.generate([_mllm_req("image", key, vertex_id="")])[0])
        assert image.detail == graph.detail_caption and image.short == graph.short_caption
        assert {e.text for e in image.entities} == {n for n, _ in rec.child_names("")}
        for v in graph.vertices:
            if v.label == "entity":
                ans = parsers.parse_entity_answer(
                    mllm.generate([_mllm_req("entity", key, vertex_id=v.vertex_id, name="x")])[0], "x")
                assert ans.detail == v.descs[0].text
                assert [e.text for e in ans.entities] == [n for n, _ in rec.child_names(v.vertex_id)]
            if v.label in ("image", "entity"):
                names = [n for n, _ in rec.child_names(v.vertex_id)]
                found = det.detect([_det_req(v.vertex_id, names, v.bbox.to_xyxy(), key)])[0]
                assert set(found) == set(names)
                for boxes in found.values():
                    assert all(0 <= c <= 1 for box in boxes.boxes for c in box)


def test_replaying_the_engines_own_graphs_gives_them_back(tmp_path):
    """Scripted graphs (compositions, relations, parts, absent boxes) made by the engine with its
    default settings, written to a file and replayed through the engine: every vertex, edge,
    model-written caption and box comes back."""
    import gbc
    from PIL import Image

    from gbc.annotators.config import AnnotateConfig
    from gbc.annotators.engine import RecursiveAnnotator
    from gbc.annotators.images import ImageSource

    class Store:
        def __init__(self):
            self.graphs, self.failed = {}, {}

        def commit_image(self, key, graph, provenance=None, **_):
            self.graphs[key] = graph

        def mark_failed(self, key, reason, **_):
            self.failed[key] = reason

    sources = []
    for i in range(10):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (320, 240), ((i * 83) % 256, (i * 47 + 60) % 256, (i * 151 + 20) % 256)).save(path)
        sources.append(ImageSource(key=path.name, path=str(path)))
    made = Store()
    RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted:5"), create_detector("scripted:5")).run(sources, made)
    assert len(made.graphs) == 10
    graphs_file = tmp_path / "made.jsonl"
    gbc.write_graphs(graphs_file, [made.graphs[k] for k in sorted(made.graphs)])
    replayed = Store()
    spec = f"replay:{graphs_file}"
    RecursiveAnnotator(AnnotateConfig(), create_mllm(spec), create_detector(spec)).run(sources, replayed)
    assert replayed.failed == {}

    def content(graph):
        # Hard-coded composition hints are left out: they are computed from the member boxes at
        # query time, and a box widened later by a merge is replayed widened from the start.
        return ({(v.vertex_id, v.label, tuple(round(c, 9) for c in v.bbox.to_xyxy())) for v in graph.vertices},
                sorted(e.key() for v in graph.vertices for e in v.out_edges),
                sorted((v.vertex_id, d.label, d.text) for v in graph.vertices for d in v.descs if d.label != "hardcode"))

    for key, graph in made.graphs.items():
        assert content(replayed.graphs[key]) == content(graph), key


@pytest.mark.parametrize("suffix", [".json", ".parquet", ".lmdb"])
def test_any_graph_file_format_replays(tmp_path, suffix):
    import gbc

    path = tmp_path / f"graphs{suffix}"
    gbc.write_graphs(path, [_graph()])
    mllm = create_mllm(f"replay:{path}")
    answer = parsers.parse_entity_answer(mllm.generate([_mllm_req("entity", vertex_id="dog", name="dog")])[0], "dog")
    assert answer.present and [e.text for e in answer.entities] == ["collar", "ball"]


@pytest.mark.parametrize("content, message", [("{not json\n", "cannot read graphs from"), ("", "holds no graph")])
def test_unreadable_graph_file_makes_the_backend_unavailable(tmp_path, content, message):
    path = tmp_path / "broken.jsonl"
    path.write_text(content)
    detector = create_detector(f"replay:{path}")  # construction reads nothing; first use does
    with pytest.raises(BackendUnavailable, match=f"{message}.*broken.jsonl|broken.jsonl.*{message}"):
        detector.detect([_det_req("", ["dog"])])
    path.unlink()  # gone after construction: the same
    with pytest.raises(BackendUnavailable, match="broken.jsonl"):
        ReplayIndex.for_file(path)


def test_records_sharing_a_file_name_are_told_apart_by_folder():
    def record(path, text):
        return GbcGraph(vertices=[Vertex(vertex_id="", label="image", bbox=Bbox.full(),
                                         descs=[Description(text=text, label="detail")])], img_path=path)

    index = ReplayIndex([record("day/x.jpg", "day"), record("night/x.jpg", "night")], source="two.jsonl")
    assert index.get("day/x.jpg").graph.vertices[0].descs[0].text == "day"
    assert index.get("photos/night/x.jpg").graph.vertices[0].descs[0].text == "night"
    with pytest.raises(BackendError, match="2 records share its file name"):
        index.get("x.jpg")
