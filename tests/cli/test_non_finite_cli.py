"""NaN and Infinity in boxes and confidences: invalid graphs, never silently written as null."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from gbc.cli.main import cli
from gbc.schemas.synthetic import synthetic_graph


def _write(path, graphs_as_dicts):
    # json.dumps writes NaN / Infinity tokens, as other tools' JSON writers may.
    path.write_text("\n".join(json.dumps(d) for d in graphs_as_dicts) + "\n")


def _dicts(n):
    return [json.loads(synthetic_graph(i).to_json()) for i in range(n)]


@pytest.mark.parametrize("field,value", [("confidence", float("nan")), ("confidence", float("inf")),
                                         ("left", float("nan")), ("bottom", float("-inf"))])
def test_validate_reports_non_finite_box_values(tmp_path, field, value):
    graphs = _dicts(3)
    graphs[1]["vertices"][1]["bbox"][field] = value
    src = tmp_path / "g.jsonl"
    _write(src, graphs)
    r = CliRunner().invoke(cli, ["validate", str(src)])
    assert r.exit_code == 1, r.output
    assert "non-finite" in r.output and field in r.output
    assert "3 graphs checked: 2 valid, 1 invalid" in r.output


def test_convert_refuses_nan_confidence_instead_of_writing_null(tmp_path):
    graphs = _dicts(2)
    graphs[0]["vertices"][1]["bbox"]["confidence"] = float("nan")
    src, dst = tmp_path / "g.jsonl", tmp_path / "out.jsonl"
    _write(src, graphs)
    CliRunner().invoke(cli, ["convert", str(src), str(dst)])
    written = dst.read_text() if dst.exists() else ""
    assert '"confidence":null' not in written.replace(" ", "")
    assert "non-finite" not in written


def test_region_export_skips_and_names_a_graph_with_a_nan_box(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = _dicts(3)
    for d in graphs:
        Image.new("RGB", (64, 48)).save(images / d["img_path"].rsplit("/", 1)[-1])
    graphs[1]["vertices"][1]["bbox"]["left"] = float("nan")
    bad_key, bad_vertex = graphs[1]["img_path"], graphs[1]["vertices"][1]["vertex_id"]
    src = tmp_path / "g.jsonl"
    _write(src, graphs)
    out = tmp_path / "shards"
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(out), "--format", "wds", "--captions", "region",
                                 "--images-root", str(images), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["graphs_exported"] == 2 and summary["skipped_invalid_box"] == 1
    assert any(bad_key in e and repr(bad_vertex) in e for e in summary["errors"])
    # Text-only exports never write NaN into a sample's JSON either.
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(tmp_path / "text"), "--format", "wds",
                                 "--captions", "region", "--text-only", "--json"])
    assert json.loads(r.output)["skipped_invalid_box"] == 1
