"""Fixtures shared by the scoring tests: tiny random CLIP and toxicity models, graphs with images."""

import pytest
from PIL import Image

from models import build_clip, build_toxicity, quiet_transformers


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    quiet_transformers()
    import torch

    # one intra-op thread: tiny matrices on a shared machine are faster without thread hand-offs
    torch.set_num_threads(1)
    return build_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_toxicity(tmp_path_factory):
    quiet_transformers()
    return build_toxicity(tmp_path_factory.mktemp("models") / "tiny-toxicity")


@pytest.fixture
def synthetic_set(tmp_path):
    """Four synthetic graphs (full layout) and a folder with the images of the first three."""
    from gbc.schemas.synthetic import synthetic_graph

    images = tmp_path / "images"
    images.mkdir()
    graphs = [synthetic_graph(i, layout="full") for i in range(4)]
    for i, g in enumerate(graphs[:3]):
        # varied content so that crops differ
        im = Image.new("RGB", (96, 64), (40 * i, 120, 200 - 40 * i))
        for x in range(0, 96, 8):
            im.paste((255 - 20 * i, x * 2, 30), (x, x % 64 // 2, x + 4, x % 64 // 2 + 20))
        im.save(images / g.img_path.rsplit("/", 1)[-1])
    return graphs, images
