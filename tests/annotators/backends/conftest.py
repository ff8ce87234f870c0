"""Tiny random models built once per test session and saved like real checkpoints."""

import pytest

from models import build_grounding_dino, build_llava, build_owlv2, quiet_transformers


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    quiet_transformers()
    return build_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def tiny_llava_next(tmp_path_factory):
    quiet_transformers()
    return build_llava(tmp_path_factory.mktemp("models") / "tiny-llava-next", next_version=True)


@pytest.fixture(scope="session")
def tiny_grounding_dino(tmp_path_factory):
    quiet_transformers()
    return build_grounding_dino(tmp_path_factory.mktemp("models") / "tiny-grounding-dino")


@pytest.fixture(scope="session")
def tiny_grounding_dino_short(tmp_path_factory):
    """Same shape with a 12-token text limit, to force several passes for many phrases."""
    quiet_transformers()
    return build_grounding_dino(tmp_path_factory.mktemp("models") / "tiny-grounding-dino-short", max_text_len=12)


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory):
    quiet_transformers()
    return build_owlv2(tmp_path_factory.mktemp("models") / "tiny-owlv2")
