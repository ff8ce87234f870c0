"""The local Ray instance shared by the Ray tests of this folder (one per module)."""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs; its workers import the test backends of this folder
    (``crashing_backend``, ``unavailable_backend``) and the package from PYTHONPATH."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    path = os.pathsep.join([str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "RAY_AUTH_MODE": "disabled"}})
    yield
    ray.shutdown()
