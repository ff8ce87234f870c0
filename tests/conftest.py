import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO.parent / "shared" / "gbc-reference" / "wiki"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of real GBC graphs and images; tests that use it skip when it is absent."""
    if not (REFERENCE_DIR / "wiki_gbc_graphs.jsonl").exists():
        pytest.skip("../shared/gbc-reference is not available")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_jsonl(reference_dir) -> Path:
    return reference_dir / "wiki_gbc_graphs.jsonl"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
