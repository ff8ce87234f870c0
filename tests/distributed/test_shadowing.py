"""A folder named gbc in the current directory that would hide the package from Ray workers is
reported in one line before Ray starts."""

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from gbc.cli.main import cli
from gbc.distributed.shadowing import PACKAGE_DIR, PackageShadowedError, find_shadowing_folder

REPO = PACKAGE_DIR.parent


def _checkout(tmp_path):
    """A clone of the repository named gbc: its root holds gbc/, setup.cfg, ... but no __init__.py."""
    folder = tmp_path / "gbc"
    (folder / "gbc").mkdir(parents=True)
    (folder / "setup.cfg").write_text("[metadata]\nname = gbc\n")
    return folder


def _without_this_package(path):
    """The path of an editable install: the package is found by a finder after the path search."""
    return [p for p in path if p and Path(p).resolve() != REPO]


def test_a_checkout_hides_an_editable_install(tmp_path):
    folder = _checkout(tmp_path)
    assert find_shadowing_folder(tmp_path, search_path=[]) == folder


def test_a_regular_install_is_not_hidden_by_a_namespace_folder(tmp_path):
    _checkout(tmp_path)
    assert find_shadowing_folder(tmp_path, search_path=[str(REPO)]) is None


def test_another_package_named_gbc_hides_this_one_always(tmp_path):
    other = tmp_path / "gbc"
    other.mkdir()
    (other / "__init__.py").write_text("")
    assert find_shadowing_folder(tmp_path, search_path=[str(REPO)]) == other


def test_nothing_to_report(tmp_path):
    assert find_shadowing_folder(tmp_path, search_path=[]) is None  # no gbc folder
    (tmp_path / "gbc").write_text("a file, not a folder")
    assert find_shadowing_folder(tmp_path, search_path=[]) is None
    assert find_shadowing_folder(REPO, search_path=[]) is None  # the package itself


def test_ray_run_from_such_a_folder_stops_with_one_line_before_ray_starts(tmp_path, monkeypatch):
    folder = _checkout(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "red").save(images / "a.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", _without_this_package(sys.path))
    result = CliRunner().invoke(cli, ["annotate", str(images), "-o", str(tmp_path / "out.lmdb"),
                                      "--mllm", "scripted", "--detector", "scripted", "--ray"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert str(folder) in lines[0] and "run from another directory or rename the folder" in lines[0]
    assert not (tmp_path / "out.lmdb").exists()
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()


def test_annotate_on_ray_checks_too(tmp_path, monkeypatch):
    from gbc.annotators.config import AnnotateConfig
    from gbc.distributed.ray_runner import annotate_on_ray

    _checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", _without_this_package(sys.path))
    with pytest.raises(PackageShadowedError, match="hides the installed gbc package"):
        annotate_on_ray([], tmp_path / "out.lmdb",
                        config=AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"}))
