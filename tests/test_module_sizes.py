"""Modules stay small enough to read in one sitting: one concern each, none over 500 lines."""

from pathlib import Path

import gbc

MAX_LINES = 500


def test_no_module_is_over_500_lines():
    root = Path(gbc.__file__).parent
    sizes = {p.relative_to(root.parent).as_posix(): sum(1 for _ in p.open(encoding="utf-8"))
             for p in root.rglob("*.py")}
    assert len(sizes) > 50  # the package was found, not an empty folder
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"modules over {MAX_LINES} lines (split them along their seams): {too_big}"
