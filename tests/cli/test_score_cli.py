"""gbc score / gbc filter / gbc export score options, with tiny models built offline."""

import csv
import json

import pytest

import gbc
from gbc.scoring import scorer as scorer_module
from score_fixtures import synthetic_set, tiny_clip, tiny_toxicity  # noqa: F401


@pytest.fixture
def store(synthetic_set, tmp_path):  # noqa: F811
    graphs, images = synthetic_set
    path = tmp_path / "g.lmdb"
    gbc.write_graphs(path, graphs)
    return path, images, graphs


def _clip_args(tiny_clip):  # noqa: F811
    return ["--clip", f"tiny=transformers:{tiny_clip}"]


def test_score_a_store_in_place_then_resume(store, tiny_clip, tiny_toxicity, run_cli):  # noqa: F811
    path, images, graphs = store
    r = run_cli("score", path, *_clip_args(tiny_clip), "--toxicity", f"transformers:{tiny_toxicity}",
                "--images-root", images, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["graphs"] == 4 and summary["scored"] == 3 and summary["image_missing"] == 1
    assert summary["clip_scores"] == sum(g.n_captions for g in graphs[:3])
    with gbc.open_store(path) as s:
        scored = dict(s.items())
        assert s.meta["scores"] == {"tiny": f"transformers:{tiny_clip}", "toxicity": f"transformers:{tiny_toxicity}"}
    assert all(d.clip_scores.scores["tiny"] is not None for g in (scored[k] for k in sorted(scored)[:3])
               for v in g.vertices for d in v.descs)
    r = run_cli("score", path, *_clip_args(tiny_clip), "--toxicity", f"transformers:{tiny_toxicity}",
                "--images-root", images)
    assert r.exit_code == 0, r.output
    # the graph whose image is missing is tried again; the scored ones are skipped
    assert "already scored (skipped): 3" in r.output and "image missing (kept, no CLIP scores): 1" in r.output


def test_scoring_a_store_being_written_is_refused(store, tiny_clip, clean_error, run_cli):  # noqa: F811
    from gbc.store.writer_lock import WriterLock

    path, images, graphs = store
    with WriterLock(path, command="gbc annotate"):
        line = clean_error(run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images))
        assert "being written by gbc annotate" in line
    with gbc.open_store(path) as s:
        assert "scores" not in (s.meta or {})  # nothing was scored
        unscored = [s[k] for k in sorted(s.keys())]
    assert not any("tiny" in ((d.clip_scores and d.clip_scores.scores) or {})
                   for g in unscored for v in g.vertices for d in v.descs)
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images)
    assert r.exit_code == 0, r.output
    with gbc.open_store(path) as s:
        assert any("tiny" in ((d.clip_scores and d.clip_scores.scores) or {})
                   for g in s.values() for v in g.vertices for d in v.descs)
    with WriterLock(path, command="gbc annotate"):  # released when the scoring ended
        pass


def test_a_killed_run_keeps_what_it_committed(store, tiny_clip, monkeypatch, run_cli):  # noqa: F811
    path, images, _ = store
    calls = {"n": 0}
    finish = scorer_module.CaptionScorer._finish

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return finish(self, *args)

    monkeypatch.setattr(scorer_module.CaptionScorer, "_finish", interrupted)
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "--batch-size", "1")
    assert r.exit_code == 130
    monkeypatch.setattr(scorer_module.CaptionScorer, "_finish", finish)
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "--json")
    summary = json.loads(r.output)
    # batches of one region hold one graph each: two were committed before the interruption
    assert summary["already_scored"] == 2 and summary["scored"] == 1 and summary["image_missing"] == 1


def test_score_into_a_file_and_into_a_store_copy(store, tiny_clip, tmp_path, run_cli):  # noqa: F811
    path, images, graphs = store
    out = tmp_path / "scored.jsonl"
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "-o", out)
    assert r.exit_code == 0, r.output
    assert len(list(gbc.read_graphs(out))) == 4
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "-o", out)
    assert r.exit_code == 1 and "exists" in r.output
    copy = tmp_path / "copy.lmdb"
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "-o", copy, "--json")
    assert json.loads(r.output)["scored"] == 3
    with gbc.open_store(path) as original:  # SRC untouched
        assert all(not d.clip_scores.scores for _, g in original.items() for v in g.vertices for d in v.descs)
    r = run_cli("score", path, *_clip_args(tiny_clip), "--images-root", images, "-o", copy, "--json")
    assert json.loads(r.output)["already_scored"] == 3
    other = tmp_path / "other.lmdb"
    gbc.write_graphs(other, graphs[:1])
    r = run_cli("score", path, *_clip_args(tiny_clip), "-o", other)
    assert r.exit_code == 1 and "is not a scored copy" in r.output


def test_bad_input_is_one_error_line(store, tiny_clip, tmp_path, run_cli):  # noqa: F811
    path, images, _ = store
    r = run_cli("score", path, "--clip", f"transformers:{tmp_path / 'missing-model'}")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: model folder")
    r = run_cli("score", path, "--clip", "nonsense")
    assert r.exit_code == 1 and "bad CLIP model spec" in r.output
    r = run_cli("score", path)
    assert r.exit_code == 2 and "--clip" in r.output
    jsonl = tmp_path / "g.jsonl"
    gbc.write_graphs(jsonl, gbc.read_graphs(path))
    r = run_cli("score", jsonl, *_clip_args(tiny_clip))
    assert r.exit_code == 2 and "-o" in r.output


def test_filter_and_export_with_score_bars(store, tiny_clip, tiny_toxicity, tmp_path, run_cli):  # noqa: F811
    path, images, _ = store
    assert run_cli("score", path, *_clip_args(tiny_clip), "--toxicity", f"transformers:{tiny_toxicity}",
                "--images-root", images).exit_code == 0
    out = tmp_path / "curated.jsonl"
    r = run_cli("filter", path, "-o", out, "--min-clip", "0.0", "--drop-bottom", "20", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    kept = list(gbc.read_graphs(out))  # read_graphs validates every graph
    n_kept = sum(g.n_captions for g in kept)
    assert n_kept == sum(row["kept"] for row in summary["captions"].values())
    assert summary["reasons"]["unscored"] > 0  # the graph without an image has no CLIP scores
    assert summary["graphs_dropped"] == 1 and len(kept) == 3
    r = run_cli("validate", out)
    assert r.exit_code == 0
    r = run_cli("filter", path, "-o", tmp_path / "x.jsonl", "--min-clip", "0.1", "--score-name", "other")
    assert r.exit_code == 1 and r.output.strip() == "Error: unknown score name(s) 'other'; names present: tiny"
    r = run_cli("filter", path, "-o", tmp_path / "x.jsonl")
    assert r.exit_code == 2

    all_rows, some_rows = tmp_path / "all.csv", tmp_path / "some.csv"
    assert run_cli("export", path, "-o", all_rows, "--text-only").exit_code == 0
    r = run_cli("export", path, "-o", some_rows, "--text-only", "--min-clip", "0.0", "--drop-bottom", "20", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["score_filter"]["captions"] == summary["captions"]
    with open(all_rows, newline="") as a, open(some_rows, newline="") as b:
        assert len(list(csv.reader(b, delimiter="\t"))) < len(list(csv.reader(a, delimiter="\t")))


def test_images_are_found_under_the_roots_the_store_recorded(store, tiny_clip, run_cli):  # noqa: F811
    path, images, _ = store
    r = run_cli("score", path, *_clip_args(tiny_clip), "--json")
    assert json.loads(r.output)["image_missing"] == 4  # img_path alone is relative to another folder
    with gbc.open_store(path, readonly=False) as s:
        s.update_meta({"image_roots": [str(images)]})
    r = run_cli("score", path, *_clip_args(tiny_clip), "--json")
    summary = json.loads(r.output)
    assert summary["scored"] == 3 and summary["image_missing"] == 1


@pytest.mark.parametrize("kind", ["store", "shards", "jsonl"])
def test_score_into_a_file_reads_any_source(kind, synthetic_set, tiny_toxicity, tmp_path, run_cli):  # noqa: F811
    graphs, _ = synthetic_set
    if kind == "jsonl":
        src = tmp_path / "g.jsonl"
        gbc.write_graphs(src, graphs)
    else:
        src = tmp_path / "g.lmdb"
        gbc.write_graphs(src, graphs[:1] if kind == "shards" else graphs)
        if kind == "shards":  # the rest in unmerged shards: read as one store with them
            (src / "shards").mkdir()
            gbc.write_graphs(src / "shards" / "w0.lmdb", graphs[1:])
    out = tmp_path / "scored.jsonl"
    r = run_cli("score", src, "--toxicity", f"transformers:{tiny_toxicity}", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["graphs"] == len(graphs)
    scored = list(gbc.read_graphs(out))
    assert sorted(g.image_key for g in scored) == sorted(g.image_key for g in graphs)
    assert all(d.toxicity_scores for g in scored for v in g.vertices for d in v.descs)
