"""The contract that `gbc annotate --ray` codes against (no Ray started here)."""
import inspect

import pytest

from gbc.annotators.config import AnnotateConfig
from gbc.distributed import ray_runner

SCRIPTED = AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})


def test_annotate_on_ray_signature_is_stable():
    sig = inspect.signature(ray_runner.annotate_on_ray)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:2]] == ["images", "out_path"]
    keyword_only = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    # The backends come from the config (config.mllm, config.detector), not from specs beside it.
    assert keyword_only == {
        "config": inspect.Parameter.empty, "address": None, "workers": 1,
        "gpus_per_worker": 0, "cpus_per_worker": None, "retry_failed": False, "merge": True,
        "verbose": False,
    }


@pytest.mark.parametrize("kwargs,fragment", [
    ({"workers": 0}, "workers"), ({"workers": 1.5}, "workers"),
    ({"gpus_per_worker": -1}, "gpus_per_worker"), ({"cpus_per_worker": 0}, "cpus_per_worker"),
])
def test_bad_resources_are_refused_before_ray_starts(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ray_runner.annotate_on_ray([], tmp_path / "out.lmdb", config=SCRIPTED, **kwargs)
    assert not (tmp_path / "out.lmdb").exists()


def test_import_is_light():
    import subprocess, sys
    code = ("import sys, gbc.distributed.ray_runner, gbc.distributed.ray_pipeline, gbc.distributed.ray_session, "
            "gbc.distributed.merge, gbc.distributed.sharding, gbc.annotators.run; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
