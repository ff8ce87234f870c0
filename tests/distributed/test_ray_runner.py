"""annotate_on_ray on a real local Ray instance (one per module) with scripted backends."""
import collections
from pathlib import Path

import pytest

import ray  # noqa: F401  (these tests need Ray; the ray_local fixture is in conftest.py)

import gbc  # noqa: E402
from gbc.annotators.config import AnnotateConfig  # noqa: E402
from gbc.annotators.images import discover_images  # noqa: E402
from gbc.distributed.merge import MultiStore  # noqa: E402
from gbc.distributed.ray_runner import annotate_on_ray  # noqa: E402
from gbc.store.lmdb_store import GraphStore  # noqa: E402

N_IMAGES = 16


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    for i in range(N_IMAGES):
        Image.new("RGB", (96, 64), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    return discover_images([folder])


def config(mllm="scripted", mllm_options=None):
    # Small engine windows make several Ray batches out of a few images.
    return AnnotateConfig().with_overrides({"limits.images_in_flight": 4, "mllm.spec": mllm,
                                            "mllm.options": mllm_options or {}, "detector.spec": "scripted"})


def run(images, out, mllm="scripted", mllm_options=None, **kwargs):
    return annotate_on_ray(images, out, config=config(mllm, mllm_options), **kwargs)


def statuses(path):
    with GraphStore(str(path)) as store:
        return {key: record.status for key, record in store.statuses()}


@pytest.mark.timeout(120)
def test_two_workers_then_resume_then_retry_failed(ray_local, images, tmp_path):
    out = tmp_path / "out.lmdb"
    # Simulated model latency keeps the first ready actor from finishing everything alone.
    summary = run(images, out, workers=2, mllm_options={"latency_s": 0.15})
    assert (summary["images"], summary["submitted"], summary["done"], summary["failed"], summary["missing"]) == (17, 17, 16, 1, 0)
    assert len(summary["per_shard"]) == 2, summary  # both actors annotated images
    assert sum(summary["per_shard"].values()) == 17
    assert summary["merged"] and not (out / "shards").exists()
    got = statuses(out)
    assert got == {**{f"img{i:02d}.png": "done" for i in range(N_IMAGES)}, "broken.png": "failed"}
    with GraphStore(str(out)) as store:
        first_failure = store.status("broken.png")
        assert first_failure.reason
        assert len(store["img03.png"].vertices) > 1
        assert len(store.meta["merged_from"]) == 2

    again = run(images, out, workers=2)  # resume: nothing new, Ray not even needed
    assert (again["skipped"], again["submitted"], again["done"]) == (17, 0, 0)
    assert statuses(out) == got

    retry = run(images, out, workers=1, retry_failed=True)
    assert (retry["submitted"], retry["failed"]) == (1, 1)
    assert retry["store"] == {"done": 16, "failed": 1}
    with GraphStore(str(out)) as store:
        assert store.status("broken.png").time > first_failure.time  # the latest failure is kept


@pytest.mark.timeout(150)
def test_killed_worker_is_restarted_and_nothing_is_lost_or_duplicated(ray_local, images, tmp_path):
    import crashing_backend  # noqa: F401  (registers "crash-once" in this process too)

    good = [image for image in images if image.key != "broken.png"]
    out, marker, log = tmp_path / "out.lmdb", tmp_path / "crashed", tmp_path / "calls.log"
    options = {"crash_on": "img09.png", "marker": str(marker), "log": str(log)}
    summary = run(good, out, mllm="crash-once", mllm_options=options, workers=2, merge=False)
    assert marker.exists(), "the worker never crashed: the test proves nothing"
    assert (summary["done"], summary["failed"], summary["missing"]) == (N_IMAGES, 0, 0)

    # Every image is committed exactly once across the shards.
    shards = sorted((out / "shards").glob("*.lmdb"))
    assert 1 <= len(shards) <= 3
    seen = collections.Counter(k for shard in shards for k, status in statuses(shard).items() if status == "done")
    assert set(seen) == {image.key for image in good} and set(seen.values()) == {1}

    # The crashing image was asked twice, by two processes; images committed before the crash were not redone.
    calls = [line.split() for line in log.read_text().splitlines()]
    by_key = collections.defaultdict(list)
    for pid, key in calls:
        by_key[key].append(pid)
    assert len(by_key["img09.png"]) == 2 and len(set(by_key["img09.png"])) == 2
    redone = [k for k, pids in by_key.items() if len(pids) > 1]
    assert len(redone) <= 4 * 2  # at most the dead actor's in-flight batches (4 images each)

    # Before merging, gbc.open_store reads the shards as one store.
    with gbc.open_store(str(out)) as view:
        assert isinstance(view, MultiStore) and len(view) == N_IMAGES

    # A rerun has nothing left to annotate and merges the shards.
    rerun = run(good, out, workers=2)
    assert (rerun["submitted"], rerun["merged"]) == (0, True)
    assert statuses(out) == {image.key: "done" for image in good}
    assert not (out / "shards").exists()


@pytest.mark.timeout(150)
def test_an_image_that_always_kills_its_worker_ends_failed(ray_local, images, tmp_path):
    import crashing_backend  # noqa: F401

    good = [image for image in images if image.key != "broken.png"][:8]
    out, log = tmp_path / "out.lmdb", tmp_path / "calls.log"
    summary = run(good, out, mllm="crash-once", mllm_options={"crash_on": "img03.png", "log": str(log)}, workers=2)
    assert (summary["done"], summary["failed"], summary["missing"]) == (7, 1, 0)
    with GraphStore(str(out)) as store:
        record = store.status("img03.png")
        assert (record.status, record.error_type) == ("failed", "WorkerDied")
        assert "died 2 times" in record.reason
        assert store.count("done") == 7
    pids = {line.split()[0] for line in log.read_text().splitlines() if line.endswith(" img03.png")}
    assert len(pids) == 2  # killed two workers, then was not tried again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kwargs,fragment", [
    ({"gpus_per_worker": 1}, "need 1 GPUs; the Ray cluster has 0"),
    ({"workers": 3, "cpus_per_worker": 1.0}, "need 3 CPUs; the Ray cluster has 2"),
])
def test_a_pool_the_cluster_cannot_hold_is_refused(ray_local, images, tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        run(images[:2], tmp_path / "out.lmdb", **kwargs)
    assert not list((tmp_path / "out.lmdb").glob("shards/*.lmdb"))


@pytest.mark.timeout(120)
def test_gbc_annotate_with_ray(ray_local, images, tmp_path):
    import json

    from click.testing import CliRunner

    from gbc.cli.main import cli

    folder = Path(images[0].path).parent
    out = tmp_path / "cli.lmdb"
    args = ["annotate", str(folder), "-o", str(out), "--mllm", "scripted", "--detector", "scripted",
            "--ray", "--workers", "2", "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"], summary["merged"]) == (N_IMAGES, 1, True)
    assert statuses(out)["img00.png"] == "done"
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert json.loads(again.stdout)["submitted"] == 0


@pytest.mark.timeout(120)
def test_an_unavailable_backend_stops_the_whole_run_with_its_message(ray_local, images, tmp_path):
    import time

    import unavailable_backend  # registers "unavailable-at" in this process too
    from gbc.annotators.backends.base import BackendUnavailable

    good = [image for image in images if image.key != "broken.png"]
    out, log = tmp_path / "out.lmdb", tmp_path / "calls.log"
    options = {"unavailable_on": "img09.png", "log": str(log)}
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as caught:
        run(good, out, mllm="unavailable-at", mllm_options=options, workers=2)
    elapsed = time.perf_counter() - started
    # The original exception, not Ray's wrapper around it, with the backend's own message.
    assert type(caught.value) is BackendUnavailable
    assert str(caught.value) == unavailable_backend.MESSAGE
    # Stopped at once: the failing image was tried once, by one actor, not retried or restarted.
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [key for _, key in calls].count("img09.png") == 1
    assert elapsed < 60
    # Nothing failed; what was committed before the stop stays in the shards (not merged).
    shards = sorted((out / "shards").glob("*.lmdb"))
    committed = {k: s for shard in shards for k, s in statuses(shard).items()}
    assert set(committed.values()) <= {"done"} and "img09.png" not in committed
    assert not list((out / "shards").glob("*.inflight"))
    assert not (out / "shards" / "deaths.log").exists()
