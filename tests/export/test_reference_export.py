"""Export the reference graphs in every format and read them back with the users' libraries."""

import csv
from collections import Counter

import pytest

from gbc.export.captions import caption_rows
from gbc.export.source import open_source
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas import GbcGraph

# Rows per caption type of the 19 reference graphs under gbc-captions (hardcode excluded,
# captions over 77 estimated tokens split at sentences).
EXPECTED_TYPES = {"composition-composition", "detail-entity", "detail-image", "relation-relation",
                  "short-composition", "short-image"}


@pytest.fixture(scope="module")
def reference(reference_jsonl, reference_dir):
    graphs = [GbcGraph.from_json(line) for line in open(reference_jsonl, "rb") if line.strip()]
    return graphs, reference_dir / "images"


def _expected_counts(graphs, strategy):
    return Counter(r.caption_type for g in graphs for r in caption_rows(g, strategy))


@pytest.mark.parametrize("strategy, formats", [("gbc-captions", ("csv", "wds", "parquet")), ("region", ("wds",))])
def test_reference_export_every_format(reference, reference_jsonl, tmp_path, strategy, formats):
    import pyarrow.dataset as ds
    import webdataset as wds

    graphs, images = reference
    expected = _expected_counts(graphs, strategy)
    assert set(expected) == EXPECTED_TYPES
    counts = {}
    for fmt in formats:
        out = tmp_path / ("train.csv" if fmt == "csv" else fmt)
        pairs, _ = open_source(reference_jsonl)
        s = export_graphs(pairs, out, ExportOptions(fmt=fmt, strategy=strategy, images_root=str(images),
                                                    max_side=256, shard_size=200))
        assert s.graphs_read == s.graphs_exported == len(graphs)  # every image found by basename
        assert s.rows_by_type == expected
        if fmt == "csv":
            with open(out, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            assert all(r["filepath"] for r in rows)
            counts[fmt] = len(rows)
        elif fmt == "wds":
            shards = sorted(str(p) for p in out.glob("*.tar"))
            samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json"))
            assert all(max(img.size) <= 256 for img, _, _ in samples)
            assert Counter(meta["caption_type"] for _, _, meta in samples) == expected
            counts[fmt] = len(samples)
        else:
            table = ds.dataset(str(out), format="parquet").to_table()
            assert Counter(table.column("caption_type").to_pylist()) == expected
            assert table.column("image").null_count == 0
            counts[fmt] = table.num_rows
    assert counts == {fmt: sum(expected.values()) for fmt in formats}


@pytest.mark.parametrize("strategy", ["short", "detail", "concat", "structured"])
def test_reference_text_only_strategies(reference, reference_jsonl, tmp_path, strategy):
    graphs, _ = reference
    pairs, _ = open_source(reference_jsonl)
    s = export_graphs(pairs, tmp_path / "t.csv", ExportOptions(fmt="csv", strategy=strategy, text_only=True))
    assert s.graphs_exported == len(graphs)
    with open(tmp_path / "t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == s.rows >= len(graphs)
    assert rows[0]["filepath"] == graphs[0].img_path
