"""Image folders and image files: keys are paths relative to the folder argument.

For a folder argument the key of each image is its path relative to that folder with POSIX
separators (``birds/owl.jpg``); for a file argument, its name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple, Union

from gbc.inputs.items import ImageSource
from gbc.store.keys import key_from_name, printable

#: Extensions of the image files found in folders (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def discover_images(paths: Sequence[Union[str, os.PathLike]], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> List[ImageSource]:
    """Images under ``paths`` (folders searched recursively, files taken as given), sorted by key.

    Raises ``FileNotFoundError`` for a path that does not exist and ``ValueError`` when two
    inputs produce the same key (their graphs would overwrite each other).
    """
    exts = tuple(e.lower() for e in extensions)
    found: dict = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            items = _walk(path, exts)
        elif path.exists():
            items = [ImageSource(key=key_from_name(path.name), path=str(path))]
        else:
            raise FileNotFoundError(f"no such file or folder: {printable(os.fspath(raw))}")
        for item in items:
            other = found.get(item.key)
            if other is not None and os.path.abspath(other.path) != os.path.abspath(item.path):
                raise ValueError(f"two inputs have the same image key {item.key!r}: {printable(other.path)} and "
                                 f"{printable(item.path)}")
            found[item.key] = item
    return [found[k] for k in sorted(found)]


def _walk(root: Path, exts: Tuple[str, ...]) -> Iterator[ImageSource]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            full = Path(dirpath) / name
            yield ImageSource(key=key_from_name(full.relative_to(root).as_posix()), path=str(full))
