"""Exports read a store's graphs as read-only views where they can, and write the same bytes."""

import tarfile

import pytest
from click.testing import CliRunner
from PIL import Image

from gbc.cli.main import cli
from gbc.export.captions import STRATEGIES, CaptionFilter
from gbc.export.source import open_source, reads_views
from gbc.export.writers import ExportOptions, export_graphs
from gbc.schemas.synthetic import synthetic_graph
from gbc.schemas.views import GraphView
from gbc.store import GraphStore


def _store(path, graphs):
    with GraphStore(path, readonly=False, dict_train_samples=0) as store:
        store.put_many((f"img{i:03d}", g) for i, g in enumerate(graphs))
    return path


def _graphs(n=40):
    graphs = [synthetic_graph(i) for i in range(n)]
    graphs[3].vertices[1].descs[0].text = 'tab\there, "quotes", ünïcödé'
    return graphs


def _written(out):
    """Every file an export wrote, by relative path: tar members listed, Parquet read as rows."""
    import pyarrow.parquet as pq

    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else [out]:
        name = path.relative_to(out).as_posix() if out.is_dir() else path.name
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                files[name] = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        elif path.suffix == ".parquet":
            files[name] = pq.read_table(path).to_pylist()
        else:
            files[name] = path.read_bytes()
    return files


def _export(src, out, options, view):
    pairs, _ = open_source(src, view=view)
    first = []

    def noting(pairs):
        for key, graph in pairs:
            first.append(type(graph))
            yield key, graph

    summary = export_graphs(noting(pairs), out, options)
    if view != "json":  # which graphs come as full graphs with "json": see test_graph_json
        assert set(first) == ({GraphView} if view else {type(synthetic_graph(0))})
    return summary


def _odd_graphs():
    """Graphs whose JSON holds what views leave out: extra fields at every level, in-edges the
    out-edges do not imply, in-edges sorted by source id, odd keys."""
    graphs = _graphs(12)
    graphs[0].vertices[0].descs[0].__pydantic_extra__["score"] = 0.25  # extras in a description
    graphs[1].__pydantic_extra__["source_dataset"] = "wiki ünï"  # a graph-level extra field
    graphs[2].vertices[1].__pydantic_extra__["note"] = [1, 2.5e-07, None]  # vertex extra: full graph
    edge = next(e for v in graphs[4].vertices for e in v.out_edges)
    edge.__pydantic_extra__["weight"] = 1.0
    graphs[5].vertices[-1].in_edges = []  # in-edges that out-edges do not imply: stored explicitly
    graphs[6].__pydantic_extra__["k\u00e9y \"q\""] = True  # a key escaped in JSON
    for v in graphs[7].vertices:  # in-edges sorted by source id, as the reference writes them
        v.in_edges = sorted(v.in_edges, key=lambda e: e.source, reverse=True)
        v.in_edges.sort(key=lambda e: e.source)
    return graphs


@pytest.mark.parametrize("graph_json", ["first", "all"])
def test_whole_graph_samples_from_views_match(tmp_path, graph_json):
    src = _store(tmp_path / "g.lmdb", _odd_graphs())
    out = {}
    for view in (False, "json"):
        target = tmp_path / f"{view}"
        summary = _export(src, target, ExportOptions(fmt="wds", strategy="gbc-captions", text_only=True,
                                                     shard_size=5, graph_json=graph_json), view)
        out[view] = (_written(target), summary.rows)
    samples = b"".join(data for name, members in out["json"][0].items() if name.endswith(".tar")
                       for _, data in members)
    assert '"source_dataset":"wiki ünï"'.encode() in samples and b'"weight":1.0' in samples
    assert out["json"] == out[False]


def test_whole_graph_samples_from_views_in_worker_processes(tmp_path):
    src = _store(tmp_path / "g.lmdb", _odd_graphs())
    out = {}
    for view, workers in ((False, 1), ("json", 2)):
        target = tmp_path / f"{view}"
        _export(src, target, ExportOptions(fmt="wds", strategy="gbc-captions", text_only=True, shard_size=5,
                                           graph_json="all", workers=workers), view)
        out[view] = _written(target)
    assert out["json"] == out[False]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("fmt", ["csv", "parquet", "wds"])
def test_text_only_exports_from_views_match(tmp_path, fmt, strategy):
    src = _store(tmp_path / "g.lmdb", _graphs())
    options = dict(fmt=fmt, strategy=strategy, text_only=True, shard_size=25, graph_json="none",
                   caption_filter=CaptionFilter(max_depth=2, min_box_size=0.05))
    out = {}
    for view in (False, True):
        target = tmp_path / f"{view}" / ("out.csv" if fmt == "csv" else "out")
        summary = _export(src, target, ExportOptions(**options), view)
        out[view] = (_written(target), summary.rows, dict(summary.rows_by_type))
    assert out[True][1] > 0
    assert out[True] == out[False]


def test_exports_with_images_from_views_match(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = _graphs(4)
    for i, g in enumerate(graphs):
        Image.new("RGB", (320, 240), (60 * i, 90, 200)).save(images / f"img_{i}.jpg")
        g.img_path = f"img_{i}.jpg"
    src = _store(tmp_path / "g.lmdb", graphs)
    out = {}
    for view in (False, True):
        target = tmp_path / f"{view}"
        summary = _export(src, target, ExportOptions(fmt="wds", strategy="region", images_root=str(images),
                                                     max_side=128, graph_json="none"), view)
        out[view] = _written(target)
        assert summary.graphs_exported == 4
    assert any(name.endswith(".jpg") for tar, members in out[True].items() if tar.endswith(".tar")
               for name, _ in members)
    assert out[True] == out[False]


def test_which_exports_read_views():
    assert reads_views(ExportOptions(fmt="csv"))
    assert reads_views(ExportOptions(fmt="parquet"))
    assert reads_views(ExportOptions(fmt="wds", graph_json="none"))
    # whole graphs in the samples keep every field: views with the stored JSON
    assert reads_views(ExportOptions(fmt="wds", graph_json="first")) == "json"
    assert reads_views(ExportOptions(fmt="wds", graph_json="all")) == "json"
    assert reads_views(ExportOptions(fmt="wds", graph_json="first"), validate=True) is False
    assert not reads_views(ExportOptions(fmt="csv"), validate=True)
    assert not reads_views(ExportOptions(fmt="csv"), rewrites_graphs=True)


def test_cli_export_reads_views_and_lists_damage(tmp_path):
    import lmdb

    path = tmp_path / "g.lmdb"
    with GraphStore(path, readonly=False, dict_train_samples=0) as store:
        for i, g in enumerate(_graphs(6)):
            store.put(f"img{i:03d}", g)
        value = bytearray(dict(store.raw_items())["img002"])
    value[len(value) // 2] ^= 0x08
    env = lmdb.open(str(path), max_dbs=8)
    graphs_db = env.open_db(b"graphs")
    with env.begin(write=True) as txn:
        txn.put(b"img002", bytes(value), db=graphs_db)
    env.close()
    result = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "out.csv"), "--text-only"])
    assert result.exit_code == 1, result.output
    assert "'img002'" in result.output and "checksum mismatch" in result.output
    # the five intact graphs are exported, the damaged one is not
    paths = {line.split("\t")[0] for line in (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[1:]}
    assert paths == {synthetic_graph(i).img_path for i in (0, 1, 3, 4, 5)}
