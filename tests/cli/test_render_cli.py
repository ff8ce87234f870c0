import subprocess
import sys

import pytest
from PIL import Image

from gbc.schemas.synthetic import synthetic_graph


@pytest.fixture
def graphs_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = [synthetic_graph(i) for i in range(3)]
    Image.new("RGB", (320, 240), (90, 90, 90)).save(images / "00000001.jpg")
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"\n".join(g.to_json() for g in graphs) + b"\n")
    return path, images, graphs


@pytest.mark.parametrize("key", ["images/00000001.jpg", "00000001.jpg", "1"])
def test_render_by_key_name_or_position(graphs_file, tmp_path, key, run_cli):
    path, images, _ = graphs_file
    out = tmp_path / "pic.png"
    r = run_cli("render", path, key, "-o", out, "--images-root", images, "--height", "300")
    assert r.exit_code == 0, r.output
    picture = Image.open(out)
    assert picture.height == 300 and picture.width > 400  # 300 x 400 image panel + graph panel
    assert picture.getpixel((200, 150)) != (255, 255, 255)


def test_render_highlight_and_missing_image(graphs_file, tmp_path, run_cli):
    path, _, graphs = graphs_file
    vid = graphs[0].vertices[1].vertex_id
    out = tmp_path / "h.png"
    r = run_cli("render", path, "0", "-o", out, "--vertex", vid)
    assert r.exit_code == 0
    assert "blank canvas" in r.output  # stderr is mixed into output by the runner
    assert Image.open(out).height == 800


def test_render_from_a_store(tmp_path, run_cli):
    import gbc

    gbc.write_graphs(tmp_path / "s.lmdb", [synthetic_graph(i) for i in range(2)])
    out = tmp_path / "s.png"
    r = run_cli("render", tmp_path / "s.lmdb", "images/00000000.jpg", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{src}", "nope.jpg", "-o", "x.png"], "no graph 'nope.jpg'"),
        (["{src}", "0", "-o", "x.png", "--vertex", "zebra"], "no vertex 'zebra'"),
        (["{src}", "0", "-o", "x.txt"], "must end in .png"),
        (["missing.jsonl", "0", "-o", "x.png"], "no such file"),
    ],
)
def test_render_bad_input_is_one_line_error(graphs_file, tmp_path, args, message):
    path, _, _ = graphs_file
    args = [a.format(src=path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "gbc.cli.main", "render", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
