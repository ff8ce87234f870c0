"""Caption shards aligned with the input shards, and WebDataset exports with one image per graph."""

import json
import sys
import tarfile
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

import gbc
from gbc.cli.main import cli
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas.synthetic import synthetic_graph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "inputs"))
from input_helpers import img2dataset_folder, png_bytes, write_wds_shard  # noqa: E402

SCRIPTED = ["--mllm", "scripted", "--detector", "scripted", "--max-depth", "1", "--no-relation"]


def members(path):
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def test_caption_shards_line_up_with_the_input_shards(tmp_path):
    import webdataset as wds

    keys = img2dataset_folder(tmp_path / "in", shards=2, per_shard=3)
    write_wds_shard(tmp_path / "in" / "00002.tar", [{"__key__": "z1", "png": png_bytes(1)},
                                                    {"__key__": "z0", "txt": "no image"}])
    store = tmp_path / "o.lmdb"
    result = CliRunner().invoke(cli, ["annotate", str(tmp_path / "in"), "-o", str(store), *SCRIPTED])
    assert result.exit_code == 0, result.output
    with gbc.GraphStore(str(store), readonly=False) if hasattr(gbc, "GraphStore") else _writable(store) as s:
        s.delete(keys[1])  # an input sample the store does not hold
    out = tmp_path / "captions"
    result = CliRunner().invoke(cli, ["export", str(store), "-o", str(out), "--format", "wds",
                                      "--align-with", str(tmp_path / "in" / "{00000..00002}.tar"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["shards"], summary["done"], summary["failed"], summary["missing"]) == (3, 6, 1, 1)
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        original = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "in" / name), shardshuffle=False)]
        captions = list(wds.WebDataset(str(out / name), shardshuffle=False))
        assert [s["__key__"] for s in captions] == original  # same keys, same order
        assert not any(ext in s for s in captions for ext in ("jpg", "png"))  # captions only
    samples = {s["__key__"]: s for name in ("00000.tar", "00001.tar", "00002.tar")
               for s in wds.WebDataset(str(out / name), shardshuffle=False)}
    done = json.loads(samples[keys[0]]["json"])
    assert done["status"] == "done" and done["captions"] and samples[keys[0]]["txt"].decode() == done["captions"][0]["caption"]
    with gbc.open_store(str(store)) as s:
        assert done["graph"] == json.loads(s[keys[0]].to_json())
    assert json.loads(samples[keys[1]]["json"])["status"] == "missing"
    failed = json.loads(samples["z0"]["json"])
    assert failed["status"] == "failed" and failed["error_type"] == "NoImageMember" and "txt" not in samples["z0"]


def _writable(path):
    from gbc.store.lmdb_store import GraphStore

    return GraphStore(str(path), readonly=False)


def test_align_with_needs_wds_a_store_and_existing_shards(tmp_path):
    write_wds_shard(tmp_path / "a.tar", [{"__key__": "k", "png": png_bytes(0)}])
    with _writable(tmp_path / "s.lmdb"):
        pass
    run = lambda *a: CliRunner().invoke(cli, ["export", *map(str, a)])  # noqa: E731
    r = run(tmp_path / "s.lmdb", "-o", tmp_path / "c", "--align-with", tmp_path / "a.tar")
    assert r.exit_code != 0 and "--format wds" in r.output
    r = run(tmp_path / "s.lmdb", "-o", tmp_path / "c", "--format", "wds", "--align-with", tmp_path / "b.tar")
    assert r.exit_code != 0 and "does not exist" in r.output and "Traceback" not in r.output


def test_images_first_writes_each_image_once_per_graph(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = []
    for i in range(3):
        g = synthetic_graph(i)
        g.img_path = f"g{i}.jpg"
        Image.new("RGB", (64, 48), (40 * i, 90, 10)).save(images / g.img_path)
        graphs.append(g)
    pairs = [(g.img_path, g) for g in graphs]
    from gbc.export.captions import caption_rows

    # one image per region a caption describes (the whole image, or a crop), per graph
    distinct = sum(len({r.bbox for r in caption_rows(g, "gbc-captions")}) for g in graphs)
    every = export_graphs(pairs, tmp_path / "every", ExportOptions(fmt="wds", images_root=str(images)))
    once = export_graphs(pairs, tmp_path / "once", ExportOptions(fmt="wds", images_root=str(images), images="first"))
    assert every.rows == once.rows > distinct
    many, few = members(tmp_path / "every" / "00000.tar"), members(tmp_path / "once" / "00000.tar")
    jpgs = {n[:-4]: d for n, d in few if n.endswith(".jpg")}
    assert sum(n.endswith(".jpg") for n, _ in many) == every.rows and len(jpgs) == distinct
    image_bytes = lambda ms: sum(len(d) for n, d in ms if n.endswith(".jpg"))  # noqa: E731
    assert image_bytes(few) * every.rows <= image_bytes(many) * distinct * 1.5
    for name, data in few:
        if name.endswith(".json"):
            meta = json.loads(data)
            holder = meta.get("image_in", meta["key"])
            assert holder in jpgs  # every row finds its image in the same shard
    import pyarrow.parquet as pq

    statuses = pq.read_table(tmp_path / "once" / "00000.parquet").column("status").to_pylist()
    assert statuses.count("success") == distinct and statuses.count("shared_image") == every.rows - distinct
