"""Where an export writes: a staging folder beside the output, swapped in whole at the end.

An export never mixes with what its output already held (old shards left beside new ones
would be read back as one data set). A used output (an existing CSV file, its images folder,
or a folder that holds anything) is refused unless ``overwrite`` is given; then the new
output replaces the old one whole. The writers write into a hidden staging folder next to
the output, on the same file system, so that the final moves are renames; the old output is
moved aside only once the new one is complete, and deleted last. An export that fails or is
interrupted leaves the old output as it was and removes its staging folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from gbc.errors import GbcError

#: Name prefix of the staging folders (hidden, beside the output).
STAGING_PREFIX = ".gbc-export-"


class OutputExistsError(GbcError, ValueError):
    """The output of an export already holds data and ``overwrite`` was not given."""


def csv_images_dir(out: Path) -> Path:
    """The folder beside a CSV output that holds its crops and re-encoded images."""
    return out.parent / f"{out.stem}_images"


def output_paths(out: Path, fmt: str) -> List[Path]:
    """Every path an export in format ``fmt`` to ``out`` owns (the output itself first)."""
    return [out, csv_images_dir(out)] if fmt == "csv" else [out]


def _in_use(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return next(path.iterdir(), None) is not None
    return path.exists() or path.is_symlink()


def _describe(path: Path) -> str:
    if path.is_dir() and not path.is_symlink():
        n = sum(1 for _ in path.iterdir())
        return f"{path} already exists and holds {n} entr{'y' if n == 1 else 'ies'}"
    return f"{path} already exists"


@dataclass
class StagedOutput:
    """The staging of one export: ``path`` is where the writer writes; ``commit`` swaps the
    result in place of the old output, ``discard`` drops it."""

    root: Path
    #: (staged path, final path), the output itself first
    moves: List[Tuple[Path, Path]]

    @property
    def path(self) -> Path:
        return self.moves[0][0]

    def final_name(self, written: str) -> str:
        """The name a file written under the staging folder has once committed."""
        for staged, final in self.moves:
            prefix = str(staged)
            if written == prefix or written.startswith(prefix + os.sep):
                return str(final) + written[len(prefix):]
        return written

    def commit(self) -> None:
        aside = self.root / "old"
        aside.mkdir()
        moved_aside: List[Tuple[Path, Path]] = []
        placed: List[Tuple[Path, Path]] = []
        try:
            for i, (_, final) in enumerate(self.moves):
                if final.exists() or final.is_symlink():
                    old = aside / str(i)
                    os.rename(final, old)
                    moved_aside.append((old, final))
            for staged, final in self.moves:
                if staged.exists():
                    os.rename(staged, final)
                    placed.append((staged, final))
        except BaseException:
            # Put the old output back as it was.
            for staged, final in reversed(placed):
                os.rename(final, staged)
            for old, final in reversed(moved_aside):
                os.rename(old, final)
            raise
        shutil.rmtree(self.root, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def check_output(out: Path, fmt: str, overwrite: bool = False) -> None:
    """Check that an export in format ``fmt`` may write ``out`` (callers check early, before
    reading anything): a CSV is a file and the other formats a folder (``ValueError``), and a
    used output needs ``overwrite`` (``OutputExistsError``). Each error is one line."""
    out = Path(out)
    if fmt == "csv" and out.is_dir():
        raise ValueError(f"{out} is a folder; the csv format writes one file (e.g. {out / 'train.csv'})")
    if fmt != "csv" and out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; the {fmt} format writes shards into a folder")
    used = [p for p in output_paths(out, fmt) if _in_use(p)]
    if used and not overwrite:
        raise OutputExistsError(f"{_describe(used[0])}; pass --overwrite to replace the old output whole")


def stage_output(out: Path, fmt: str, overwrite: bool = False) -> StagedOutput:
    """Check ``out`` (``check_output``) and make the staging folder beside it."""
    out = Path(out)
    check_output(out, fmt, overwrite)
    finals = output_paths(out, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}-{out.name}"
    (root / "new").mkdir(parents=True)
    return StagedOutput(root, [(root / "new" / p.name, p) for p in finals])
