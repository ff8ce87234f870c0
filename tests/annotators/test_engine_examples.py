"""The example script runs on the shipped demo images."""

import runpy
import sys
from pathlib import Path

import gbc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_images_are_small_and_present():
    images = sorted(p.relative_to(EXAMPLES / "images").as_posix() for p in (EXAMPLES / "images").rglob("*.png"))
    assert images == ["garden/flowers.png", "house_and_trees.png", "night_street.png", "table_with_cups.png"]
    assert all(p.stat().st_size < 20_000 for p in (EXAMPLES / "images").rglob("*.png"))


def test_annotate_demo_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo.lmdb"
    monkeypatch.setattr(sys, "argv", ["annotate_demo.py", str(out)])
    runpy.run_path(str(EXAMPLES / "annotate_demo.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "4 done, 0 failed" in printed and "[image] <image>" in printed
    with gbc.open_store(out) as store:
        assert sorted(store.keys()) == ["garden/flowers.png", "house_and_trees.png", "night_street.png",
                                        "table_with_cups.png"]
