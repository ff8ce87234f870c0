"""`gbc annotate` over tar shards, an img2dataset folder and URL lists: every image ends done or
failed with its reason, resume works from the store, kill -9 loses nothing and redoes nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import gbc
from gbc.cli.main import cli
from input_helpers import img2dataset_folder, jpg_bytes, png_bytes, write_wds_shard

SCRIPTED = ["--mllm", "scripted", "--detector", "scripted", "--max-depth", "1", "--no-relation"]
FAST = ["--download-timeout", "1", "--download-retries", "1", "--max-download-mb", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, ["annotate", *map(str, args)])


def summary_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def records(path):
    with gbc.open_store(path) as store:
        return {k: r for k, r in store.statuses()}


def test_mixed_inputs_every_image_done_or_failed_with_reason(server, tmp_path):
    keys = img2dataset_folder(tmp_path / "shards", shards=2, per_shard=3)
    write_wds_shard(tmp_path / "extra.tar", [{"__key__": "noimg", "txt": "only text"},
                                             {"__key__": "notimg", "jpg": b"plain text, not a jpeg"}])
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "p.png").write_bytes(png_bytes(3))
    b = server.base
    (tmp_path / "urls.csv").write_text(
        "url,caption\n" + "".join(f"{u},cap {i}\n" for i, u in enumerate(
            [f"{b}/img/7.png", f"{b}/missing", f"{b}/flaky/a", f"{b}/slow", f"{b}/html", f"{b}/redirect/8"])))
    out = tmp_path / "o.lmdb"
    result = invoke(tmp_path / "shards", tmp_path / "extra.tar", tmp_path / "photos", tmp_path / "urls.csv",
                    "-o", out, *SCRIPTED, *FAST, "--caption-col", "caption", "--json")
    summary = summary_of(result)
    got = records(out)
    url_keys = [f"urls/{i:09d}" for i in range(6)]
    assert set(got) == set(keys) | {"noimg", "notimg", "p.png"} | set(url_keys)
    assert summary["found"] == len(got) and summary["done"] + summary["failed"] == len(got)
    for key in keys + ["p.png", url_keys[0], url_keys[2], url_keys[5]]:
        assert got[key].status == "done", (key, got[key])
    reasons = {k: (got[k].error_type, got[k].reason) for k in got if got[k].status == "failed"}
    assert reasons["noimg"][0] == "NoImageMember"
    assert reasons["notimg"][0] == "NotAnImage"
    assert reasons[url_keys[1]][0] == "HTTP404" and f"{b}/missing" in reasons[url_keys[1]][1]
    assert reasons[url_keys[3]][0] == "Timeout"
    assert reasons[url_keys[4]][0] == "NotAnImage" and "text/html" in reasons[url_keys[4]][1]
    assert set(reasons) == {"noimg", "notimg", url_keys[1], url_keys[3], url_keys[4]}
    with gbc.open_store(out) as store:
        g = store[keys[4]]
        assert g.original_caption == "photo number 4" and g.img_url.endswith(f"{keys[4]}.jpg")
        assert g.img_path == keys[4]
        u = store[url_keys[5]]
        assert u.img_url == f"{b}/redirect/8" and u.original_caption == "cap 5"
    assert got[keys[0]].origin == "00000.tar:0" and got[url_keys[2]].origin == "urls.csv:2"
    # a rerun reads the inputs again, asks the store per image, downloads nothing
    hits = dict(server.hits)
    again = summary_of(invoke(tmp_path / "shards", tmp_path / "extra.tar", tmp_path / "photos", tmp_path / "urls.csv",
                              "-o", out, *SCRIPTED, *FAST, "--json"))
    assert (again["images"], again["skipped"], again["duplicates"]) == (0, len(got), 0)
    assert server.hits == hits


def test_duplicate_key_across_shards_is_a_warning_and_left_out(tmp_path):
    write_wds_shard(tmp_path / "a.tar", [{"__key__": "same", "png": png_bytes(1)}, {"__key__": "x", "png": png_bytes(2)}])
    write_wds_shard(tmp_path / "b.tar", [{"__key__": "y", "png": png_bytes(3)}, {"__key__": "same", "png": png_bytes(4)}])
    out = tmp_path / "o.lmdb"
    result = invoke(tmp_path / "{a,b}.tar", "-o", out, *SCRIPTED, "--images-in-flight", "1", "--json")
    summary = summary_of(result)
    assert "Warning: duplicate key 'same': at b.tar:1, already taken from a.tar:0; left out" in result.stderr
    assert summary["duplicates"] == 1 and summary["done"] == 3
    assert records(out)["same"].origin == "a.tar:0"
    with gbc.open_store(out) as store:
        assert store["same"].img_size == (40, 30)


def test_bad_inputs_are_one_line_errors_or_warnings(tmp_path):
    (tmp_path / "l.parquet").write_bytes(b"")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"href": ["http://x/1.png"]}), tmp_path / "l.parquet")
    result = invoke(tmp_path / "l.parquet", "-o", tmp_path / "o.lmdb", *SCRIPTED)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: the URL list" in result.output and "no column 'url' (--url-col); its columns: href" in result.output
    write_wds_shard(tmp_path / "00000.tar", [{"__key__": "k", "png": png_bytes(0)}])
    result = invoke(tmp_path / "{00000..00002}.tar", "-o", tmp_path / "p.lmdb", *SCRIPTED, "--json")
    summary = summary_of(result)
    assert result.stderr.count("does not exist; skipped") == 2
    assert summary["done"] == 1 and summary["inputs_missing"] == 2


def test_shard_option_deals_whole_tar_files(tmp_path):
    keys = img2dataset_folder(tmp_path / "d", shards=4, per_shard=2)
    seen = []
    for i in range(2):
        result = invoke(tmp_path / "d", "-o", tmp_path / f"s{i}.lmdb", *SCRIPTED, "--shard", f"{i}/2", "--json")
        summary_of(result)
        assert "shard " + f"{i}/2 by file" in result.stderr
        got = set(records(tmp_path / f"s{i}.lmdb"))
        assert got == {k for k in keys if int(k[:5]) % 2 == i}
        seen += got
    assert sorted(seen) == sorted(keys)


def _done_count(path):
    from gbc.store.lmdb_store import GraphStore

    if not (path / "data.mdb").exists():
        return 0
    try:
        store = GraphStore(str(path), readonly=True)
    except Exception:
        return 0
    try:
        return sum(1 for _ in store.statuses())
    finally:
        store.close()


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_loses_nothing_and_redoes_nothing(server, tmp_path):
    write_wds_shard(tmp_path / "a.tar", [{"__key__": f"a{i}", "jpg": jpg_bytes(i)} for i in range(8)])
    (tmp_path / "urls.jsonl").write_text("".join(json.dumps({"url": f"{server.base}/img/{i}.png"}) + "\n"
                                                 for i in range(8)))
    out = tmp_path / "o.lmdb"
    cmd = [sys.executable, "-m", "gbc.cli.main", "annotate", str(tmp_path / "a.tar"), str(tmp_path / "urls.jsonl"),
           "-o", str(out), *SCRIPTED, "--mllm-option", "latency_s=0.15", "--images-in-flight", "2", "--json"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while _done_count(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = records(out)
    assert 3 <= len(before) < 16, "the run should have been killed part-way"
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    after = records(out)
    expected = {f"a{i}" for i in range(8)} | {f"urls/{i:09d}" for i in range(8)}
    assert set(after) == expected and all(r.status == "done" for r in after.values())
    assert summary["images"] == len(expected) - len(before) and summary["skipped"] == len(before)
    for key, record in before.items():  # committed before the kill: not annotated again
        assert after[key].time == record.time
