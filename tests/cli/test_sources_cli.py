"""The reading commands take any source the same way: a store, a store with its unmerged
shards, or a graph file (they read through ``gbc.store.reader``)."""

import json

import pytest
from click.testing import CliRunner

from gbc.cli.main import cli
from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore
from gbc.store.files import read_graphs, write_graphs


def _scored(i: int) -> GbcGraph:
    """A GBC10M-like graph whose captions carry toxicity scores: all 0 but one, in graph 1."""
    graph = GbcGraph.from_json(synthetic_graph(i).to_json("gbc10m"))
    for vertex in graph.vertices:
        for desc in vertex.descs:
            desc.toxicity_scores = {"toxicity": 0.0}
    if i == 1:
        graph.vertices[-1].descs[0].toxicity_scores = {"toxicity": 0.9}
    return graph


GRAPHS = [_scored(i) for i in range(5)]
KEYS = [g.image_key for g in GRAPHS]
FAILED = "images/zz-broken.jpg"
SOURCES = ["store", "shards", "jsonl", "parquet"]


def _store(path, graphs, failed=()):
    with GraphStore(path, readonly=False) as store:
        for graph in graphs:
            store.commit_image(graph.image_key, graph)
        for key in failed:
            store.mark_failed(key, "cannot identify image file", error_type="UnidentifiedImageError")
    return path


@pytest.fixture(params=SOURCES)
def source(request, tmp_path):
    """(kind, path) of a source holding GRAPHS; the stores hold one failed image too."""
    kind = request.param
    if kind == "store":
        return kind, _store(tmp_path / "run.lmdb", GRAPHS, failed=[FAILED])
    if kind == "shards":
        root = _store(tmp_path / "run.lmdb", GRAPHS[:2])
        (root / "shards").mkdir()
        _store(root / "shards" / "w0.lmdb", GRAPHS[2:], failed=[FAILED])
        return kind, root
    path = tmp_path / f"graphs.{kind}"
    write_graphs(path, GRAPHS)
    return kind, path


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ls_lists_every_image(source):
    kind, path = source
    listed = json.loads(run("ls", path, "--json"))
    if kind in ("store", "shards"):
        assert {e["key"]: e["status"] for e in listed} == {**dict.fromkeys(KEYS, "done"), FAILED: "failed"}
        assert [e["key"] for e in json.loads(run("ls", path, "--json", "--status", "failed"))] == [FAILED]
    else:
        assert [(e["index"], e["key"]) for e in listed] == list(enumerate(KEYS))
        assert json.loads(run("ls", path, "--json", "--status", "failed")) == []


def test_show_finds_a_graph_by_key_and_by_file_name(source):
    _, path = source
    assert json.loads(run("show", path, KEYS[3], "--json")) == json.loads(GRAPHS[3].to_json())
    name = KEYS[2].rsplit("/", 1)[-1]
    assert run("show", path, name).splitlines()[0] == KEYS[2]


def test_stats_and_validate_count_the_graphs_and_the_failures(source):
    kind, path = source
    stats = json.loads(run("stats", path, "--json"))
    assert stats["graphs"] == len(GRAPHS)
    assert stats["failed"] == (1 if kind in ("store", "shards") else None)
    assert run("validate", path).splitlines()[-1].startswith(f"{len(GRAPHS)} graphs checked: {len(GRAPHS)} valid")


def test_convert_copies_every_graph_and_a_stores_failures(source, tmp_path):
    kind, path = source
    out = tmp_path / "out.jsonl"
    run("convert", path, out)
    assert sorted(g.image_key for g in read_graphs(out)) == sorted(KEYS)
    copy = tmp_path / "copy.lmdb"
    run("convert", path, copy)
    with GraphStore(copy) as store:
        assert sorted(store.keys()) == sorted(KEYS)
        assert list(store.keys(status="failed")) == ([FAILED] if kind in ("store", "shards") else [])


def test_export_reads_every_graph(source, tmp_path):
    _, path = source
    summary = json.loads(run("export", path, "-o", tmp_path / "train.csv", "--text-only", "--json"))
    assert summary["graphs_read"] == summary["graphs_exported"] == len(GRAPHS)
    assert summary["rows"] == len((tmp_path / "train.csv").read_text().splitlines()) - 1


def test_render_draws_a_graph_named_by_key(source, tmp_path):
    _, path = source
    out = tmp_path / "g.png"
    assert run("render", path, KEYS[1], "-o", out).strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aligned_caption_shards_need_a_store_source(tmp_path):
    path = tmp_path / "graphs.jsonl"
    write_graphs(path, GRAPHS)
    result = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "c"), "--format", "wds",
                                      "--align-with", str(tmp_path / "a.tar")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "is not a store; aligned shards look graphs up by key in a store" in result.output


def test_filter_reads_every_graph(source, tmp_path):
    _, path = source
    out = tmp_path / "kept.jsonl"
    summary = json.loads(run("filter", path, "-o", out, "--max-toxicity", "0.5", "--json"))
    assert summary["graphs_read"] == summary["graphs_kept"] == len(GRAPHS)
    assert sum(row["dropped"] for row in summary["captions"].values()) == 1
    assert sorted(g.image_key for g in read_graphs(out)) == sorted(KEYS)
