"""Export and render read image files only inside the images root unless told otherwise."""

import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image

from gbc.cli.main import cli
from gbc.export.images import is_inside_roots, locate_image
from gbc.schemas.synthetic import synthetic_graph


@pytest.fixture
def layout(tmp_path):
    """images/ holds one good image and a symlink to a private file; private/ is outside."""
    images = tmp_path / "images"
    private = tmp_path / "private"
    images.mkdir()
    private.mkdir()
    Image.new("RGB", (40, 30), (0, 200, 0)).save(images / "good.jpg")
    Image.new("RGB", (40, 30), (200, 0, 0)).save(private / "secret.jpg")
    os.symlink(private / "secret.jpg", images / "link.jpg")
    return images, private


def _graph(seed, img_path):
    return synthetic_graph(seed).model_copy(update={"img_path": img_path})


def test_locate_image_refuses_escapes(layout):
    images, private = layout
    secret = private / "secret.jpg"
    assert locate_image("good.jpg", images).path == images / "good.jpg"
    for escaping in ("../private/secret.jpg", str(secret), "link.jpg"):
        found = locate_image(escaping, images)
        assert found.path is None and found.refused is not None, escaping
        assert os.path.realpath(found.refused) == os.path.realpath(secret)
        assert locate_image(escaping, images, allow_outside=True).path is not None
    # A recorded path of another machine still finds its base name inside the root.
    assert locate_image("/elsewhere/good.jpg", images).path == images / "good.jpg"
    assert locate_image("/elsewhere/none.jpg", images).path is None
    assert locate_image("/elsewhere/none.jpg", images).refused is None
    assert is_inside_roots(images / "good.jpg", [private, images])
    assert not is_inside_roots(images / "link.jpg", [images])


@pytest.mark.parametrize("fmt", ["csv", "wds"])
def test_export_refuses_and_names_files_outside_the_root(layout, tmp_path, fmt):
    images, private = layout
    graphs = [_graph(0, "good.jpg"), _graph(1, "../private/secret.jpg"), _graph(2, str(private / "secret.jpg")),
              _graph(3, "link.jpg")]
    src = tmp_path / "g.jsonl"
    src.write_bytes(b"\n".join(g.to_json() for g in graphs) + b"\n")
    out = tmp_path / ("train.csv" if fmt == "csv" else "shards")
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(out), "--format", fmt, "--images-root", str(images),
                                 "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["graphs_exported"] == 1
    assert summary["skipped_outside_root"] == 3
    assert [name.split(":")[0] for name in summary["refused_images"]] == [
        "../private/secret.jpg", str(private / "secret.jpg"), "link.jpg"]
    secret = (private / "secret.jpg").read_bytes()
    if fmt == "csv":  # rows name the source files: none of them resolves to the private file
        rows = out.read_text().splitlines()[1:]
        assert rows and {os.path.realpath(row.split("\t")[0]) for row in rows} == {str((images / "good.jpg").resolve())}
    else:  # images are copied into the tars byte for byte: the private one never is
        tars = list(out.glob("*.tar"))
        assert tars and all(secret not in tar.read_bytes() for tar in tars)
    # Text output names the refusals too.
    out2 = tmp_path / ("again.csv" if fmt == "csv" else "again")
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(out2), "--format", fmt, "--images-root", str(images)],
                           catch_exceptions=False)
    assert "outside the images root (refused): 3" in r.output
    assert "refused: link.jpg" in r.output


def test_export_allow_outside_root_reads_them(layout, tmp_path):
    images, private = layout
    src = tmp_path / "g.jsonl"
    src.write_bytes(_graph(1, "../private/secret.jpg").to_json() + b"\n")
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(tmp_path / "t.csv"), "--images-root", str(images),
                                 "--allow-outside-root", "--json"], catch_exceptions=False)
    summary = json.loads(r.output)
    assert summary["graphs_exported"] == 1 and summary["skipped_outside_root"] == 0


def test_render_refuses_an_image_outside_the_root(layout, tmp_path):
    images, private = layout
    src = tmp_path / "g.jsonl"
    src.write_bytes(_graph(1, "../private/secret.jpg").to_json() + b"\n")
    out = tmp_path / "pic.png"
    r = CliRunner().invoke(cli, ["render", str(src), "0", "-o", str(out), "--images-root", str(images)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "refused" in r.output and "secret.jpg" in r.output
    r = CliRunner().invoke(cli, ["render", str(src), "0", "-o", str(out), "--images-root", str(images),
                                 "--allow-outside-root"], catch_exceptions=False)
    assert r.exit_code == 0 and "refused" not in r.output and "not found" not in r.output
