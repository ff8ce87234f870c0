"""Text-only WebDataset and Parquet shards (written a graph at a time) read back row by row."""

import json
import tarfile
from array import array

import pytest

from gbc.export.captions import CaptionFilter, caption_rows
from gbc.export.source import keyed
from gbc.export.tar import TarWriter
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas.synthetic import synthetic_graph


def _graphs():
    graphs = [synthetic_graph(i) for i in range(5)]
    graphs[1].vertices[1].descs[0].text = 'tab\there, "quotes", ünïcödé'
    return graphs


def _samples(out):
    """``{key: {ext: bytes}}`` over every tar of ``out``, in archive order, checked by tarfile."""
    samples = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


@pytest.mark.parametrize("shard_size", [1, 3, 7, 10_000])
@pytest.mark.parametrize("policy", ["first", "all", "none"])
@pytest.mark.parametrize("strategy", ["gbc-captions", "region"])
def test_text_only_samples_across_shards(tmp_path, shard_size, policy, strategy):
    import pyarrow.parquet as pq

    graphs = _graphs()
    flt = CaptionFilter(exact_tokens=False)
    out = tmp_path / "w"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="wds", strategy=strategy, text_only=True,
                                                      shard_size=shard_size, graph_json=policy, caption_filter=flt))
    expected = [(key, i, row) for key, g in keyed(graphs) for i, row in enumerate(caption_rows(g, strategy, flt))]
    assert s.rows == len(expected)
    samples = _samples(out)
    width = max(4, len(str(shard_size - 1)))
    keys = [f"{n // shard_size:05d}{n % shard_size:0{width}d}" for n in range(len(expected))]
    assert list(samples) == keys
    graph_of = {key: g for key, g in keyed(graphs)}
    for key, (image_key, i, row) in zip(keys, expected):
        sample = samples[key]
        assert sorted(sample) == ["json", "txt"]
        assert sample["txt"].decode("utf-8") == row.text
        meta = json.loads(sample["json"])
        graph = meta.pop("graph", None)
        assert meta == {"key": key, "image_key": image_key, "caption_type": row.caption_type,
                        "vertex_id": row.vertex_id, "vertex_label": row.vertex_label, "desc_label": row.desc_label,
                        "bbox": list(row.bbox) if row.bbox is not None else None}
        carries = policy == "all" or (policy == "first" and i == 0)
        assert (graph is not None) == carries
        if carries:
            assert graph == json.loads(graph_of[image_key].to_json())
    index = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [r["key"] for r in index] == keys
    assert [r["caption"] for r in index] == [row.text for _, _, row in expected]
    assert {r["status"] for r in index} == {"text_only"} and {r["width"] for r in index} == {None}
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    assert sum(st["count"] for st in stats) == sum(st["text_only"] for st in stats) == len(expected)
    assert all(st["successes"] == 0 for st in stats)
    by_type = {}
    for st in stats:
        for k, v in st["caption_types"].items():
            by_type[k] = by_type.get(k, 0) + v
    assert by_type == dict(s.rows_by_type)


def test_webdataset_reads_text_only_shards(tmp_path):
    import webdataset as wds

    graphs = _graphs()
    out = tmp_path / "w"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="wds", text_only=True, shard_size=9))
    n = len(list(out.glob("*.tar")))
    url = str(out / f"{{00000..{n - 1:05d}}}.tar")
    got = [(txt, meta["caption_type"]) for txt, meta in
           wds.WebDataset(url, shardshuffle=False).decode().to_tuple("txt", "json")]
    assert got == [(r.text, r.caption_type) for g in graphs for r in caption_rows(g)]
    assert len(got) == s.rows


def test_tar_members_added_together_or_one_by_one_give_the_same_archive(tmp_path):
    members = [(b"000000000.txt", b""), (b"000000000.json", b"{}" * 256), (b"a" * 100, b"x" * 511),
               (b"\xc3\xa9.txt", b"y" * 513), (b"big", bytes(range(256)) * 300)]  # 76,800 bytes: not cached
    together, one_by_one = TarWriter(tmp_path / "a.tar"), TarWriter(tmp_path / "b.tar")
    together.add_many(members)
    together.add_many(members[:2])  # sizes seen before
    for name, data in members + members[:2]:
        one_by_one.add(name.decode("utf-8"), data)
    together.close(), one_by_one.close()
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:  # tarfile checks every header checksum
        got = [(m.name.encode("utf-8"), tar.extractfile(m).read()) for m in tar.getmembers()]
    assert got == members + members[:2]
    refusing = TarWriter(tmp_path / "c.tar")
    with pytest.raises(ValueError, match="too long"):
        refusing.add_many([(b"x" * 101, b"")])
    refusing.close()


def test_tar_samples_written_by_columns_match_members_added_one_by_one(tmp_path):
    keys = [b"000000000", b"000000001", "é".encode() * 45]  # the last: a 90-byte key, 95 with ".json"
    texts = [b"", b"t" * 512, b"caption"]
    metas = [b"{}" * 300, b"{}", b"x" * 70_000]  # 70,000 bytes: a size that is not cached
    by_columns, one_by_one = TarWriter(tmp_path / "a.tar"), TarWriter(tmp_path / "b.tar")
    by_columns.add_samples(keys, ((b".txt", texts), (b".json", metas)))
    by_columns.add_samples(keys[:1], ((b".txt", texts[:1]), (b".json", metas[:1])))  # checksums seen before
    members = [(k + ext, data) for k, t, m in zip(keys, texts, metas) for ext, data in ((b".txt", t), (b".json", m))]
    members += members[:2]
    for name, data in members:
        one_by_one.add(name.decode("utf-8"), data)
    by_columns.close(), one_by_one.close()
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        got = [(m.name.encode("utf-8"), tar.extractfile(m).read()) for m in tar.getmembers()]
    assert got == members
    refusing = TarWriter(tmp_path / "c.tar")
    refusing.add_samples(keys[:1], ((b".txt", texts[:1]),))
    with pytest.raises(ValueError, match="too long"):  # the second key: 101 bytes with the extension
        refusing.add_samples([b"k" * 90, b"k" * 96], ((b".json", [b"{}", b"{}"]),))
    refusing.close()
    with tarfile.open(tmp_path / "c.tar") as tar:  # the refused call left no member behind
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == [("000000000.txt", b"")]


@pytest.mark.parametrize("shard_size", [7, 1_500, 10_000])
@pytest.mark.parametrize("strategy", ["gbc-captions", "region"])
def test_parquet_text_only_columns_across_shards_and_row_groups(tmp_path, shard_size, strategy):
    import pyarrow.parquet as pq

    from gbc.export.parquet_writer import PARQUET_ROW_GROUP

    graphs = [synthetic_graph(i) for i in range(150)]  # over 2,000 rows: more than one row group
    graphs[3].img_path = None  # text-only rows keep the recorded path, or the URL
    flt = CaptionFilter(exact_tokens=False)
    out = tmp_path / "pq"
    s = export_graphs(keyed(graphs), out, ExportOptions(fmt="parquet", strategy=strategy, text_only=True,
                                                      shard_size=shard_size, caption_filter=flt))
    expected = [(key, g, row) for key, g in keyed(graphs) for row in caption_rows(g, strategy, flt)]
    assert s.rows == len(expected) > PARQUET_ROW_GROUP
    files = sorted(out.glob("*.parquet"))
    assert len(files) == -(-len(expected) // shard_size)
    for f in files:
        groups = [pq.ParquetFile(f).metadata.row_group(i).num_rows for i in range(pq.ParquetFile(f).num_row_groups)]
        assert all(n == PARQUET_ROW_GROUP for n in groups[:-1]) and 0 < groups[-1] <= PARQUET_ROW_GROUP
    got = [r for f in files for r in pq.read_table(f).to_pylist()]
    width = max(4, len(str(shard_size - 1)))
    for n, (r, (key, g, row)) in enumerate(zip(got, expected)):
        box = list(array("f", row.bbox or (0.0, 0.0, 1.0, 1.0)))  # stored as float32
        assert r == {"key": f"{n // shard_size:05d}{n % shard_size:0{width}d}", "image_key": key,
                     "caption": row.text, "caption_type": row.caption_type, "vertex_id": row.vertex_id,
                     "vertex_label": row.vertex_label, "desc_label": row.desc_label,
                     "left": box[0], "top": box[1], "right": box[2], "bottom": box[3], "image_path": g.img_path or g.img_url or "",
                     "image": None, "width": None, "height": None}
    assert len(got) == len(expected)


@pytest.mark.parametrize("fmt", ["wds", "parquet"])
def test_keys_of_shards_too_large_to_keep_their_key_suffixes(tmp_path, monkeypatch, fmt):
    # shards over MAX_KEY_SUFFIXES_KEPT format each key; the keys are the same
    import pyarrow.parquet as pq

    from gbc.export import writer_base

    graphs = _graphs()
    keys = {}
    for kept in (writer_base.MAX_KEY_SUFFIXES_KEPT, 2):
        monkeypatch.setattr(writer_base, "MAX_KEY_SUFFIXES_KEPT", kept)
        out = tmp_path / f"{fmt}-{kept}"
        export_graphs(keyed(graphs), out, ExportOptions(fmt=fmt, text_only=True, shard_size=7, graph_json="none"))
        keys[kept] = [r["key"] for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert keys[2] == keys[writer_base.MAX_KEY_SUFFIXES_KEPT]
    assert keys[2] == [f"{n // 7:05d}{n % 7:04d}" for n in range(len(keys[2]))] and len(keys[2]) > 14
