"""The run API (gbc.annotators.run.annotate): input selection, resume, backends' lifetime, the run
record, and runners as strategies. Scripted backends, a real LMDB store."""

import numpy as np
import pytest
from PIL import Image

import gbc
from gbc.annotators import run as run_module
from gbc.annotators.config import AnnotateConfig, ConfigError
from gbc.annotators.run import LocalRunner, RunEvents, RunPlan, annotate
from gbc.inputs.stream import key_part
from gbc.store.writer_lock import StoreBusyError, WriterLock

SCRIPTED = AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted",
                                            "limits.max_depth": 1})
N = 6


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


class Recorder(RunEvents):
    def __init__(self):
        self.notes, self.warnings, self.progress_seen, self.ended = [], [], [], 0

    def note(self, line):
        self.notes.append(line)

    def warning(self, line):
        self.warnings.append(line)

    def progress(self, progress):
        self.progress_seen.append(progress)

    def progress_end(self):
        self.ended += 1


def statuses(path):
    with gbc.open_store(str(path)) as store:
        return {key: record.status for key, record in store.statuses()}


def test_a_run_records_itself_then_resumes_then_retries_failures(images, tmp_path):
    out = tmp_path / "out.lmdb"
    events = Recorder()
    summary = annotate([images], out, SCRIPTED, events=events)
    assert (summary["found"], summary["done"], summary["failed"], summary["skipped"]) == (N + 1, N, 1, 0)
    assert summary["store"] == {"done": N, "failed": 1}
    assert (summary["mllm"], summary["detector"], summary["output"]) == ("scripted", "scripted", str(out))
    assert events.notes[0].startswith("reading 1 input(s) (images)")
    assert events.notes[-1] == f"{N + 1} images found, 0 skipped (already in {out}), {N + 1} annotated"
    assert events.progress_seen and events.progress_seen[-1].done == N and events.ended == 1
    with gbc.open_store(str(out)) as store:
        record = store.meta["last_run"]
        assert (record["done"], record["failed"], record["found"]) == (N, 1, N + 1)
        assert store.meta["config"]["limits"]["max_depth"] == 1
        assert store.meta["image_roots"] == [str(images)]

    again = annotate([str(images)], out, SCRIPTED)
    assert (again["found"], again["skipped"], again["images"]) == (N + 1, N + 1, 0)

    retry = annotate([images], out, SCRIPTED, retry_failed=True)
    assert (retry["images"], retry["failed"], retry["store"]) == (1, 1, {"done": N, "failed": 1})


def test_shard_and_limit_select_the_inputs(images, tmp_path):
    keys = [f"img{i}.png" for i in range(N)] + ["broken.png"]
    parts = [annotate([images], tmp_path / f"part{i}.lmdb", SCRIPTED, shard=(i, 2)) for i in range(2)]
    for i, summary in enumerate(parts):
        assert set(statuses(tmp_path / f"part{i}.lmdb")) == {k for k in keys if key_part(k, 2) == i}
        assert summary["shard"] == f"{i}/2"
    limited = annotate([images], tmp_path / "limited.lmdb", SCRIPTED, limit=2)
    assert limited["images"] == 2 and len(statuses(tmp_path / "limited.lmdb")) == 2


def test_backends_are_closed_after_the_run_even_when_it_fails(images, tmp_path, monkeypatch):
    from gbc.annotators.backends import registry

    closed = []

    def closing(create):
        def make(spec, options=None):
            backend = create(spec, options)
            backend.close = lambda name=spec: closed.append(type(backend).__name__)
            return backend
        return make

    monkeypatch.setattr(registry, "create_mllm", closing(registry.create_mllm))
    monkeypatch.setattr(registry, "create_detector", closing(registry.create_detector))
    annotate([images], tmp_path / "out.lmdb", SCRIPTED, limit=1)
    assert len(closed) == 2

    def broken_run(self, *args, **kwargs):
        raise RuntimeError("engine broke")

    monkeypatch.setattr("gbc.annotators.engine.RecursiveAnnotator.run", broken_run)
    with pytest.raises(RuntimeError, match="engine broke"):
        annotate([images], tmp_path / "out.lmdb", SCRIPTED)
    assert len(closed) == 4


def test_a_runner_is_a_strategy_given_the_plan_under_the_writer_lock(images, tmp_path):
    out = tmp_path / "out.lmdb"

    class Inspecting:
        def run(self, plan):
            assert isinstance(plan, RunPlan)
            with pytest.raises(StoreBusyError, match="gbc-test"):  # the run holds the store's lock
                WriterLock(out, command="second").acquire()
            return {"plan": plan}

    (tmp_path / "urls.jsonl").write_text('{"url": "http://127.0.0.1:9/a.png"}\n')
    result = annotate([images, tmp_path / "urls.jsonl"], out, SCRIPTED, runner=Inspecting(), shard=(1, 3), limit=5,
                      command="gbc-test")
    plan = result["plan"]
    assert [u.kind for u in plan.units] == ["images", "list"] and plan.image_folders == [str(images)]
    assert (plan.shard, plan.limit, plan.retry_failed, plan.output) == ((1, 3), 5, False, str(out))
    WriterLock(out).acquire().release()  # released after the run


@pytest.mark.parametrize("config,kwargs,fragment", [
    (AnnotateConfig(), {}, "no backend spec for mllm and detector"),
    (SCRIPTED, {"limit": -1}, "limit"),
    (SCRIPTED, {"shard": (2, 2)}, "shard"),
])
def test_bad_arguments_are_refused_before_anything_is_written(images, tmp_path, config, kwargs, fragment):
    with pytest.raises((ConfigError, ValueError), match=fragment):
        annotate([images], tmp_path / "out.lmdb", config, **kwargs)
    assert not (tmp_path / "out.lmdb").exists()


def test_the_local_runner_is_the_default_and_gbc_exports_the_api():
    assert gbc.annotate.__doc__ and gbc.AnnotateConfig is AnnotateConfig and gbc.LocalRunner is LocalRunner
    assert run_module.annotate.__kwdefaults__["runner"] is None
