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


def _run(*args):
    result = CliRunner().invoke(cli, ["export", *map(str, args)], catch_exceptions=False)
    return result


def test_export_csv_prints_a_summary(graphs_file, tmp_path):
    path, images = graphs_file
    out = tmp_path / "train.csv"
    r = _run(path, "-o", out, "--images-root", images)
    assert r.exit_code == 0, r.output
    assert "graphs read:      4" in r.output
    assert "skipped, image missing: 1" in r.output
    assert "detail-entity" in r.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and all(row["filepath"].endswith(".jpg") for row in rows)


def test_export_json_summary_and_filters(graphs_file, tmp_path):
    path, images = graphs_file
    r = _run(path, "-o", tmp_path / "pq", "--format", "parquet", "--text-only", "--json",
             "--vertex-label", "relation", "--vertex-label", "image", "--desc-label", "relation",
             "--desc-label", "short")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert set(summary["rows_by_type"]) == {"relation-relation", "short-image"}
    assert summary["graphs_text_only"] == 4
    assert (tmp_path / "pq" / "00000.parquet").exists()


def test_export_hardcode_only_when_named(graphs_file, tmp_path):
    path, _ = graphs_file
    base = json.loads(_run(path, "-o", tmp_path / "a.csv", "--text-only", "--json").output)
    named = json.loads(_run(path, "-o", tmp_path / "b.csv", "--text-only", "--json", "--desc-label", "hardcode").output)
    assert "hardcode-composition" not in base["rows_by_type"]
    assert set(named["rows_by_type"]) == {"hardcode-composition"}


def test_export_wds_missing_as_text(graphs_file, tmp_path):
    path, images = graphs_file
    r = _run(path, "-o", tmp_path / "w", "--format", "wds", "--images-root", images, "--missing", "text",
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
