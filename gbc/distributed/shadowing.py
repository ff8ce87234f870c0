"""A folder named ``gbc`` where Python starts can hide the installed package.

Ray puts the driver's current directory on the ``sys.path`` of every worker (as ``python -m``
and ``python -c`` do for their own process). If that directory holds a folder named ``gbc``
that is not this package (typically a checkout of the repository, whose root has no
``__init__.py``), ``import gbc`` in those processes finds the folder instead: a namespace
package with no ``open_store``, no ``distributed`` module, and a Ray run that dies in every
actor with a long ``RayTaskError``. An editable install (a finder placed after the path
search) is hidden that way; a regular install is not (a regular package beats a namespace
folder), which is why the check asks the import system rather than looking at names.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from gbc.errors import GbcError

#: This package's folder.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class PackageShadowedError(GbcError, RuntimeError):
    """A folder named ``gbc`` would be imported instead of this package by the processes a run starts."""


def find_shadowing_folder(directory=None, search_path: Optional[Sequence[str]] = None) -> Optional[Path]:
    """The ``gbc`` folder in ``directory`` (default: the current one) that a Python process with
    ``directory`` first on its path would import instead of this package; None if there is none.

    ``search_path`` is the rest of that process's path (default: this process's ``sys.path``).
    """
    directory = Path(directory if directory is not None else os.getcwd()).resolve()
    candidate = directory / "gbc"
    if not candidate.is_dir() or candidate.resolve() == PACKAGE_DIR:
        return None
    rest = [p for p in (sys.path if search_path is None else search_path) if p and Path(p).resolve() != directory]
    spec = importlib.machinery.PathFinder.find_spec("gbc", [str(directory), *rest])
    if spec is None:
        return None
    if spec.origin and Path(spec.origin).resolve().parent == PACKAGE_DIR:
        return None  # this package comes first: the folder is harmless
    return candidate


def check_no_shadowing(directory=None) -> None:
    """Raise ``PackageShadowedError`` (one line: the folder and what to do) when
    ``find_shadowing_folder`` finds one."""
    folder = find_shadowing_folder(directory)
    if folder is not None:
        raise PackageShadowedError(shadowing_message(folder))


def shadowing_message(folder: Path) -> str:
    """One line saying what is wrong and what to do."""
    return (f"the folder {folder} hides the installed gbc package from processes started in {folder.parent} "
            f"(Ray workers import from the driver's current directory, and `import gbc` finds that folder "
            f"instead): run from another directory or rename the folder")
