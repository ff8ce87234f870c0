import json
import subprocess

from click.testing import CliRunner

import gbc
from gbc.cli.main import cli
from gbc.schemas.synthetic import synthetic_graph

def make_store(path, done=(), failed=()):
    with gbc.open_store(str(path), readonly=False) as store:
        for key, seed in dict(done).items():
            store.commit_image(key, synthetic_graph(seed))
        for key, reason in dict(failed).items():
            store.mark_failed(key, reason)
    return path


def test_merge_shards_prints_summary(tmp_path, run_cli):
    a = make_store(tmp_path / "part-0.lmdb", done={"a": 1, "b": 2}, failed={"c": "bad"})
    b = make_store(tmp_path / "part-1.lmdb", done={"c": 3, "d": 4})
    result = run_cli("merge", a, b, "-o", tmp_path / "all.lmdb")
    assert result.exit_code == 0, result.output
    assert "merged 2 store(s)" in result.stdout
    assert "4 done, 0 failed" in result.stdout
    with gbc.open_store(str(tmp_path / "all.lmdb")) as out:
        assert sorted(out.keys()) == ["a", "b", "c", "d"]


def test_merge_folder_of_shards_json(tmp_path, run_cli):
    shards = tmp_path / "run.lmdb" / "shards"
    shards.mkdir(parents=True)
    make_store(shards / "worker-000.lmdb", done={"a": 1})
    make_store(shards / "worker-001.lmdb", done={"b": 2})
    result = run_cli("merge", shards, "-o", tmp_path / "run.lmdb", "--json", "--remove-sources")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["copied"], len(summary["sources"])) == (2, 2, 2)
    assert not (shards / "worker-000.lmdb").exists()


def test_conflict_is_a_clean_error_then_resolved(tmp_path, clean_error, run_cli):
    a = make_store(tmp_path / "a.lmdb", done={"k": 1})
    b = make_store(tmp_path / "b.lmdb", done={"k": 2})
    line = clean_error(run_cli("merge", a, b, "-o", tmp_path / "o.lmdb"))
    assert "different graphs" in line and "--on-conflict" in line
    result = run_cli("merge", a, b, "-o", tmp_path / "o.lmdb", "--on-conflict", "keep-last")
    assert result.exit_code == 0 and "conflicts (resolved by keep-last): 1: k" in result.stdout
    with gbc.open_store(str(tmp_path / "o.lmdb")) as out:
        assert out["k"].to_dict() == synthetic_graph(2).to_dict()


def test_bad_inputs_give_one_line_errors(tmp_path, clean_error, run_cli):
    (tmp_path / "empty").mkdir()
    assert "not found" in clean_error(run_cli("merge", tmp_path / "nope.lmdb", "-o", tmp_path / "o.lmdb"))
    assert "neither a graph store" in clean_error(run_cli("merge", tmp_path / "empty", "-o", tmp_path / "o.lmdb"))
    result = run_cli("merge", tmp_path / "x.lmdb", "-o", tmp_path / "o.lmdb", "--on-conflict", "newest")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_installed_command_runs(tmp_path, gbc_bin):
    a = make_store(tmp_path / "a.lmdb", done={"a": 1})
    out = subprocess.run([str(gbc_bin), "merge", str(a), "-o", str(tmp_path / "o.lmdb"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["done"] == 1


def test_merged_store_keeps_every_shards_image_folders(tmp_path):
    from PIL import Image

    shards = []
    for i in range(2):
        folder = tmp_path / f"images{i}"
        folder.mkdir()
        Image.new("RGB", (64, 48), (60 * i, 90, 30)).save(folder / f"img{i}.png")
        shard = tmp_path / f"part-{i}.lmdb"
        r = CliRunner().invoke(cli, ["annotate", str(folder), "-o", str(shard), "--mllm", "scripted", "--detector", "scripted"])
        assert r.exit_code == 0, r.output
        shards.append(shard)
    out = tmp_path / "all.lmdb"
    r = CliRunner().invoke(cli, ["merge", *map(str, shards), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with gbc.open_store(out) as store:
        assert store.meta["image_roots"] == [str(tmp_path / "images0"), str(tmp_path / "images1")]
    r = CliRunner().invoke(cli, ["export", str(out), "-o", str(tmp_path / "train.csv"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["graphs_exported"] == 2


def test_merge_into_a_store_being_written_is_refused(tmp_path, clean_error, run_cli):
    from gbc.store.writer_lock import WriterLock

    a = make_store(tmp_path / "a.lmdb", done={"a": 1})
    out = make_store(tmp_path / "out.lmdb", done={"o": 2})
    with WriterLock(out, command="gbc annotate"):  # a run writing the output right now
        line = clean_error(run_cli("merge", a, "-o", out))
        assert "being written by gbc annotate" in line and "pid" in line
        with gbc.open_store(str(out)) as store:
            assert sorted(store.keys()) == ["o"]  # nothing was copied
        fresh = tmp_path / "fresh.lmdb"
        with WriterLock(fresh, command="gbc merge"):  # another merge into a new output
            assert "being written by gbc merge" in clean_error(run_cli("merge", a, "-o", fresh))
    assert not fresh.exists()  # the refused merges left no empty store behind
    result = run_cli("merge", a, "-o", out)
    assert result.exit_code == 0, result.output
    with gbc.open_store(str(out)) as store:
        assert sorted(store.keys()) == ["a", "o"]
    # the merge released its lock: the next writer takes it
    with WriterLock(out, command="gbc annotate"):
        pass
