"""CaptionScorer with tiny random CLIP and toxicity models built offline (tests/models.py)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

import gbc
from gbc.annotators.backends.base import BackendUnavailable
from gbc.schemas import Bbox, Description, GbcGraph, Vertex
from gbc.scoring import CaptionScorer, ScoreSummary, score_graphs
from gbc.scoring.models import ModelOptions, TransformersClip, default_score_name, parse_clip_option
from gbc.scoring.scorer import reference_crop_box
from models import TOXICITY_LABELS
from out_of_memory import fail_above, rows


def _scorer(tiny_clip, tiny_toxicity=None, images_root=None, batch_size=64, **kwargs):
    return CaptionScorer.from_specs(clip=[f"tiny=transformers:{tiny_clip}"],
                                    toxicity=f"transformers:{tiny_toxicity}" if tiny_toxicity else None,
                                    batch_size=batch_size, images_root=str(images_root) if images_root else None,
                                    **kwargs)


def _copies(graphs):
    return [g.model_copy(deep=True) for g in graphs]


def _scores(graphs, name="tiny"):
    return [d.clip_scores.scores[name] for g in graphs for v in g.vertices for d in v.descs]


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text, expected", [
    ("transformers:openai/clip-vit-large-patch14-336", ("clip-vit-large-patch14-336", "transformers:openai/clip-vit-large-patch14-336")),
    ("l14=transformers:openai/clip-vit-large-patch14", ("l14", "transformers:openai/clip-vit-large-patch14")),
    ("open_clip:ViT-B-32:laion2b_s34b_b79k", ("ViT-B-32-laion2b_s34b_b79k", "open_clip:ViT-B-32:laion2b_s34b_b79k")),
    ("transformers:/models/a=b/clip/", ("clip", "transformers:/models/a=b/clip/")),
])
def test_clip_options_parse_name_and_spec(text, expected):
    assert parse_clip_option(text) == expected


@pytest.mark.parametrize("bad", ["clip-vit", "torch:foo", "name=transformers:", "x=y"])
def test_bad_clip_specs_are_refused(bad):
    with pytest.raises(Exception, match="bad CLIP model spec"):
        parse_clip_option(bad)


def test_default_score_name_uses_the_last_path_part():
    assert default_score_name("open_clip:hf-hub:apple/DFN5B-CLIP-ViT-H-14-384") == "DFN5B-CLIP-ViT-H-14-384"


# ---------------------------------------------------------------------------- layout
def test_scores_are_written_in_the_released_layout_and_round_trip(tiny_clip, tiny_toxicity, reference_jsonl, reference_dir, tmp_path):
    graphs = list(gbc.read_graphs(reference_jsonl))
    summary = ScoreSummary()
    scorer = _scorer(tiny_clip, tiny_toxicity, reference_dir / "images")
    scored = [r.graph for batch in scorer.score_batches(graphs, summary) for r in batch]
    n_captions = sum(g.n_captions for g in graphs)
    assert summary.scored == len(graphs) and summary.captions == n_captions and summary.clip_scores == n_captions
    reference_records = [json.loads(line) for line in reference_jsonl.read_text().splitlines()]
    for graph, original in zip(scored, reference_records):
        record = graph.to_dict()
        # same fields in the same order as the released records; only the scores changed
        assert list(record) == list(original)
        for vertex, vertex_before in zip(record["vertices"], original["vertices"]):
            for desc, before in zip(vertex["descs"], vertex_before["descs"]):
                assert list(desc) == list(before)
                assert desc["text"] == before["text"]
                assert set(desc["statistics"]) == {"n_words", "n_tokens"}
                assert desc["statistics"]["n_words"] == len(desc["text"].split())
                assert desc["statistics"]["n_tokens"] > 2
                assert list(desc["clip_scores"]) == ["scores", "truncation"]
                assert list(desc["clip_scores"]["scores"]) == ["tiny"]
                assert -1.0 <= desc["clip_scores"]["scores"]["tiny"] <= 1.0
                assert isinstance(desc["clip_scores"]["truncation"], bool)
                assert list(desc["toxicity_scores"]) == list(TOXICITY_LABELS)
                assert all(0.0 < v < 1.0 for v in desc["toxicity_scores"].values())
    expected = {g.img_path: g.to_dict() for g in scored}
    for name in ("scored.jsonl", "scored.parquet", "scored.lmdb"):
        path = tmp_path / name
        gbc.write_graphs(path, scored)
        # a store reads back in key order; files in their own order
        assert {g.img_path: g.to_dict() for g in gbc.read_graphs(path)} == expected, name
        assert len(list(gbc.read_graphs(path))) == len(expected)


# ---------------------------------------------------------------------------- batching
def test_scores_do_not_depend_on_the_batch_size(tiny_clip, tiny_toxicity, synthetic_set):
    graphs, images = synthetic_set
    results = {}
    for size in (1, 3, 64):
        scored = list(score_graphs(_copies(graphs), _scorer(tiny_clip, tiny_toxicity, images, batch_size=size)))
        results[size] = (np.array(_scores(scored[:3])),
                         np.array([list(d.toxicity_scores.values()) for g in scored for v in g.vertices for d in v.descs]))
    for size in (1, 3):
        np.testing.assert_allclose(results[size][0], results[64][0], atol=1e-5)
        np.testing.assert_allclose(results[size][1], results[64][1], atol=1e-5)


def test_out_of_memory_halves_the_batch_and_gives_the_same_scores(tiny_clip, synthetic_set):
    graphs, images = synthetic_set
    plain = _scores(list(score_graphs(_copies(graphs[:3]), _scorer(tiny_clip, images_root=images, batch_size=8))))
    scorer = _scorer(tiny_clip, images_root=images, batch_size=8)
    model = scorer.clip_models[0]
    model.load()
    images = model.model.get_image_features = fail_above(model.model.get_image_features, 2, rows("pixel_values"))
    texts = model.model.get_text_features = fail_above(model.model.get_text_features, 2, rows("input_ids"))
    halved = _scores(list(score_graphs(_copies(graphs[:3]), scorer)))
    assert model._images.batch_size == 2 and model._texts.batch_size == 2
    assert max(images.sizes) > 2 and max(texts.sizes) > 2  # out of memory was met, then batches of 2
    assert images.sizes[-1] <= 2 and texts.sizes[-1] <= 2
    np.testing.assert_allclose(halved, plain, atol=1e-5)


# ---------------------------------------------------------------------------- regions
def _hand_score(folder, image, bbox: Bbox, text: str) -> float:
    """The score computed directly with transformers on a crop made here (reference cropping)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    W, H = image.size
    crop = image.crop((int(bbox.left * W), int(bbox.top * H), int(bbox.right * W), int(bbox.bottom * H)))
    with torch.no_grad():
        img = model.get_image_features(**processor(images=[crop], return_tensors="pt"))
        txt = model.get_text_features(**processor.tokenizer([text], truncation=True, max_length=16, return_tensors="pt"))
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return float(torch.nn.functional.cosine_similarity(img, txt)[0])


def test_a_region_score_equals_the_score_of_the_crop_made_by_hand(tiny_clip, reference_jsonl, reference_dir):
    graph = next(iter(gbc.read_graphs(reference_jsonl)))
    [scored] = score_graphs([graph], _scorer(tiny_clip, images_root=reference_dir / "images"))
    image = Image.open(reference_dir / "images" / graph.img_path.rsplit("/", 1)[-1]).convert("RGB")
    entity = next(v for v in scored.vertices if v.label == "entity" and v.bbox.left > 0.01)
    for vertex in (scored.root, entity):
        desc = vertex.descs[0]
        assert desc.clip_scores.scores["tiny"] == pytest.approx(_hand_score(tiny_clip, image, vertex.bbox, desc.text), abs=1e-5)


def test_reference_crop_box_truncates_like_the_reference():
    assert reference_crop_box(Bbox(left=0.105, top=0.26, right=0.999, bottom=0.5), 100, 10) == (10, 2, 99, 5)
    # degenerate boxes still give one pixel
    assert reference_crop_box(Bbox(left=0.5, top=0.5, right=0.5, bottom=0.5), 10, 10) == (5, 5, 6, 6)


def test_each_region_is_encoded_once_per_image_and_model(tiny_clip, tmp_path):
    image = Image.new("RGB", (50, 40), (200, 10, 10))
    image.paste((10, 10, 220), (30, 0, 50, 40))
    image.save(tmp_path / "a.png")
    box = Bbox(left=0.1, top=0.1, right=0.6, bottom=0.7)
    vertices = [Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                       descs=[Description(text="a red image", label="short"), Description(text="a cat", label="detail")]),
                Vertex(vertex_id="cat", bbox=box, label="entity", descs=[Description(text="a cat", label="detail")]),
                Vertex(vertex_id="[cat]", bbox=box, label="relation",
                       descs=[Description(text="a cat on a sofa", label="relation"), Description(text="a cat", label="relation")])]
    graph = GbcGraph(vertices=vertices, img_path="a.png")
    scorer = _scorer(tiny_clip, images_root=tmp_path)
    model = scorer.clip_models[0]
    seen = []
    encode = model.encode_images
    model.encode_images = lambda inputs: seen.append(len(inputs["pixel_values"])) or encode(inputs)
    summary = ScoreSummary()
    [[result]] = list(scorer.score_batches([graph], summary))
    assert seen == [2] and summary.regions == 2  # whole image + one shared box, for five captions
    s = {(v.vertex_id, d.text): d.clip_scores.scores["tiny"] for v in result.graph.vertices for d in v.descs}
    # same region and text: same score; same text on another region: another score
    assert s[("cat", "a cat")] == s[("[cat]", "a cat")] != s[("", "a cat")]
    assert result.captions == 5


def test_long_texts_are_truncated_and_flagged(tiny_clip, tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    long = " ".join(["the cat sits on the red sofa"] * 10)
    graph = GbcGraph(vertices=[Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                                      descs=[Description(text="a cat", label="short"), Description(text=long, label="detail")])],
                     img_path="a.png")
    [scored] = score_graphs([graph], _scorer(tiny_clip, images_root=tmp_path))
    short, detail = scored.root.descs
    assert short.clip_scores.truncation is False and detail.clip_scores.truncation is True
    assert detail.statistics.n_tokens > 16 >= short.statistics.n_tokens
    assert math.isfinite(detail.clip_scores.scores["tiny"])


# ---------------------------------------------------------------------------- resume, bad input
def test_graphs_already_scored_are_skipped_unless_rescore(tiny_clip, synthetic_set):
    graphs, images = synthetic_set
    first = list(score_graphs(_copies(graphs[:2]), _scorer(tiny_clip, images_root=images)))
    before = [g.to_dict() for g in first]
    again = list(_scorer(tiny_clip, images_root=images).score(first))
    assert [r.status for r in again] == ["already scored"] * 2 and not any(r.changed for r in again)
    assert [r.graph.to_dict() for r in again] == before
    # a second model is still missing: only it is computed, the first scores stay
    both = CaptionScorer.from_specs(clip=[f"tiny=transformers:{tiny_clip}", f"other=transformers:{tiny_clip}"],
                                    images_root=str(images))
    scored = [r.graph for r in both.score(first)]
    assert _scores(scored, "other") == pytest.approx(_scores(scored, "tiny"), abs=1e-6)
    rescored = list(_scorer(tiny_clip, images_root=images, rescore=True).score(scored))
    assert all(r.status == "scored" and r.changed for r in rescored)


def test_missing_and_unreadable_images_keep_their_graphs(tiny_clip, tiny_toxicity, synthetic_set):
    graphs, images = synthetic_set
    (images / graphs[1].img_path.rsplit("/", 1)[-1]).write_bytes(b"not an image")
    summary = ScoreSummary()
    results = [r for b in _scorer(tiny_clip, tiny_toxicity, images).score_batches(_copies(graphs), summary) for r in b]
    assert [r.status for r in results] == ["scored", "image unreadable", "scored", "image missing"]
    assert summary.image_missing == 1 and summary.image_unreadable == 1 and summary.scored == 2
    assert len(summary.errors) == 1 and "UnidentifiedImageError" in summary.errors[0]
    for r in results[1], results[3]:
        assert r.graph.n_vertices == graphs[3 if r is results[3] else 1].n_vertices
        descs = [d for v in r.graph.vertices for d in v.descs]
        assert all(not d.clip_scores.scores for d in descs)
        assert all(d.toxicity_scores for d in descs)  # text-only scores need no image


def test_a_model_that_cannot_load_stops_at_once(tmp_path, synthetic_set):
    graphs, images = synthetic_set
    scorer = CaptionScorer.from_specs(clip=[f"transformers:{tmp_path / 'nothing-here'}"], images_root=str(images))
    with pytest.raises(BackendUnavailable, match="nothing-here"):
        next(scorer.score(graphs))


def test_a_model_without_image_features_is_unavailable(tiny_toxicity):
    from transformers import AutoModel, AutoTokenizer

    with pytest.raises(BackendUnavailable, match="not a CLIP-style model"):
        TransformersClip.from_loaded(AutoModel.from_pretrained(tiny_toxicity), AutoTokenizer.from_pretrained(tiny_toxicity))


def test_two_models_may_not_share_a_score_name(tiny_clip):
    with pytest.raises(ValueError, match="same score name"):
        CaptionScorer.from_specs(clip=[f"transformers:{tiny_clip}", f"transformers:{tiny_clip}"])



def test_python_curate_then_export_as_in_the_readme(tiny_clip, tiny_toxicity, synthetic_set, tmp_path):
    from gbc.export import ExportOptions, export_graphs
    from gbc.export.source import keyed
    from gbc.scoring.filters import ScoreFilter, filter_graphs

    graphs, images = synthetic_set
    source = tmp_path / "graphs.jsonl"
    gbc.write_graphs(source, graphs[:3])
    scorer = gbc.CaptionScorer.from_specs(clip=[f"l14=transformers:{tiny_clip}"], toxicity=f"transformers:{tiny_toxicity}",
                                          images_root=str(images))
    gbc.write_graphs(tmp_path / "scored.jsonl", gbc.score_graphs(gbc.read_graphs(source), scorer))
    flt = gbc.ScoreFilter(min_clip={"": 0.0, "detail-entity": 0.05}, drop_bottom=5, max_toxicity=0.9)
    assert isinstance(flt, ScoreFilter)
    flt.fit(gbc.read_graphs(tmp_path / "scored.jsonl"))
    curated = filter_graphs(gbc.read_graphs(tmp_path / "scored.jsonl"), flt)
    summary = export_graphs(keyed(curated), tmp_path / "train.csv", ExportOptions(fmt="csv", images_root=str(images)))
    counts = flt.summary.to_dict()["captions"]
    assert sum(c["dropped"] for c in counts.values()) > 0
    assert summary.rows > 0 and (tmp_path / "train.csv").exists()


def _tiny_siglip():
    """A random SiglipModel with a CLIP-style tokenizer (SigLIP's own needs sentencepiece files)."""
    from types import SimpleNamespace

    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    from models import make_clip

    tokenizer = make_clip()[1].tokenizer
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    return model, SimpleNamespace(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer)


def test_siglip_texts_are_padded_to_the_context_and_scores_match_the_model(synthetic_set):
    import torch

    graphs, images = synthetic_set
    model, processor = _tiny_siglip()
    scores = {}
    for size in (1, 64):
        scorer = CaptionScorer([TransformersClip.from_loaded(model, processor, name="sig", options=ModelOptions(batch_size=size))],
                               images_root=str(images))
        scores[size] = _scores(list(score_graphs(_copies(graphs[:1]), scorer)), "sig")
    np.testing.assert_allclose(scores[1], scores[64], atol=1e-5)
    graph = graphs[0]
    image = Image.open(images / graph.img_path.rsplit("/", 1)[-1]).convert("RGB")
    desc = graph.root.descs[-1]
    with torch.no_grad():
        img = model.get_image_features(**processor.image_processor(images=[image], return_tensors="pt"))
        ids = processor.tokenizer([desc.text], truncation=True, max_length=16, padding="max_length", return_tensors="pt")
        txt = model.get_text_features(input_ids=ids["input_ids"])
    img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
    hand = float(torch.nn.functional.cosine_similarity(img, txt)[0])
    assert scores[64][len(graph.root.descs) - 1] == pytest.approx(hand, abs=1e-5)
