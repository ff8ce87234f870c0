"""Reference-written data that lies at the edge of the format: boxes a hair outside [0, 1]
(detector float error) and ``.json`` files holding JSON Lines. Each must read fully."""

import json

import pytest
from click.testing import CliRunner

import gbc
from gbc.annotators.backends.registry import create_mllm
from gbc.annotators.backends.base import MllmRequest
from gbc.cli.main import cli
from gbc.schemas import Bbox, GbcGraph
from gbc.schemas.bbox import BOX_TOLERANCE
from gbc.store.files import GraphFormatError

#: Values seen in released graphs (Grounding DINO float error), written back exactly.
HAIR_TOP = -6.705522537231445e-06
HAIR_RIGHT = 1.0000004


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _reference_records(reference_jsonl, n=3):
    return [json.loads(line) for line in reference_jsonl.read_text().splitlines()[:n]]


def _with_box(record, **sides):
    """The record with its first non-image vertex's box sides set to ``sides``; returns its id."""
    for vertex in record["vertices"]:
        if vertex["label"] != "image":
            vertex["bbox"].update(sides)
            return vertex["vertex_id"]
    raise AssertionError("the reference record has no region vertex")


@pytest.fixture
def hair_jsonl(reference_jsonl, tmp_path):
    records = _reference_records(reference_jsonl)
    _with_box(records[0], top=HAIR_TOP, right=HAIR_RIGHT)
    _with_box(records[2], left=-BOX_TOLERANCE / 2, bottom=1 + BOX_TOLERANCE / 2)
    path = tmp_path / "hair.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---------------------------------------------------------------------------- boxes a hair outside [0, 1]
def test_box_tolerance_is_named_and_applied_both_ways():
    assert BOX_TOLERANCE == 1e-4
    assert Bbox(left=0.2, top=HAIR_TOP, right=HAIR_RIGHT, bottom=0.9).is_valid()
    assert Bbox(left=-BOX_TOLERANCE, top=0.0, right=1 + BOX_TOLERANCE, bottom=1.0).is_valid()
    assert not Bbox(left=-2 * BOX_TOLERANCE, top=0.0, right=1.0, bottom=1.0).is_valid()
    assert not Bbox(left=0.0, top=0.0, right=1.0, bottom=1 + 2 * BOX_TOLERANCE).is_valid()
    assert not Bbox(left=0.5, top=0.0, right=0.4, bottom=1.0).is_valid()  # inverted


def test_hair_outside_boxes_read_everywhere_and_round_trip_exactly(hair_jsonl, tmp_path):
    original = [json.loads(line) for line in hair_jsonl.read_text().splitlines()]
    assert len(list(gbc.read_graphs(hair_jsonl))) == 3

    checked = run_cli("validate", hair_jsonl)
    assert checked.exit_code == 0, checked.output
    assert "3 valid, 0 invalid" in checked.stdout

    for middle in ("s.lmdb", "g.parquet", "g.json"):
        mid, back = tmp_path / middle, tmp_path / f"back-{middle}.jsonl"
        first = run_cli("convert", hair_jsonl, mid)
        assert first.exit_code == 0, first.output
        assert run_cli("convert", mid, back).exit_code == 0
        result = [json.loads(line) for line in back.read_text().splitlines()]
        by_key = lambda d: d["img_path"]  # noqa: E731  (a store is ordered by key)
        assert sorted(result, key=by_key) == sorted(original, key=by_key), middle
    box = next(v.bbox for v in GbcGraph.from_dict(original[0]).vertices if v.label != "image")
    assert (box.top, box.right) == (HAIR_TOP, HAIR_RIGHT)  # kept as written, not clamped


def test_replay_reads_a_recording_with_hair_outside_boxes(hair_jsonl):
    key = json.loads(hair_jsonl.read_text().splitlines()[0])["img_path"]
    mllm = create_mllm(f"replay:{hair_jsonl}")
    request = MllmRequest(image=None, system_prompt="", user_prompt="", kind="image", image_key=key,
                          context={"vertex_id": ""})
    assert mllm.generate([request])[0].strip()


@pytest.mark.parametrize("side, value", [("top", -0.01), ("right", 1.002), ("left", 0.99)])
def test_real_box_violations_stay_errors(reference_jsonl, tmp_path, side, value):
    records = _reference_records(reference_jsonl, 1)
    vid = _with_box(records[0], **{side: value})
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(records[0]) + "\n")
    with pytest.raises(GraphFormatError, match=f"vertex {vid!r} has a box outside"):
        list(gbc.read_graphs(path))
    assert run_cli("validate", path).exit_code == 1
    assert "box outside [0,1]" in _one_error_line(run_cli("convert", path, tmp_path / "out.lmdb"))


# ---------------------------------------------------------------------------- .json holding JSON Lines
@pytest.fixture
def json_lines_in_json(reference_jsonl, tmp_path):
    path = tmp_path / "graphs.json"
    path.write_text("".join(line + "\n" for line in reference_jsonl.read_text().splitlines()[:4]))
    return path


def test_json_file_holding_json_lines_reads_every_record(json_lines_in_json, reference_jsonl, tmp_path, monkeypatch):
    expected = [json.loads(line) for line in reference_jsonl.read_text().splitlines()[:4]]
    assert [g.to_dict() for g in gbc.read_graphs(json_lines_in_json)] == expected
    import gbc.store.files as files_mod

    monkeypatch.setattr(files_mod, "JSON_CHUNK_CHARS", 997)  # records cut across chunks
    assert [g.to_dict() for g in gbc.read_graphs(json_lines_in_json)] == expected

    listed = run_cli("ls", json_lines_in_json)
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 4
    out = tmp_path / "out.jsonl"
    converted = run_cli("convert", json_lines_in_json, out)
    assert converted.exit_code == 0 and converted.stdout.startswith("Wrote 4 graphs")
    assert [json.loads(line) for line in out.read_text().splitlines()] == expected


def test_pretty_printed_graphs_back_to_back_read_every_record(reference_jsonl, tmp_path):
    records = _reference_records(reference_jsonl, 2)
    path = tmp_path / "two.json"
    path.write_text(json.dumps(records[0], indent=2) + "\n" + json.dumps(records[1], indent=2) + "\n")
    assert [g.to_dict() for g in gbc.read_graphs(path)] == records


@pytest.mark.parametrize("tail, message", [
    ("\n[1, 2]\n", "line 2: expected a graph"),
    ('\n{"vertices": [\n', "line 2: invalid JSON"),
    ("\nnot json\n", "line 2: expected a graph"),
])
def test_text_after_a_json_graph_is_refused_not_dropped(reference_jsonl, tmp_path, tail, message):
    path = tmp_path / "g.json"
    path.write_text(reference_jsonl.read_text().splitlines()[0] + tail)
    with pytest.raises(GraphFormatError, match=message):
        list(gbc.read_graphs(path))
    assert _one_error_line(run_cli("convert", path, tmp_path / "out.jsonl")).startswith("Error: ")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("tail", ["\n[]\n", "\n{}\n", "x"])
def test_text_after_a_json_array_is_refused_not_dropped(reference_jsonl, tmp_path, tail):
    path = tmp_path / "g.json"
    path.write_text("[" + reference_jsonl.read_text().splitlines()[0] + "]" + tail)
    with pytest.raises(GraphFormatError, match="after the JSON array"):
        list(gbc.read_graphs(path))
