"""An export replaces its output whole or not at all, and every caption strategy obeys the
token limit; `gbc show` finds a store's graph by its position."""

import csv
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import gbc
from gbc.cli.main import cli
from gbc.export.captions import CaptionFilter, caption_rows, structured_text
from gbc.export.source import keyed
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas.synthetic import synthetic_graph


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    return errors[0]


@pytest.fixture
def graphs_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = [synthetic_graph(i) for i in range(6)]
    for g in graphs:
        Image.new("RGB", (80, 60), (10, 200, 10)).save(images / g.img_path.rsplit("/", 1)[-1])
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"\n".join(g.to_json() for g in graphs) + b"\n")
    return path, images


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------- export into a used output
@pytest.mark.parametrize("fmt", ["parquet", "wds"])
def test_a_used_shard_folder_is_refused_then_replaced_whole(graphs_file, tmp_path, fmt):
    path, images = graphs_file
    out = tmp_path / "shards"
    common = ["export", path, "-o", out, "--format", fmt, "--images-root", images, "--json"]
    first = run_cli(*common, "--shard-size", "5")
    assert first.exit_code == 0, first.output
    before = _snapshot(out)
    assert len([n for n in before if n.endswith(".parquet")]) > 2

    line = one_error_line(run_cli(*common, "--shard-size", "100000", "--captions", "short"))
    assert "already exists" in line and "--overwrite" in line
    assert _snapshot(out) == before  # untouched

    second = run_cli(*common, "--shard-size", "100000", "--captions", "short", "--overwrite")
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    names = sorted(_snapshot(out))
    expected = {"parquet": ["00000.parquet"], "wds": ["00000.parquet", "00000.tar", "00000_stats.json"]}[fmt]
    assert names == expected  # no shard of the first export left
    assert sorted(summary["files"]) == sorted(str(out / n) for n in expected)
    index = pq.read_table(out / "00000.parquet")
    assert index.num_rows == summary["rows"] == 6  # one short caption per graph, nothing mixed in
    assert _siblings(out) == []  # no staging folder left


def test_an_existing_csv_and_its_images_are_refused_then_replaced_whole(graphs_file, tmp_path):
    path, images = graphs_file
    out = tmp_path / "train.csv"
    first = run_cli("export", path, "-o", out, "--images-root", images, "--captions", "region", "--json")
    assert first.exit_code == 0, first.output
    crops = tmp_path / "train_images"
    assert len(list(crops.iterdir())) > 6
    before = out.read_bytes()

    line = one_error_line(run_cli("export", path, "-o", out, "--text-only", "--captions", "short"))
    assert "already exists" in line and "--overwrite" in line
    assert out.read_bytes() == before

    second = run_cli("export", path, "-o", out, "--text-only", "--captions", "short", "--overwrite")
    assert second.exit_code == 0, second.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 6
    assert not crops.exists()  # the old crops belonged to the old output
    assert _siblings(out) == []


def test_csv_crops_are_referenced_where_they_end_up(graphs_file, tmp_path):
    path, images = graphs_file
    out = tmp_path / "regions.csv"
    out.write_text("old\n")
    result = run_cli("export", path, "-o", out, "--images-root", images, "--captions", "region", "--overwrite")
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        paths = [r["filepath"] for r in csv.DictReader(fh, delimiter="\t")]
    crops = [p for p in paths if "regions_images" in p]
    assert crops and all(Image.open(p).size[0] > 0 for p in crops)


def test_a_failed_export_leaves_the_old_output_as_it_was(graphs_file, tmp_path):
    path, images = graphs_file
    out = tmp_path / "pq"
    assert run_cli("export", path, "-o", out, "--format", "parquet", "--text-only").exit_code == 0
    before = _snapshot(out)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(path.read_text() + "{not json\n")
    result = run_cli("export", broken, "-o", out, "--format", "parquet", "--text-only", "--overwrite",
                     "--shard-size", "2")
    one_error_line(result)
    assert _snapshot(out) == before
    assert _siblings(out) == []


def test_an_empty_folder_is_a_fine_output(graphs_file, tmp_path):
    path, _ = graphs_file
    out = tmp_path / "empty"
    out.mkdir()
    result = run_cli("export", path, "-o", out, "--format", "parquet", "--text-only")
    assert result.exit_code == 0, result.output
    assert sorted(_snapshot(out)) == ["00000.parquet"]


def test_library_export_refuses_a_used_output_too(tmp_path):
    out = tmp_path / "t.csv"
    out.write_text("x")
    graphs = [synthetic_graph(0)]
    with pytest.raises(ValueError, match="already exists"):
        export_graphs(keyed(graphs), out, ExportOptions(text_only=True))
    summary = export_graphs(keyed(graphs), out, ExportOptions(text_only=True, overwrite=True))
    assert summary.rows > 0 and out.read_text().startswith("filepath\ttitle\n")


# ---------------------------------------------------------------------------- structured captions and the token limit
def test_structured_rows_obey_the_token_limit(reference_jsonl):
    flt = CaptionFilter(max_tokens=77, exact_tokens=False)
    count = flt.token_counter()[0]
    graphs = list(gbc.read_graphs(reference_jsonl))
    split = 0
    for graph in graphs:
        outline = structured_text(graph, flt)
        rows = caption_rows(graph, "structured", flt)
        assert rows and all(count(r.text) <= 77 for r in rows), [count(r.text) for r in rows]
        assert {r.caption_type for r in rows} == {"structured"}
        split += len(rows) > 1
        # the outline's lines that fit come back whole and in order
        kept = [line for r in rows for line in r.text.split("\n")]
        fitting = [line for line in outline.split("\n") if count(line) <= 77]
        assert [line for line in kept if line in set(fitting)] == fitting
    assert split >= len(graphs) // 2  # reference outlines run to hundreds of words
    unlimited = CaptionFilter(max_tokens=None)
    assert [r.text for r in caption_rows(graphs[0], "structured", unlimited)] == [structured_text(graphs[0], unlimited)]


def test_structured_export_rows_fit_in_the_cli(reference_jsonl, tmp_path):
    out = tmp_path / "s.csv"
    result = run_cli("export", reference_jsonl, "-o", out, "--captions", "structured", "--text-only",
                     "--tokens", "estimate", "--json")
    assert result.exit_code == 0, result.output
    count = CaptionFilter(exact_tokens=False).token_counter()[0]
    with open(out, newline="") as fh:
        titles = [r["title"] for r in csv.DictReader(fh, delimiter="\t")]
    assert len(titles) > 19 and max(count(t) for t in titles) <= 77


# ---------------------------------------------------------------------------- gbc show STORE <index>
def test_show_finds_a_store_graph_by_its_position(reference_jsonl, tmp_path):
    store = tmp_path / "ref.lmdb"
    assert run_cli("convert", reference_jsonl, store).exit_code == 0
    with gbc.open_store(store) as s:
        keys = list(s.keys())
        first, last = s[keys[0]].to_dict(), s[keys[-1]].to_dict()
    shown = run_cli("show", store, "0", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == first
    assert json.loads(run_cli("show", store, str(len(keys) - 1), "--json").stdout) == last
    tree = run_cli("show", store, "0")
    assert tree.exit_code == 0 and keys[0] in tree.stdout
    line = one_error_line(run_cli("show", store, str(len(keys))))
    assert f"no graph named '{len(keys)}'" in line and f"({len(keys)} graphs)" in line
