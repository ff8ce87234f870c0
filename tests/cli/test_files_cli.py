import json
import subprocess
from pathlib import Path

import pytest

import gbc
from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph

def record(i: int) -> GbcGraph:
    """A synthetic graph as read from a GBC10M record (every field set, as in real files)."""
    return GbcGraph.from_json(synthetic_graph(i).to_json("gbc10m"))


def json_lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def jsonl_file(tmp_path):
    path = tmp_path / "graphs.jsonl"
    path.write_text("".join(record(i).to_json().decode() + "\n" for i in range(4)))
    return path


@pytest.fixture
def store_with_failures(tmp_path):
    path = tmp_path / "run.lmdb"
    with gbc.open_store(path, readonly=False) as store:
        for i in range(3):
            graph = record(i)
            store.commit_image(graph.image_key, graph)
        store.mark_failed("images/broken.jpg", "cannot identify image file", error_type="UnidentifiedImageError")
        store.mark_failed("images/zzz.jpg", "model answer empty", error_type="EmptyAnswer")
    return path


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("middle", ["graphs.lmdb", "graphs.parquet", "graphs.json"])
def test_reference_round_trip_is_exact(reference_jsonl, tmp_path, middle, run_cli):
    mid, back = tmp_path / middle, tmp_path / "back.jsonl"
    first = run_cli("convert", reference_jsonl, mid)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"Wrote 19 graphs to {mid} (")
    second = run_cli("convert", mid, back)
    assert second.exit_code == 0, second.output
    original = json_lines(reference_jsonl)
    result = json_lines(back)
    if middle.endswith(".lmdb"):
        # A store is ordered by key; the graphs themselves must be identical.
        key = lambda d: d["img_path"]  # noqa: E731
        original, result = sorted(original, key=key), sorted(result, key=key)
    assert result == original


def test_gbc10m_layout_drops_reference_only_fields(reference_jsonl, tmp_path, run_cli):
    out = tmp_path / "g.jsonl"
    assert run_cli("convert", reference_jsonl, out, "--layout", "gbc10m").exit_code == 0
    first = json_lines(out)[0]
    assert set(first) == {"vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption"}
    assert set(first["vertices"][0]) == {"vertex_id", "bbox", "label", "descs", "in_edges", "out_edges"}
    assert set(first["vertices"][0]["descs"][0]) == {"text", "label"}


def test_store_to_file_reports_failed_images(store_with_failures, tmp_path, run_cli):
    out = tmp_path / "done.jsonl"
    result = run_cli("convert", store_with_failures, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"Wrote 3 graphs to {out} (jsonl); 2 failed images of "
                                     f"{store_with_failures} not copied.")
    assert [d["img_path"] for d in json_lines(out)] == [f"images/{i:08d}.jpg" for i in range(3)]


def test_store_to_store_keeps_failure_records(store_with_failures, tmp_path, run_cli):
    out = tmp_path / "copy.lmdb"
    result = run_cli("convert", store_with_failures, out)
    assert result.exit_code == 0, result.output
    assert "2 failed images" in result.stdout and "copied." in result.stdout
    with gbc.open_store(out) as store:
        assert len(store) == 3
        assert store.status("images/broken.jpg").reason == "cannot identify image file"
        assert store["images/00000001.jpg"].to_dict() == record(1).to_dict()


# ---------------------------------------------------------------------------- refusals
def test_refuses_to_overwrite_without_flag(jsonl_file, tmp_path, clean_error, run_cli):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")
    assert "--overwrite" in clean_error(run_cli("convert", jsonl_file, out))
    assert out.read_text() == "keep me"
    assert run_cli("convert", jsonl_file, out, "--overwrite").exit_code == 0
    assert len(json_lines(out)) == 4


@pytest.mark.parametrize("workers", [1, 2])
def test_a_store_being_written_is_not_replaced(jsonl_file, store_with_failures, tmp_path, clean_error, run_cli,
                                               workers):
    from gbc.store.writer_lock import WriterLock

    with gbc.open_store(store_with_failures) as store:
        before = sorted(store.keys())
    with WriterLock(store_with_failures, command="gbc annotate"):  # a run writing it right now
        line = clean_error(run_cli("convert", jsonl_file, store_with_failures, "--overwrite",
                                   "--workers", workers))
        assert "being written by gbc annotate" in line
        filtering = run_cli("filter", jsonl_file, "-o", store_with_failures, "--overwrite", "--max-toxicity", 1)
        assert "being written by gbc annotate" in clean_error(filtering)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs.jsonl", "run.lmdb"]  # no half-written sibling
    with gbc.open_store(store_with_failures) as store:
        assert sorted(store.keys()) == before  # the run's store is untouched
    assert run_cli("convert", jsonl_file, store_with_failures, "--overwrite", "--workers", workers).exit_code == 0
    with gbc.open_store(store_with_failures) as store:
        assert len(store) == 4
    with WriterLock(store_with_failures, command="gbc annotate"):  # released once the store was replaced
        pass


def test_refuses_same_path(jsonl_file, clean_error, run_cli):
    assert "same path" in clean_error(run_cli("convert", jsonl_file, jsonl_file, "--overwrite"))


@pytest.mark.parametrize("dst", ["out.jsonl", "out.lmdb"])
def test_failed_conversion_leaves_nothing_behind(tmp_path, dst, clean_error, run_cli):
    src = tmp_path / "in.jsonl"
    good = record(0).to_json().decode()
    src.write_text(good + "\n" + good[:100] + "\n")
    clean_error(run_cli("convert", src, tmp_path / dst))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def _bad(tmp_path, kind):
    if kind == "missing-file":
        return tmp_path / "nowhere.jsonl"
    if kind == "non-store-directory":
        d = tmp_path / "folder"
        d.mkdir()
        return d
    if kind == "unknown-extension":
        p = tmp_path / "graphs.csv"
        p.write_text("a,b\n")
        return p
    if kind == "edge-to-missing-vertex":
        d = json.loads(record(0).to_json())
        d["vertices"][1]["out_edges"].append({"source": d["vertices"][1]["vertex_id"], "text": "x", "target": "ghost"})
        p = tmp_path / "bad.jsonl"
        p.write_text(json.dumps(d) + "\n")
        return p
    p = tmp_path / "cut.jsonl"
    p.write_text(record(0).to_json().decode()[:-20] + "\n")
    return p


@pytest.mark.parametrize("kind", ["missing-file", "non-store-directory", "unknown-extension",
                                  "edge-to-missing-vertex", "truncated-jsonl"])
def test_bad_sources(tmp_path, kind, clean_error, run_cli):
    line = clean_error(run_cli("convert", _bad(tmp_path, kind), tmp_path / "out.parquet"))
    if kind == "edge-to-missing-vertex":
        assert "ghost" in line
    assert not (tmp_path / "out.parquet").exists()


def test_unknown_destination_extension(jsonl_file, tmp_path, clean_error, run_cli):
    clean_error(run_cli("convert", jsonl_file, tmp_path / "out.xml"))
    assert not (tmp_path / "out.xml").exists()


def test_no_validate_converts_invalid_graphs(tmp_path, run_cli):
    src = _bad(tmp_path, "edge-to-missing-vertex")
    result = run_cli("convert", src, tmp_path / "out.jsonl", "--no-validate")
    assert result.exit_code == 0, result.output
    assert json_lines(tmp_path / "out.jsonl") == json_lines(src)


# ---------------------------------------------------------------------------- inspection of stores
def test_ls_show_stats_validate_on_a_store(store_with_failures, clean_error, run_cli):
    result = run_cli("ls", store_with_failures)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "images/00000000.jpg\tdone",
        "images/00000001.jpg\tdone",
        "images/00000002.jpg\tdone",
        "images/broken.jpg\tfailed\tUnidentifiedImageError: cannot identify image file",
        "images/zzz.jpg\tfailed\tEmptyAnswer: model answer empty",
    ]
    failed = json.loads(run_cli("ls", store_with_failures, "--status", "failed", "--json").stdout)
    assert [f["key"] for f in failed] == ["images/broken.jpg", "images/zzz.jpg"]
    assert failed[0]["error_type"] == "UnidentifiedImageError"

    shown = run_cli("show", store_with_failures, "00000002.jpg", "--json")
    assert json.loads(shown.stdout) == record(2).to_dict()
    line = clean_error(run_cli("show", store_with_failures, "images/broken.jpg"))
    assert line == ("Error: image 'images/broken.jpg' failed (UnidentifiedImageError: cannot identify image file); "
                    "it has no graph")
    assert "no graph named 'cat.jpg'" in clean_error(run_cli("show", store_with_failures, "cat.jpg"))

    stats = json.loads(run_cli("stats", store_with_failures, "--json").stdout)
    assert (stats["graphs"], stats["failed"]) == (3, 2)

    checked = run_cli("validate", store_with_failures)
    assert checked.exit_code == 0
    assert checked.stdout.strip() == "3 graphs checked: 3 valid, 0 invalid (2 failed images in the store)."


def test_store_written_by_convert_lists_graphs_as_done(jsonl_file, tmp_path, run_cli):
    store = tmp_path / "s.lmdb"
    assert run_cli("convert", jsonl_file, store).exit_code == 0
    lines = run_cli("ls", store).stdout.splitlines()
    assert lines == [f"images/{i:08d}.jpg\tdone" for i in range(4)]


# ---------------------------------------------------------------------------- real process
def test_real_gbc_convert_process(jsonl_file, tmp_path, gbc_bin):
    out = tmp_path / "g.parquet"
    proc = subprocess.run([str(gbc_bin), "convert", str(jsonl_file), str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Wrote 4 graphs to {out} (parquet).\n"
    proc = subprocess.run([str(gbc_bin), "convert", str(tmp_path / "missing.json"), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1


def test_folder_of_store_shards_reads_as_one_store(tmp_path, run_cli):
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard, ids in (("a.lmdb", [0, 2]), ("b.lmdb", [1])):
        with gbc.open_store(folder / shard, readonly=False) as store:
            for i in ids:
                store.commit_image(record(i).image_key, record(i))
            store.mark_failed(f"images/bad-{shard}.jpg", "boom", error_type="RuntimeError")
    keys = [line.split("\t")[:2] for line in run_cli("ls", folder).stdout.splitlines()]
    assert keys == [[f"images/{i:08d}.jpg", "done"] for i in range(3)] + [
        ["images/bad-a.lmdb.jpg", "failed"], ["images/bad-b.lmdb.jpg", "failed"]]
    stats = json.loads(run_cli("stats", folder, "--json").stdout)
    assert (stats["graphs"], stats["failed"]) == (3, 2)
    out = tmp_path / "all.jsonl"
    assert run_cli("convert", folder, out).exit_code == 0
    assert [d["img_path"] for d in json_lines(out)] == [f"images/{i:08d}.jpg" for i in range(3)]


def test_progress_bar_goes_to_stderr_only(jsonl_file, tmp_path, run_cli):
    out = tmp_path / "g.json"
    result = run_cli("convert", jsonl_file, out, "--progress")
    assert result.exit_code == 0, result.output
    assert "graphs.jsonl -> g.json: 4 graphs" in result.stderr
    assert result.stdout == f"Wrote 4 graphs to {out} (json).\n"
    assert json.loads(out.read_text()) == json_lines(jsonl_file)
