import csv
import json
import tarfile

import pytest
from PIL import Image

from gbc.export.captions import CaptionFilter, caption_rows
from gbc.export.source import graph_key, keyed, open_source
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex
from gbc.schemas.synthetic import synthetic_graph

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _two_colour_graph(img_path):
    """Left half red, right half blue; one entity per half."""
    root = Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                  descs=[Description(text="A red and a blue square.", label="short")])
    left = Vertex(vertex_id="red", bbox=Bbox.from_xyxy((0.0, 0.0, 0.5, 1.0)), label="entity",
                  descs=[Description(text="A red square.", label="detail")])
    right = Vertex(vertex_id="blue", bbox=Bbox.from_xyxy((0.5, 0.0, 1.0, 1.0)), label="entity",
                   descs=[Description(text="A blue square.", label="detail")])
    for child in (left, right):
        e = Edge(source="", text=child.vertex_id, target=child.vertex_id)
        root.out_edges.append(e)
        child.in_edges.append(e.model_copy())
    return GbcGraph(vertices=[root, left, right], img_path=img_path)


@pytest.fixture
def dataset(tmp_path):
    """Graphs with: 2 JPEGs, 1 PNG, 1 URL-only, 1 missing file, 1 corrupt file."""
    images = tmp_path / "images"
    images.mkdir()
    img = Image.new("RGB", (200, 100), RED)
    img.paste(BLUE, (100, 0, 200, 100))
    img.save(images / "two.jpg", quality=98)
    img.save(images / "two.png")
    Image.new("RGB", (64, 48), (0, 128, 0)).save(images / "syn.jpg")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    graphs = [_two_colour_graph("/somewhere/else/two.jpg"), _two_colour_graph("two.png")]
    syn = synthetic_graph(0)
    syn.img_path = "data/syn.jpg"
    graphs.append(syn)
    url_only = synthetic_graph(1)
    url_only.img_path = None
    graphs.append(url_only)
    missing = synthetic_graph(2)  # images/00000002.jpg does not exist
    graphs.append(missing)
    broken = synthetic_graph(3)
    broken.img_path = "broken.jpg"
    graphs.append(broken)
    return graphs, images


def _rows(graphs, strategy="gbc-captions"):
    return sum(len(caption_rows(g, strategy)) for g in graphs)


def test_csv_reads_back_with_a_tab_separator(dataset, tmp_path):
    graphs, images = dataset
    out = tmp_path / "train.csv"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="csv", images_root=str(images)))
    assert (s.graphs_read, s.graphs_exported, s.skipped_missing_image, s.skipped_image_error) == (6, 3, 2, 1)
    assert "broken.jpg" in s.errors[0]
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == s.rows == _rows(graphs[:3])
    assert set(rows[0]) == {"filepath", "title"}
    assert rows[0]["title"] == "A red and a blue square."
    # whole JPEG images are referenced where they are; the PNG too (no re-encoding needed for a path)
    assert rows[0]["filepath"] == str((images / "two.jpg").resolve())
    assert sum(s.rows_by_type.values()) == s.rows


def test_csv_region_crops_are_written_beside_it(dataset, tmp_path):
    graphs, images = dataset
    out = tmp_path / "regions.csv"
    s = export_graphs(keyed(graphs[:1]), out, ExportOptions(fmt="csv", strategy="region", images_root=str(images)))
    with open(out, newline="") as fh:
        rows = {r["title"]: r["filepath"] for r in csv.DictReader(fh, delimiter="\t")}
    assert s.rows == 3
    red = Image.open(rows["A red square."]).convert("RGB")
    assert red.size == (100, 100)
    assert red.getpixel((50, 50))[0] > 180 and red.getpixel((50, 50))[2] < 80
    assert rows["A red square."].startswith(str(tmp_path / "regions_images"))


def test_webdataset_reads_back_as_open_clip_does(dataset, tmp_path):
    import webdataset as wds

    graphs, images = dataset
    out = tmp_path / "wds"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="wds", strategy="region", images_root=str(images),
                                                      shard_size=10, max_side=50))
    n_shards = (s.rows + 9) // 10
    assert sorted(p.name for p in out.glob("*.tar")) == [f"{i:05d}.tar" for i in range(n_shards)]
    url = str(out / f"{{00000..{n_shards - 1:05d}}}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False).decode("pil").to_tuple("jpg", "txt"))
    assert len(samples) == s.rows
    by_text = {txt: img for img, txt in samples}
    assert max(by_text["A red and a blue square."].size) == 50  # max side applied
    blue = by_text["A blue square."]
    px = blue.getpixel((blue.width // 2, blue.height // 2))
    assert px[2] > 180 and px[0] < 80
    # names follow img2dataset: 9-digit keys, .jpg/.txt/.json members
    with tarfile.open(out / "00000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("000000000.json").read())
    assert names[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]
    assert meta["key"] == "000000000" and meta["image_key"] == "/somewhere/else/two.jpg"
    assert GbcGraph.from_dict(meta["graph"]).to_dict() == graphs[0].to_dict()


def test_webdataset_parquet_index_per_shard(dataset, tmp_path):
    import pyarrow.parquet as pq

    graphs, images = dataset
    out = tmp_path / "wds"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="wds", images_root=str(images), shard_size=10))
    tables = [pq.read_table(p) for p in sorted(out.glob("*.parquet"))]
    assert sum(t.num_rows for t in tables) == s.rows
    first = tables[0].to_pylist()[0]
    assert {"key", "caption", "status", "error_message", "width", "height"} <= set(first)
    assert first["status"] == "success" and first["width"] == 200
    stats = json.loads((out / "00000_stats.json").read_text())
    assert stats["count"] == tables[0].num_rows


def test_text_only_exports_every_graph_without_images(dataset, tmp_path):
    import pyarrow.parquet as pq

    graphs, images = dataset
    out = tmp_path / "pq"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="parquet", text_only=True, shard_size=1000))
    assert s.graphs_exported == s.graphs_text_only == 6 and s.skipped_missing_image == 0
    table = pq.read_table(out / "00000.parquet")
    assert table.num_rows == s.rows == _rows(graphs)
    assert table.column("image").null_count == table.num_rows


def test_missing_images_exported_text_only_when_asked(dataset, tmp_path):
    graphs, images = dataset
    s = export_graphs(keyed(graphs), tmp_path / "t.csv", ExportOptions(fmt="csv", images_root=str(images), missing="text"))
    assert (s.graphs_exported, s.graphs_text_only, s.skipped_missing_image, s.skipped_image_error) == (5, 2, 0, 1)


def test_parquet_flat_columns_with_image_bytes(dataset, tmp_path):
    import io

    import pyarrow.dataset as ds

    graphs, images = dataset
    out = tmp_path / "pq"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="parquet", strategy="region", images_root=str(images),
                                                      shard_size=4))
    table = ds.dataset(str(out), format="parquet").to_table()
    assert table.num_rows == s.rows
    assert len(list(out.glob("*.parquet"))) == (s.rows + 3) // 4
    for name in ("key", "image_key", "caption", "caption_type", "vertex_id", "left", "image", "width"):
        assert name in table.column_names
    row = next(r for r in table.to_pylist() if r["caption"] == "A red square.")
    assert (row["left"], row["right"]) == (0.0, 0.5)
    crop = Image.open(io.BytesIO(row["image"]))
    assert crop.size == (row["width"], row["height"]) == (100, 100)


def test_source_reads_jsonl_and_keys_graphs(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"\n".join(synthetic_graph(i).to_json() for i in range(3)) + b"\n")
    pairs, total = open_source(path)
    keys = [k for k, _ in pairs]
    assert keys == [f"images/{i:08d}.jpg" for i in range(3)]
    assert graph_key(synthetic_graph(0).model_copy(update={"img_path": None, "img_url": None}), 7) == "#7"
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("kwargs, match", [({"fmt": "zip"}, "format"), ({"strategy": "x"}, "strategy"),
                                           ({"shard_size": 0}, "shard_size"), ({"missing": "keep"}, "missing")])
def test_options_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExportOptions(**kwargs)


def test_filters_reach_the_writer(tmp_path):
    s = export_graphs(keyed([synthetic_graph(0)]), tmp_path / "x.csv",
                      ExportOptions(fmt="csv", text_only=True,
                                    caption_filter=CaptionFilter(vertex_labels=["relation"])))
    assert set(s.rows_by_type) == {"relation-relation"}


def test_source_reads_a_store_with_its_keys(tmp_path):
    import gbc

    graphs = [synthetic_graph(i) for i in range(4)]
    gbc.write_graphs(tmp_path / "s.lmdb", graphs)
    pairs, total = open_source(tmp_path / "s.lmdb")
    got = dict(pairs)
    assert total == 4 and len(got) == 4
    out = tmp_path / "o.csv"
    s = export_graphs(open_source(tmp_path / "s.lmdb")[0], out, ExportOptions(fmt="csv", strategy="short", text_only=True))
    assert s.rows == 4


@pytest.mark.parametrize("policy, with_graph", [("all", 3), ("first", 1), ("none", 0)])
def test_wds_graph_json_policy(dataset, tmp_path, policy, with_graph):
    graphs, images = dataset
    out = tmp_path / "w"
    export_graphs(keyed(graphs[:1]), out, ExportOptions(fmt="wds", images_root=str(images), strategy="region",
                                                      graph_json=policy))
    with tarfile.open(out / "00000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(metas) == 3
    assert sum("graph" in m for m in metas) == with_graph
    assert all(m["image_key"] == "/somewhere/else/two.jpg" for m in metas)


def test_parquet_loads_with_hugging_face_datasets(dataset, tmp_path):
    import datasets  # in the test extra
    graphs, images = dataset
    out = tmp_path / "pq"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="parquet", images_root=str(images), shard_size=5))
    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in out.glob("*.parquet")), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == s.rows
    ds = ds.cast_column("image", datasets.Image())
    assert ds[0]["image"].size == (200, 100)


def test_tar_writer_output_is_read_by_tarfile_and_rejects_long_names(tmp_path):
    from gbc.export.tar import TarWriter

    w = TarWriter(tmp_path / "a.tar")
    payloads = {"000000000.txt": b"hello", "000000000.json": b"{}" * 300, "empty.jpg": b"", "block": b"z" * 512}
    for name, data in payloads.items():
        w.add(name, data)
    with pytest.raises(ValueError, match="too long"):
        w.add("x" * 101, b"")
    w.close()
    with tarfile.open(tmp_path / "a.tar") as tar:  # tarfile checks every header checksum
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == payloads


def test_tar_writer_finishes_short_writes(tmp_path, monkeypatch):
    import os

    from gbc.export import tar as tar_module

    payloads = {f"{i:09d}.txt": (b"caption %d " % i) * (i % 7) for i in range(5000)}  # > _IOV_MAX buffers
    calls = []
    real_writev = os.writev

    def short_writev(fd, buffers):  # the kernel may take less than it was given
        calls.append(len(buffers))
        head = b"".join(buffers)
        return real_writev(fd, [head[: len(head) // 3]])

    monkeypatch.setattr(tar_module.os, "writev", short_writev)
    monkeypatch.setattr(tar_module.TarWriter, "_FLUSH_BYTES", 1 << 23)  # one flush of 5,000 buffers
    w = tar_module.TarWriter(tmp_path / "a.tar")
    for name, data in payloads.items():
        w.add(name, data)
    w.close()
    assert len(calls) > 3 and max(calls) == tar_module._IOV_MAX
    with tarfile.open(tmp_path / "a.tar") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == payloads


def test_workers_give_the_same_shards(dataset, tmp_path):
    graphs, images = dataset
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        s = export_graphs(keyed(graphs), out, ExportOptions(fmt="wds", strategy="region", images_root=str(images),
                                                          shard_size=7, workers=workers, max_side=64))
        outs[workers] = ({p.name: p.read_bytes() for p in out.glob("*.tar")}, s.to_dict())
    assert outs[1][0] == outs[2][0]
    summary1, summary2 = outs[1][1], outs[2][1]
    summary1.pop("files"), summary2.pop("files")
    assert summary1 == summary2 and summary1["skipped_image_error"] == 1


@pytest.mark.parametrize("text, path", [
    ("plain caption, no quoting", "a/b.jpg"),
    ('a "quoted" word', "a/b.jpg"),
    ("a\ttab inside", "a/b.jpg"),
    ("two\nlines", "a/b.jpg"),
    ("carriage\rreturn", "a/b.jpg"),
    ("plain caption", 'odd"path\t.jpg'),
    ("plain caption", ""),
])
def test_csv_text_only_lines_are_what_the_csv_module_writes(tmp_path, text, path):
    # Text-only rows skip the csv module when no field needs quoting: the bytes must match it.
    root = Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                  descs=[Description(text=text, label="short"), Description(text="Second one.", label="detail")])
    graph = GbcGraph(vertices=[root], img_path=path or None, img_url=None)
    out = tmp_path / "t.csv"
    export_graphs(keyed([graph]), out, ExportOptions(text_only=True))
    expected = tmp_path / "expected.csv"
    with open(expected, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        w.writerows([(path, r.text) for r in caption_rows(graph)])
    if "\r" not in text:
        assert out.read_bytes() == expected.read_bytes()
    else:  # the csv module leaves a lone \r unquoted (its reader then splits the row there): quoted here
        assert out.read_bytes() == expected.read_bytes().replace(b"carriage\rreturn", b'"carriage\rreturn"')
    with open(out, newline="", encoding="utf-8") as fh:
        assert [row[1] for row in csv.reader(fh, delimiter="\t")][1:] == [text.strip(), "Second one."]


def test_csv_rows_with_images_quote_a_lone_carriage_return(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    root = Vertex(vertex_id="", bbox=Bbox.full(), label="image",
                  descs=[Description(text="one\rrow", label="short"), Description(text="next", label="detail")])
    graph = GbcGraph(vertices=[root], img_path="a.jpg", img_url=None)
    Image.new("RGB", (8, 8)).save(images / "a.jpg")
    out = tmp_path / "t.csv"
    export_graphs(keyed([graph]), out, ExportOptions(images_root=str(images)))
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert [row[1] for row in rows] == ["title", "one\rrow", "next"]
    pandas = pytest.importorskip("pandas")
    assert pandas.read_csv(out, sep="\t")["title"].tolist() == ["one\rrow", "next"]


@pytest.mark.parametrize("shard_size", [1, 3, 10, 10_000, 100_001])
def test_parquet_keys_and_row_groups_across_shards(tmp_path, shard_size):
    import pyarrow.parquet as pq

    graphs = [synthetic_graph(i) for i in range(4)]
    out = tmp_path / "pq"
    summary = export_graphs(keyed(graphs), out, ExportOptions(fmt="parquet", text_only=True, shard_size=shard_size))
    tables = [pq.read_table(f) for f in sorted(out.glob("*.parquet"))]
    keys = [k for t in tables for k in t.column("key").to_pylist()]
    width = max(4, len(str(shard_size - 1)))
    assert keys == [f"{i // shard_size:05d}{i % shard_size:0{width}d}" for i in range(summary.rows)]
    captions = [c for t in tables for c in t.column("caption").to_pylist()]
    assert captions == [r.text for g in graphs for r in caption_rows(g)]
