"""Tar shards and URL lists on a real local Ray instance: read by Ray tasks, annotated by the actor pool."""
import json
import sys
from pathlib import Path

import pytest

import ray  # noqa: F401  (these tests need Ray; the ray_local fixture is in conftest.py)

from gbc.annotators.config import AnnotateConfig  # noqa: E402
from gbc.distributed.ray_inputs import RayInputs  # noqa: E402
from gbc.distributed.ray_runner import annotate_on_ray  # noqa: E402
from gbc.inputs import DownloadOptions, resolve  # noqa: E402
from gbc.store.lmdb_store import GraphStore  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "inputs"))
from input_helpers import ImageServer, img2dataset_folder, png_bytes, write_wds_shard  # noqa: E402

FAST = DownloadOptions(concurrency=4, timeout_s=2.0, retries=1, backoff_s=0.01)


def run(inputs, out, **kwargs):
    config = AnnotateConfig().with_overrides({"limits.images_in_flight": 4, "limits.max_depth": 1,
                                              "mllm.spec": "scripted", "detector.spec": "scripted"})
    return annotate_on_ray(inputs, out, config=config, **kwargs)


@pytest.mark.timeout(400)
def test_shards_and_a_url_list_on_ray_then_resume(ray_local, tmp_path):
    keys = img2dataset_folder(tmp_path / "wds", shards=2, per_shard=3)
    write_wds_shard(tmp_path / "wds" / "00002.tar", [{"__key__": "noimg", "txt": "text only"},
                                                     {"__key__": "z", "png": png_bytes(5)}])
    with ImageServer() as server:
        (tmp_path / "urls.jsonl").write_text("".join(json.dumps({"url": u}) + "\n" for u in [
            f"{server.base}/img/1.png", f"{server.base}/missing", f"{server.base}/redirect/2"]))
        units = resolve([str(tmp_path / "wds"), str(tmp_path / "urls.jsonl")])
        out = tmp_path / "out.lmdb"
        summary = run(RayInputs(units, download=FAST), out, workers=2)
        hits = dict(server.hits)
        again = run(RayInputs(units, download=FAST), out, workers=2)
        assert server.hits == hits  # nothing downloaded again
    expected = set(keys) | {"noimg", "z", "urls/000000000", "urls/000000001", "urls/000000002"}
    with GraphStore(str(out)) as store:
        records = dict(store.statuses())
        assert set(records) == expected
        failed = {k: r.error_type for k, r in records.items() if r.status == "failed"}
        assert failed == {"noimg": "NoImageMember", "urls/000000001": "HTTP404"}
        assert records[keys[2]].origin == "00000.tar:2" and records["urls/000000002"].origin == "urls.jsonl:2"
        assert store[keys[2]].original_caption == "photo number 2"
        assert store["urls/000000002"].img_url.endswith("/redirect/2")
    assert (summary["images"], summary["submitted"], summary["done"], summary["failed"]) == (11, 11, 9, 2)
    assert summary["inputs"] == 4 and summary["merged"]
    assert (again["images"], again["skipped"], again["submitted"]) == (11, 11, 0)


@pytest.mark.timeout(400)
def test_gbc_annotate_ray_over_shards_with_a_shard_part(ray_local, tmp_path):
    from click.testing import CliRunner

    from gbc.cli.main import cli

    keys = img2dataset_folder(tmp_path / "wds", shards=3, per_shard=2)
    out = tmp_path / "part1.lmdb"
    result = CliRunner().invoke(cli, ["annotate", str(tmp_path / "wds"), "-o", str(out), "--mllm", "scripted",
                                      "--detector", "scripted", "--max-depth", "1", "--shard", "1/2", "--json",
                                      "--ray", "local", "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    with GraphStore(str(out)) as store:
        got = {k: r.status for k, r in store.statuses()}
    assert got == {k: "done" for k in keys if k.startswith("00001")}  # the second of three shards
    assert summary["found"] == 2 and summary["done"] == 2
