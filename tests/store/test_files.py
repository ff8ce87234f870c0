import gzip
import json
import tracemalloc
import types

import pytest

import gbc
from gbc.schemas import GbcGraph
from gbc.store import GraphFormatError, detect_format, read_graphs, write_graphs
from gbc.store import files as files_mod
from gbc.store.parquet_io import RAW_JSON_COLUMN

FORMATS = ["jsonl", "json", "parquet", "lmdb", "jsonl.gz", "jsonl.zst"]


def _key(d):
    return d.get("img_path") or d.get("img_url")


def _round_trip(tmp_path, records, ext, **kwargs):
    path = tmp_path / f"graphs.{ext}"
    n = write_graphs(path, (GbcGraph.from_dict(r) for r in records), **kwargs)
    assert n == len(records)
    back = [g.to_dict() for g in read_graphs(path)]
    if ext == "lmdb":  # a store iterates in key order
        return back, sorted(records, key=_key)
    return back, records


@pytest.mark.parametrize("ext", FORMATS)
def test_reference_graphs_round_trip_exactly(tmp_path, reference_records, ext):
    back, expected = _round_trip(tmp_path, reference_records, ext)
    assert back == expected


@pytest.mark.parametrize("ext", FORMATS)
def test_gbc10m_records_round_trip_without_gaining_fields(tmp_path, reference_records, gbc10m_records, ext):
    records = gbc10m_records + [GbcGraph.from_dict(r).to_dict("gbc10m") for r in reference_records[:5]]
    back, expected = _round_trip(tmp_path, records, ext)
    assert back == expected
    for rec in back:
        assert set(rec) == {"vertices", "img_url", "img_path", "original_caption", "short_caption", "detail_caption"}
        assert "sub_masks" not in rec["vertices"][0]
        assert set(rec["vertices"][0]["descs"][0]) == {"text", "label"}


def _odd_records(reference_records):
    """Records whose fields differ from record to record: absent, extra, empty structs, spans."""
    full = reference_records[0]
    gbc10m = GbcGraph.from_dict(reference_records[1]).to_dict("gbc10m")
    bare = {"vertices": [{"vertex_id": "", "bbox": {"left": 0, "top": 0, "right": 1, "bottom": 1}, "label": "image"}]}
    scored = json.loads(json.dumps(full))
    d0 = scored["vertices"][0]["descs"][0]
    d0["statistics"] = {"n_words": 87, "n_tokens": 103}
    d0["clip_scores"] = {"scores": {"openai-l-patch14-336": 0.281, "dfn5b-h-patch14-378": 0.292}, "truncation": False}
    d0["toxicity_scores"] = {}
    scored["vertices"][1]["descs"][0]["clip_scores"] = {"scores": {}, "truncation": True}
    scored["vertices"][2]["descs"][0]["statistics"] = {}
    spans = json.loads(json.dumps(gbc10m))
    e = spans["vertices"][0]["out_edges"][0]
    e["span"] = {"desc_index": 0, "start": 3, "end": 8}
    target = next(v for v in spans["vertices"] if v["vertex_id"] == e["target"])
    next(x for x in target["in_edges"] if x["source"] == "")["span"] = dict(e["span"])
    extra = json.loads(json.dumps(gbc10m))
    extra["source_dataset"] = "wiki"
    extra["vertices"][0]["bbox"]["note"] = "whole image"
    return [full, gbc10m, bare, scored, spans, extra]


@pytest.mark.parametrize("ext", FORMATS)
def test_irregular_records_round_trip(tmp_path, reference_records, ext):
    records = _odd_records(reference_records)
    if ext == "lmdb":  # one key per graph
        for i, r in enumerate(records):
            r["img_path"] = f"k{i}.jpg"
    back, expected = _round_trip(tmp_path, records, ext)
    assert back == expected


def test_parquet_uses_columns_and_raw_json_only_for_odd_rows(tmp_path, reference_records):
    import pyarrow.parquet as pq

    path = tmp_path / "g.parquet"
    write_graphs(path, [GbcGraph.from_dict(r) for r in reference_records])
    table = pq.read_table(path)
    assert table.column(RAW_JSON_COLUMN).null_count == len(reference_records)
    vertex_fields = {f.name for f in table.schema.field("vertices").type.value_type}
    assert {"sub_masks", "super_masks", "in_edges"} <= vertex_fields
    desc_type = table.schema.field("vertices").type.value_type.field("descs").type.value_type
    assert str(desc_type.field("clip_scores").type.field("scores").type).startswith("map<string, double")
    assert table.column("img_size").to_pylist()[0] == reference_records[0]["img_size"]

    odd = tmp_path / "odd.parquet"
    write_graphs(odd, [GbcGraph.from_dict(r) for r in _odd_records(reference_records)])
    raw = pq.read_table(odd).column(RAW_JSON_COLUMN).to_pylist()
    # The GBC10M fields are the most common in that batch: only the GBC10M record fits them.
    assert [r is None for r in raw] == [False, True, False, False, False, False]


def test_layout_option_writes_gbc10m_or_full_records(tmp_path, reference_records, gbc10m_records):
    path = tmp_path / "g.jsonl"
    write_graphs(path, [GbcGraph.from_dict(r) for r in reference_records], layout="gbc10m")
    rec = json.loads(path.read_text().splitlines()[0])
    assert "img_size" not in rec and set(rec["vertices"][0]["descs"][0]) == {"text", "label"}
    write_graphs(path, [GbcGraph.from_dict(r) for r in gbc10m_records], layout="full")
    rec = json.loads(path.read_text().splitlines()[0])
    assert rec["img_size"] is None and rec["vertices"][0]["sub_masks"] is None
    with pytest.raises(GraphFormatError, match="unknown layout"):
        write_graphs(path, [], layout="wide")


def test_gbc_functions_and_dict_input(tmp_path, gbc10m_records):
    path = tmp_path / "g.jsonl"
    assert gbc.write_graphs(path, gbc10m_records) == len(gbc10m_records)  # dicts are accepted
    assert [g.to_dict() for g in gbc.read_graphs(path)] == gbc10m_records


@pytest.mark.parametrize(
    "name, expected",
    [("a.jsonl", "jsonl"), ("a.JSONL.gz", "jsonl"), ("a.jsonl.zst", "jsonl"), ("a.json", "json"),
     ("a.parquet", "parquet"), ("new.lmdb", "lmdb")],
)
def test_detect_format(tmp_path, name, expected):
    assert detect_format(tmp_path / name) == expected


def test_a_directory_with_data_mdb_is_a_store(tmp_path, gbc10m_records):
    store_dir = tmp_path / "run"
    write_graphs(tmp_path / "run.lmdb", [GbcGraph.from_dict(r) for r in gbc10m_records[:2]])
    (tmp_path / "run.lmdb").rename(store_dir)
    assert detect_format(store_dir) == "lmdb"
    assert len(list(read_graphs(store_dir))) == 2


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "x.txt", "cannot tell the format of '.*x.txt'; expected .jsonl, .json, .parquet or a .lmdb store"),
        (lambda p: p / "missing.jsonl", "no such file: '.*missing.jsonl'"),
        (lambda p: (p / "plain").mkdir() or p / "plain", "is a directory but not a graph store"),
        (lambda p: (p / "empty.lmdb").mkdir() or p / "empty.lmdb", "is not a graph store"),
    ],
)
def test_bad_paths_fail_at_once_with_a_clear_message(tmp_path, setup, message):
    with pytest.raises(GraphFormatError, match=message):
        read_graphs(setup(tmp_path))  # no iteration needed


def _line(record) -> str:
    return json.dumps(record)


def test_truncated_jsonl_line_names_file_and_line(tmp_path, gbc10m_records):
    path = tmp_path / "g.jsonl"
    lines = [_line(r) for r in gbc10m_records[:3]]
    path.write_text(lines[0] + "\n\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    it = read_graphs(path)
    assert next(it).img_path == gbc10m_records[0]["img_path"]
    assert next(it).img_path == gbc10m_records[1]["img_path"]
    with pytest.raises(GraphFormatError, match=r"g\.jsonl, line 4: invalid JSON \(truncated or damaged record\)"):
        next(it)


def test_invalid_record_names_line_and_first_error(tmp_path, gbc10m_records):
    bad = json.loads(_line(gbc10m_records[1]))
    bad["vertices"][2]["bbox"]["left"] = "far left"
    del bad["vertices"][3]["label"]
    path = tmp_path / "g.jsonl"
    path.write_text(_line(gbc10m_records[0]) + "\n" + _line(bad) + "\n")
    with pytest.raises(GraphFormatError) as info:
        list(read_graphs(path))
    msg = str(info.value)
    assert "g.jsonl, line 2: not a valid graph: vertices.2.bbox.left: Input should be a valid number" in msg
    assert "(and 1 more error(s))" in msg and "\n" not in msg


def test_invariants_are_checked_unless_validate_is_false(tmp_path, gbc10m_records):
    rec = json.loads(_line(gbc10m_records[0]))
    rec["vertices"][1]["vertex_id"] = rec["vertices"][2]["vertex_id"]  # duplicate id
    for ext in ("jsonl", "parquet", "json"):
        path = tmp_path / f"g.{ext}"
        write_graphs(path, [rec])
        with pytest.raises(GraphFormatError, match=r"(line 1|row 0|item 0): not a valid graph: duplicate vertex id"):
            list(read_graphs(path))
        assert len(list(read_graphs(path, validate=False))) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"vertices": []}, {"vertices": [', r"item 1: invalid JSON \(truncated or damaged\)"),
        ('[{"vertices": []}', "truncated after 1 item"),
        ('[{"vertices": []} {"vertices": []}]', "expected ',' or ']'"),
        ('{"vertices": 3}', "not a valid graph: vertices: Input should be a valid list"),
        ('"hello"', "expected a JSON array of graphs"),
    ],
)
def test_bad_json_arrays(tmp_path, text, message):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(GraphFormatError, match=message):
        list(read_graphs(path, validate=False))


def test_json_array_decoder_handles_chunk_boundaries(tmp_path, monkeypatch, reference_records):
    path = tmp_path / "g.json"
    path.write_text("  [\n" + " ,\n ".join(json.dumps(r, indent=2) for r in reference_records) + "\n ]  \n")
    monkeypatch.setattr(files_mod, "JSON_CHUNK_CHARS", 997)  # far smaller than one graph
    assert [g.to_dict() for g in read_graphs(path)] == reference_records
    (tmp_path / "one.json").write_text(json.dumps(reference_records[0]))
    assert [g.to_dict() for g in read_graphs(tmp_path / "one.json")] == reference_records[:1]
    (tmp_path / "empty.json").write_text("[ ]")
    assert list(read_graphs(tmp_path / "empty.json")) == []


@pytest.mark.parametrize("ext", ["jsonl", "json", "jsonl.gz"])
def test_reading_streams_a_big_file(tmp_path, gbc10m_records, ext):
    # ~40 MB of graphs: reading the first few must not load the file.
    line = _line(gbc10m_records[0]).encode()
    n = 40_000_000 // len(line)
    path = tmp_path / f"big.{ext}"
    body = b"\n".join([line] * n) if ext != "json" else b"[" + b",\n".join([line] * n) + b"]"
    if ext.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(body)
    else:
        path.write_bytes(body)
    del body
    tracemalloc.start()
    try:
        it = read_graphs(path)
        assert isinstance(it, types.GeneratorType)
        first = [next(it) for _ in range(3)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [g.img_path for g in first] == [gbc10m_records[0]["img_path"]] * 3
    assert peak < 8_000_000, f"reading 3 graphs used {peak} bytes"


def test_parquet_reads_in_batches(tmp_path, monkeypatch, gbc10m_records):
    from gbc.store import parquet_io

    path = tmp_path / "g.parquet"
    records = gbc10m_records * 3
    parquet_io.write_parquet_records(path, records, batch_rows=5)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).metadata.num_row_groups == 8  # 36 rows in groups of 5
    seen = []
    original = parquet_io.read_parquet_graphs

    def small_batches(p):
        return original(p, batch_rows=4)

    monkeypatch.setattr(parquet_io, "read_parquet_graphs", small_batches)
    for g in read_graphs(path):
        seen.append(g.to_dict())
    assert seen == records


def test_damaged_parquet_file(tmp_path):
    path = tmp_path / "g.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(GraphFormatError, match="not a readable Parquet file"):
        list(read_graphs(path))


def test_interrupted_write_leaves_no_file(tmp_path, gbc10m_records):
    def graphs():
        yield GbcGraph.from_dict(gbc10m_records[0])
        raise RuntimeError("source failed")

    for ext in ("jsonl", "json", "parquet"):
        path = tmp_path / f"g.{ext}"
        with pytest.raises(RuntimeError):
            write_graphs(path, graphs())
        assert list(tmp_path.iterdir()) == []


def test_store_needs_a_key(tmp_path):
    g = GbcGraph.from_dict({"vertices": [{"vertex_id": "", "bbox": {"left": 0, "top": 0, "right": 1, "bottom": 1}, "label": "image"}]})
    with pytest.raises(GraphFormatError, match="neither img_path nor img_url"):
        write_graphs(tmp_path / "s.lmdb", [g])


def test_empty_inputs(tmp_path):
    for ext in ("jsonl", "json", "parquet"):
        path = tmp_path / f"e.{ext}"
        assert write_graphs(path, []) == 0
        assert list(read_graphs(path)) == []


def test_parquet_written_by_other_tools_reads_back(tmp_path, reference_records):
    # As the reference pipeline writes it (pandas/pyarrow infer the schema; caption scores
    # become a struct whose fields are the model names).
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = json.loads(json.dumps(reference_records[:4]))
    for rec in records:
        for v in rec["vertices"]:
            for d in v["descs"]:
                d["clip_scores"] = {"scores": {"openai-l-patch14-336": 0.25, "dfn5b-h-patch14-378": 0.5},
                                    "truncation": False}
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    assert [g.to_dict() for g in read_graphs(path)] == records
