import csv
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from gbc.cli.main import cli
from gbc.schemas.synthetic import synthetic_graph


@pytest.fixture
def graphs_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = [synthetic_graph(i) for i in range(4)]
    for g in graphs[:3]:  # the last graph's image is missing
        Image.new("RGB", (80, 60), (10, 200, 10)).save(images / g.img_path.rsplit("/", 1)[-1])
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"\n".join(g.to_json() for g in graphs) + b"\n")
    return path, images


def test_export_csv_prints_a_summary(graphs_file, tmp_path, run_cli):
    path, images = graphs_file
    out = tmp_path / "train.csv"
    r = run_cli("export", path, "-o", out, "--images-root", images)
    assert r.exit_code == 0, r.output
    assert "graphs read:      4" in r.output
    assert "skipped, image missing: 1" in r.output
    assert "detail-entity" in r.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and all(row["filepath"].endswith(".jpg") for row in rows)


def test_export_json_summary_and_filters(graphs_file, tmp_path, run_cli):
    path, images = graphs_file
    r = run_cli("export", path, "-o", tmp_path / "pq", "--format", "parquet", "--text-only", "--json",
             "--vertex-label", "relation", "--vertex-label", "image", "--desc-label", "relation",
             "--desc-label", "short")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert set(summary["rows_by_type"]) == {"relation-relation", "short-image"}
    assert summary["graphs_text_only"] == 4
    assert (tmp_path / "pq" / "00000.parquet").exists()


def test_export_hardcode_only_when_named(graphs_file, tmp_path, run_cli):
    path, _ = graphs_file
    base = json.loads(run_cli("export", path, "-o", tmp_path / "a.csv", "--text-only", "--json").output)
    named = json.loads(run_cli("export", path, "-o", tmp_path / "b.csv", "--text-only", "--json",
                               "--desc-label", "hardcode").output)
    assert "hardcode-composition" not in base["rows_by_type"]
    assert set(named["rows_by_type"]) == {"hardcode-composition"}


def test_export_wds_missing_as_text(graphs_file, tmp_path, run_cli):
    path, images = graphs_file
    r = run_cli("export", path, "-o", tmp_path / "w", "--format", "wds", "--images-root", images, "--missing", "text",
             "--captions", "short", "--shard-size", "2", "--json")
    summary = json.loads(r.output)
    assert summary["graphs_exported"] == 4 and summary["graphs_text_only"] == 1
    assert sorted(p.name for p in (tmp_path / "w").glob("*.tar")) == ["00000.tar", "00001.tar"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jsonl", "-o", "x.csv"], "no such file"),
        (["{src}", "-o", "x.csv", "--captions", "bogus"], "Invalid value for '--captions'"),
        (["{src}", "-o", "x.csv", "--min-box-size", "3"], "Invalid value for '--min-box-size'"),
        (["{src}", "-o", "{tmp}", "--format", "csv"], "is a folder"),
    ],
)
def test_export_bad_input_is_one_line_error(graphs_file, tmp_path, args, message):
    path, _ = graphs_file
    args = [a.format(src=path, tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "gbc.cli.main", "export", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def annotated(tmp_path):
    """A store annotated from a folder given by a relative path, as a user would type it."""
    import os

    work = tmp_path / "work"
    (work / "photos" / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("RGB", (96, 72), (200, 120, 40)).save(work / "photos" / name)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        r = CliRunner().invoke(cli, ["annotate", "photos", "-o", "run.lmdb", "--mllm", "scripted", "--detector", "scripted"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    return work / "run.lmdb", work / "photos"


def test_the_store_records_where_its_images_came_from(annotated):
    import gbc

    store_path, photos = annotated
    with gbc.open_store(store_path) as store:
        assert store.meta["image_roots"] == [str(photos)]  # absolute, though given as "photos"
        assert store.get_provenance("sub/b.png")["source_path"] == str(photos / "sub" / "b.png")
        assert store["sub/b.png"].img_path == "sub/b.png"  # the graph keeps the released layout


def test_export_and_render_find_the_images_without_images_root(annotated, tmp_path, monkeypatch, run_cli):
    store_path, photos = annotated
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative img_path resolves against nothing here
    r = run_cli("export", store_path, "-o", "train.csv")
    assert r.exit_code == 0, r.output
    with open(elsewhere / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and {row["filepath"].rsplit("_", 1)[0] for row in rows}
    r = CliRunner().invoke(cli, ["render", str(store_path), "sub/b.png", "-o", "b.png"])
    assert r.exit_code == 0, r.output
    assert "not found" not in r.output


def test_export_of_nothing_is_an_error_and_leaves_no_output(annotated, tmp_path):
    store_path, photos = annotated
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "train.csv"
    r = CliRunner().invoke(cli, ["export", str(store_path), "-o", str(out), "--images-root", str(empty)])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: nothing exported from 2 graph(s)"), lines
    assert "--images-root" in lines[0] and not out.exists()
    # moved images: the recorded folder no longer holds them
    photos.rename(tmp_path / "moved")
    r = CliRunner().invoke(cli, ["export", str(store_path), "-o", str(out)])
    assert r.exit_code == 1 and "not where the store recorded them" in r.output and not out.exists()
    r = CliRunner().invoke(cli, ["export", str(store_path), "-o", str(out), "--images-root", str(tmp_path / "moved")])
    assert r.exit_code == 0, r.output  # --images-root still overrides (another machine)
