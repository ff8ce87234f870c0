"""``gbc convert --workers``: JSONL records parsed and serialised in worker processes give the
same store as one process, and the same errors."""

import gzip
import json
import subprocess
import sys

import pytest

import gbc
from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphFormatError, GraphStore
from gbc.store.parallel_ingest import encoded_jsonl
from gbc.store.records import keyed


def record_line(i: int) -> str:
    return synthetic_graph(i).to_json("gbc10m").decode()


@pytest.fixture
def jsonl(tmp_path):
    """300 graphs in 2 chunks, a blank line, a graph without image key and a repeated key."""
    lines = [record_line(i) for i in range(300)]
    unnamed = json.loads(lines[5])
    unnamed["img_path"] = unnamed["img_url"] = None
    lines[5] = json.dumps(unnamed)
    again = json.loads(record_line(7))
    again["short_caption"] = "the second graph under this key wins"
    lines.insert(200, json.dumps(again))
    lines.insert(3, "")
    path = tmp_path / "graphs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_values(path):
    with GraphStore(path) as store:
        return dict(store.raw_items()), {key: (r.status, r.origin) for key, r in store.statuses()}


def test_workers_write_the_same_store_as_one_process(jsonl, tmp_path, run_cli):
    one, four = tmp_path / "one.lmdb", tmp_path / "four.lmdb"
    serial = run_cli("convert", jsonl, one)
    result = run_cli("convert", jsonl, four, "--workers", "3")
    assert result.exit_code == 0, result.output
    # 301 records written (one key twice), as in one process
    assert "Wrote 301 graphs" in result.output and "Wrote 301 graphs" in serial.output
    values, statuses = raw_values(four)
    assert (values, statuses) == raw_values(one)
    assert "#5" in values and len(values) == 300
    with GraphStore(four) as store:
        assert store[synthetic_graph(7).img_path].short_caption == "the second graph under this key wins"
        assert store[synthetic_graph(8).img_path].to_dict() == GbcGraph.from_json(record_line(8)).to_dict()


def test_layout_and_chunks_as_in_one_process(jsonl):
    # small chunks: many in flight, results still in file order
    serial = list(encoded_jsonl(jsonl, 1, layout="full", chunk_lines=300))
    assert list(encoded_jsonl(jsonl, 2, layout="full", chunk_lines=7)) == serial
    graph = gbc.read_graphs(jsonl)
    first = next(iter(graph)).to_dict("full")
    assert json.loads(serial[0][1])["vertices"][0]["sub_masks"] is first["vertices"][0]["sub_masks"] is None
    with pytest.raises(ValueError, match="at least 1"):
        next(encoded_jsonl(jsonl, 0))


def test_first_bad_record_is_reported_and_nothing_is_written(jsonl, tmp_path, run_cli, clean_error):
    lines = jsonl.read_text().splitlines()
    whole = lines[250]
    lines[250] = whole[:-30]  # a record cut short, in the second chunk
    bad = json.loads(lines[260])
    bad["vertices"][1]["out_edges"].append({"source": bad["vertices"][1]["vertex_id"], "text": "x", "target": "ghost"})
    lines[260] = json.dumps(bad)  # a graph that breaks an invariant, after it
    jsonl.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "out.lmdb"
    error = clean_error(run_cli("convert", jsonl, dst, "--workers", "2"))
    assert f"{jsonl}, line 251: invalid JSON" in error
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["graphs.jsonl"]

    lines[250] = whole
    jsonl.write_text("\n".join(lines) + "\n")
    assert "line 261: not a valid graph" in clean_error(run_cli("convert", jsonl, dst, "--workers", "2"))
    assert not dst.exists()
    result = run_cli("convert", jsonl, dst, "--workers", "2", "--no-validate")
    assert result.exit_code == 0, result.output
    with GraphStore(dst) as store:
        assert len(store) == 300 and "ghost" in store[bad["img_path"]].to_json().decode()


def test_a_truncated_file_reports_the_records_before_the_break_first(tmp_path):
    lines = [record_line(i) for i in range(40)]
    lines[10] = lines[10][:50]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphFormatError, match="line 11: invalid JSON"):
        list(encoded_jsonl(path, 2, chunk_lines=4))
    lines[10] = record_line(10)
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphFormatError, match="truncated or damaged") as caught:
        keys = []
        for key, _, _ in encoded_jsonl(path, 2, chunk_lines=4):
            keys.append(key)
    assert keys == [synthetic_graph(i).img_path for i in range(len(keys))] and len(keys) >= 4
    assert f"line {len(keys) + 1}" in str(caught.value)


def test_workers_only_change_jsonl_to_store(jsonl, tmp_path, run_cli):
    # other conversions run in one process and give the same output
    assert run_cli("convert", jsonl, tmp_path / "a.jsonl", "--workers", "2").exit_code == 0
    assert run_cli("convert", jsonl, tmp_path / "b.jsonl").exit_code == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert run_cli("convert", jsonl, tmp_path / "c.lmdb", "--workers", "0").exit_code == 2


def test_real_gbc_process_starts_its_workers(jsonl, tmp_path, gbc_bin):
    # worker processes are spawned: they start from the console script, not from a fork
    out = tmp_path / "g.lmdb"
    proc = subprocess.run([str(gbc_bin), "convert", str(jsonl), str(out), "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Wrote 301 graphs to {out} (lmdb).\n" and proc.stderr == ""
    with GraphStore(out) as store:
        assert len(store) == 300


def test_workers_that_cannot_start_are_a_clear_error(jsonl):
    # a script read from stdin cannot be imported again by a spawned worker
    script = ("from pathlib import Path\nfrom gbc.store.parallel_ingest import encoded_jsonl\n"
              f"list(encoded_jsonl(Path({str(jsonl)!r}), 2))\n")
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "gbc.store.parallel_ingest.WorkerError: a worker process stopped before handing back its graphs")


def test_workers_compress_with_the_store_dictionary_once_it_is_trained(jsonl, tmp_path):
    handed = []

    def counted(items):
        for item in items:
            handed.append(item[2] is None)  # None: a value packed by a worker
            yield item

    with GraphStore(tmp_path / "workers.lmdb", readonly=False, dict_train_samples=50) as store:
        assert store.writer_settings is None
        encoded = encoded_jsonl(jsonl, 2, chunk_lines=20, settings=lambda: store.writer_settings)
        assert store.put_payloads(counted(encoded), batch_size=25) == 301
        dict_id, dictionary, level = store.writer_settings
        assert (dict_id, level) == (1, 3) and len(dictionary) > 1000
    with GraphStore(tmp_path / "serial.lmdb", readonly=False, dict_train_samples=50) as store:
        store.put_many(keyed(gbc.read_graphs(jsonl)), batch_size=25)
    # the first graphs come back as payloads, the later ones packed with the trained dictionary
    assert handed[0] is False and handed[-1] is True and 100 < sum(handed) < 301
    assert raw_values(tmp_path / "workers.lmdb") == raw_values(tmp_path / "serial.lmdb")
