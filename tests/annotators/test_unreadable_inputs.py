"""Inputs that cannot be read the usual way: symbolic link loops and names that are not UTF-8."""

import os

import pytest
from PIL import Image

from engine_fakes import MemoryStore
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import ImageLoadError, ImageSource, discover_images, load_image


def run(images):
    store = MemoryStore()
    config = AnnotateConfig().with_overrides({"limits.max_depth": 1})
    summary = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted")).run(images, store)
    return summary, store


def test_symlink_loops_fail_with_their_own_reason(tmp_path):
    Image.new("RGB", (64, 48), (10, 120, 200)).save(tmp_path / "good.png")
    os.symlink("self.png", tmp_path / "self.png")  # points at itself
    os.symlink("b.png", tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    os.symlink("gone.png", tmp_path / "dangling.png")
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "self.png")
    assert info.value.error_type == "SymlinkLoop" and "symbolic link loop" in info.value.reason

    summary, store = run(discover_images([tmp_path]))
    assert (summary.done, summary.failed) == (1, 4)
    failures = {key: (r.error_type, r.reason) for key, r in store.records.items() if r.status == "failed"}
    for key in ("self.png", "a.png", "b.png"):
        assert failures[key][0] == "SymlinkLoop" and "symbolic link loop" in failures[key][1]
    assert failures["dangling.png"][0] == "FileNotFound" and "broken symbolic link" in failures["dangling.png"][1]


def test_a_key_holding_undecodable_bytes_is_escaped_not_fatal(tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"bad\xffutf8.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(open(path, "wb"), format="PNG")
    name = os.fsdecode(path)
    # given by a caller with the key as Python hands it over (a lone surrogate), or as a bare path
    for images in ([ImageSource(key=os.path.basename(name), path=name)], [name]):
        summary, store = run(images)
        assert (summary.done, summary.failed) == (1, 0)
        assert list(store.graphs) == ["bad\\xffutf8.png"]
        assert store.graphs["bad\\xffutf8.png"].img_path == "bad\\xffutf8.png"
