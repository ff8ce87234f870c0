import json
import re
import subprocess

import pytest
from PIL import Image

from gbc.cli.inspect import format_tree
from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.synthetic import synthetic_graph

# ---------------------------------------------------------------------------- helpers
def record(i: int) -> GbcGraph:
    """A synthetic graph as read from a GBC10M record (every field set, as in real files)."""
    return GbcGraph.from_json(synthetic_graph(i).to_json("gbc10m"))


def graph_lines(n=3, start=0):
    return [record(i).to_json().decode() for i in range(start, start + n)]


@pytest.fixture
def jsonl_file(tmp_path):
    path = tmp_path / "graphs.jsonl"
    path.write_text("\n".join(graph_lines()) + "\n")
    return path


def _truncated(tmp_path):
    lines = graph_lines(2)
    path = tmp_path / "truncated.jsonl"
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
    return path


def _missing_vertex(tmp_path):
    data = json.loads(graph_lines(1)[0])
    data["vertices"][0]["out_edges"].append({"source": "", "text": "ghost", "target": "ghost"})
    path = tmp_path / "missing_vertex.jsonl"
    path.write_text(json.dumps(data) + "\n")
    return path


def _plain_directory(tmp_path):
    path = tmp_path / "not_a_store"
    path.mkdir()
    (path / "notes.txt").write_text("hello")
    return path


def _unknown_extension(tmp_path):
    path = tmp_path / "graphs.txt"
    path.write_text(graph_lines(1)[0] + "\n")
    return path


BAD_INPUTS = {
    "truncated-jsonl": _truncated,
    "edge-to-missing-vertex": _missing_vertex,
    "non-store-directory": _plain_directory,
    "unknown-extension": _unknown_extension,
    "missing-file": lambda tmp_path: tmp_path / "nowhere.jsonl",
}

COMMANDS = {
    "ls": lambda p: ["ls", p],
    "ls-json": lambda p: ["ls", p, "--json"],
    "show": lambda p: ["show", p, "0"],
    "stats": lambda p: ["stats", p],
    "stats-json": lambda p: ["stats", p, "--json"],
}


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(tmp_path, command, bad, clean_error, run_cli):
    path = BAD_INPUTS[bad](tmp_path)
    line = clean_error(run_cli(*COMMANDS[command](path)))
    if bad == "missing-file":
        assert "nowhere.jsonl" in line
    if bad == "edge-to-missing-vertex":
        assert "ghost" in line


@pytest.mark.parametrize("bad", sorted(set(BAD_INPUTS) - {"edge-to-missing-vertex"}))
def test_validate_refuses_unreadable_input(tmp_path, bad, clean_error, run_cli):
    clean_error(run_cli("validate", BAD_INPUTS[bad](tmp_path)))


def test_validate_reports_invalid_graph_and_exits_non_zero(tmp_path, run_cli):
    path = _missing_vertex(tmp_path)
    with path.open("a") as f:
        f.write(graph_lines(1, start=5)[0] + "\n")
    result = run_cli("validate", path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "images/00000000.jpg: 2 problems"
    assert any("'ghost'" in line and "missing vertex" in line for line in lines[1:3])
    assert lines[-1] == "2 graphs checked: 1 valid, 1 invalid."


def test_validate_truncated_file_says_how_far_it_got(tmp_path, run_cli):
    result = run_cli("validate", _truncated(tmp_path))
    assert result.exit_code != 0
    assert "Stopped after 1 graph (0 invalid)" in result.stderr


# ---------------------------------------------------------------------------- reference data
def test_validate_passes_on_reference(reference_jsonl, run_cli):
    result = run_cli("validate", reference_jsonl)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "19 graphs checked: 19 valid, 0 invalid."


def test_stats_json_on_reference(reference_jsonl, run_cli):
    result = run_cli("stats", reference_jsonl, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["graphs"] == 19 and data["failed"] is None
    assert round(data["per_graph"]["vertices"]["mean"], 1) == 12.2
    assert round(data["per_graph"]["edges"]["mean"], 1) == 19.4
    assert data["relation_arity"]["histogram"] == {"2": 29, "3": 11, "4": 1}


def test_stats_table_and_plot(reference_jsonl, tmp_path, run_cli):
    png = tmp_path / "stats.png"
    result = run_cli("stats", reference_jsonl, "--plot", png)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("19 graphs\n")
    row = next(line for line in result.stdout.splitlines() if line.startswith("edges"))
    assert row.split()[:2] == ["edges", "19.4"]
    assert f"Plot written to {png}" in result.stderr
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_show_reference_graph_by_file_name(reference_jsonl, run_cli):
    result = run_cli("show", reference_jsonl, "Wild_horses.jpg", "--width", "100")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == "data/images/wiki/Wild_horses.jpg"
    assert "size: 1024x641" in out
    assert '#0 image ""  box [0.00 0.00 1.00 1.00]' in out
    assert any('"horse", "snow" (2 edges)' in line and "relation" in line for line in out)


# ---------------------------------------------------------------------------- ls / show on files
def test_ls_file(jsonl_file, run_cli):
    result = run_cli("ls", jsonl_file)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{i}\timages/{i:08d}.jpg" for i in range(3)]
    data = json.loads(run_cli("ls", jsonl_file, "--json").stdout)
    assert data == [{"index": i, "key": f"images/{i:08d}.jpg", "status": "done"} for i in range(3)]
    assert json.loads(run_cli("ls", jsonl_file, "--status", "failed", "--json").stdout) == []
    assert run_cli("ls", jsonl_file, "--status", "done").stdout == result.stdout


@pytest.mark.parametrize("key", ["images/00000001.jpg", "00000001.jpg", "1"])
def test_show_by_key_file_name_or_index(jsonl_file, key, run_cli):
    result = run_cli("show", jsonl_file, key, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(graph_lines(3)[1])


def test_show_unknown_key(jsonl_file, clean_error, run_cli):
    line = clean_error(run_cli("show", jsonl_file, "cat.jpg"))
    assert "no graph named 'cat.jpg'" in line and "(3 graphs)" in line


def test_show_ambiguous_file_name(tmp_path, clean_error, run_cli):
    a, b = record(1), record(2)
    a.img_path, b.img_path = "x/cat.jpg", "y/cat.jpg"
    path = tmp_path / "g.jsonl"
    path.write_text(a.to_json().decode() + "\n" + b.to_json().decode() + "\n")
    assert "names 2 graphs" in clean_error(run_cli("show", path, "cat.jpg"))
    assert run_cli("show", path, "y/cat.jpg").exit_code == 0


# ---------------------------------------------------------------------------- the tree
def _diamond() -> GbcGraph:
    """Image -> a, image -> b, both a and b -> c (c has two parents), a relation over a and b."""
    def v(vid, label, conf=None, descs=()):
        return Vertex(vertex_id=vid, label=label, bbox=Bbox(left=0.1, top=0.2, right=0.5, bottom=0.6, confidence=conf),
                      descs=[Description(text=t, label=lab) for lab, t in descs])
    vertices = [
        v("", "image", descs=[("detail", "word " * 60)]),
        v("a", "entity", 0.91, [("detail", "the a")]),
        v("b", "entity", 0.5),
        v("a_c", "entity"),
        v("[a|b]", "relation", descs=[("relation", "a is left of b")]),
    ]
    edges = [("", "a", "a"), ("", "b", "b"), ("a", "c", "a_c"), ("b", "c", "a_c"),
             ("", "a", "[a|b]"), ("", "b", "[a|b]"), ("[a|b]", "a", "a"), ("[a|b]", "b", "b")]
    index = {x.vertex_id: x for x in vertices}
    for s, t, target in edges:
        e = Edge(source=s, text=t, target=target)
        index[s].out_edges.append(e)
        index[target].in_edges.append(e.model_copy())
    return GbcGraph(vertices=vertices, img_path="d.jpg")


def test_tree_shows_every_vertex_once_and_references_the_rest():
    g = _diamond()
    assert g.validate() == []
    text = format_tree(g, width=60)
    headers = re.findall(r"#(\d+) (\w+) (\"[^\"]*\")  box", text)
    assert sorted(int(n) for n, _, _ in headers) == list(range(5))
    assert len({vid for _, _, vid in headers}) == 5
    assert '"c" → #2 entity "a_c"  box' in text and '"c" → #2 entity "a_c" (above)' in text
    assert '"a", "b" (2 edges) → #4 relation "[a|b]"' in text
    assert "conf 0.91" in text and "box [0.10 0.20 0.50 0.60]" in text
    assert all(len(line) <= 60 for line in text.splitlines() if "word" in line)
    assert sum(line.count("word") for line in text.splitlines()) == 60


def test_tree_ascii_and_missing_targets():
    g = _diamond()
    g.vertex("b").out_edges.append(Edge(source="b", text="ghost", target="ghost"))
    text = format_tree(g, ascii_only=True)
    assert '"ghost" -> "ghost" (missing vertex)' in text
    assert all(ord(ch) < 128 for ch in text)


def test_tree_of_a_cycle_terminates_and_shows_unreachable_vertices():
    g = _diamond()
    g.vertex("a_c").out_edges.append(Edge(source="a_c", text="loop", target="b"))
    g.vertex("b").in_edges.append(Edge(source="a_c", text="loop", target="b"))
    x = Vertex(vertex_id="x", label="entity", bbox=Bbox.full())
    x.out_edges.append(Edge(source="x", text="y", target="x"))
    x.in_edges.append(Edge(source="x", text="y", target="x"))
    g.vertices.append(x)
    g.invalidate_caches()
    text = format_tree(g)
    # b is now first met below a_c (through the loop) and referenced from the image vertex.
    assert '"loop" → #3 entity "b"  box' in text and '"b" → #3 entity "b" (above)' in text
    assert "(unreachable from the image vertex)" in text


def test_help_everywhere(run_cli):
    for name in ("ls", "show", "stats", "validate", "convert"):
        result = run_cli(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout


# ---------------------------------------------------------------------------- real subprocess
def test_real_gbc_process_on_bad_and_good_input(tmp_path, jsonl_file, gbc_bin):
    bad = _truncated(tmp_path)
    proc = subprocess.run([str(gbc_bin), "stats", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
    proc = subprocess.run([str(gbc_bin), "validate", str(jsonl_file)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "3 graphs checked: 3 valid, 0 invalid.\n"
