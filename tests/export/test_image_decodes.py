"""Exports with images decode each graph's image at most once."""

import pytest
from PIL import Image

from gbc.export.source import keyed
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas.synthetic import synthetic_graph


@pytest.fixture
def decodes(monkeypatch):
    """Counts image decodes (PIL makes one decoder per decoded image; a probe of the header
    makes none)."""
    import PIL.Image

    count = {"n": 0}
    real = PIL.Image._getdecoder

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "_getdecoder", counting)
    return count


@pytest.fixture
def graphs_with_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = []
    for i, suffix in enumerate(["jpg", "jpg", "png"]):
        Image.new("RGB", (320, 240), (90 * i, 60, 200)).save(images / f"img_{i}.{suffix}")
        g = synthetic_graph(i)
        g.img_path = f"img_{i}.{suffix}"
        assert sum(v.label != "image" for v in g.vertices) > 1  # several crops per graph
        graphs.append(g)
    return graphs, images


@pytest.mark.parametrize("fmt", ["wds", "parquet", "csv"])
@pytest.mark.parametrize("strategy, max_side, per_jpeg, per_png", [
    ("region", 64, 1, 1),  # whole image resized and crops: one full decode
    ("region", None, 1, 1),  # crops (the JPEG whole image is copied)
    ("gbc-captions", 64, 1, 1),  # whole image only, resized (a reduced-size JPEG decode)
    ("gbc-captions", None, 0, 1),  # whole image copied as it is; a PNG is re-encoded
])
def test_each_image_is_decoded_at_most_once(graphs_with_images, tmp_path, decodes, fmt, strategy, max_side,
                                            per_jpeg, per_png):
    graphs, images = graphs_with_images
    out = tmp_path / ("out.csv" if fmt == "csv" else "out")
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt=fmt, strategy=strategy, images_root=str(images),
                                                      max_side=max_side))
    assert s.graphs_exported == 3 and s.graphs_text_only == 0
    if strategy == "region":
        assert s.rows_by_type["detail-entity"] > 0  # crops were made
    assert decodes["n"] == 2 * per_jpeg + per_png
