"""Telling inputs apart by what they are, and expanding brace ranges.

An argument is, in this order:

- a pattern with braces (``shards/{00000..00999}.tar``, ``{a,b}.parquet``): expanded, and
  each name taken by the rules below;
- an http(s) URL: a tar shard (``.tar``, ``.tar.gz``, ...; the only remote kind);
- a folder holding ``*.tar`` files at its top level (an img2dataset output, with its
  ``.parquet`` and ``_stats.json`` beside them): its shards, in name order;
- any other folder, or an image file: images, as ``discover_images`` finds them;
- a file named ``.tar`` (or ``.tar.gz``, ``.tgz``): a shard; a local shard that does not
  exist is skipped with a warning when it is read (a brace range may name a few missing ones);
- a ``.parquet``, ``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson`` or ``.txt`` file: a URL list;
- a file of another name that starts like a tar archive: a shard.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from gbc.inputs.folders import IMAGE_EXTENSIONS
from gbc.inputs.items import InputError
from gbc.inputs.urllists import list_format

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
KINDS = ("images", "tar", "list")


@dataclass(frozen=True)
class InputUnit:
    """One input to read: ``kind`` is ``images`` (a folder or an image file), ``tar`` (a shard,
    local or remote) or ``list`` (a URL list in the format ``fmt``). ``label`` is its name in
    origins and warnings (the file name)."""

    kind: str
    location: str
    label: str
    fmt: Optional[str] = None

    @property
    def shardable(self) -> bool:
        """Tar shards and URL list files can be given whole to one job of a ``--shard`` run."""
        return self.kind in ("tar", "list")


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def expand_braces(pattern: str) -> Iterator[str]:
    """``pattern`` with its brace ranges and lists expanded (lazily); itself when it has none."""
    if "{" not in pattern:
        yield pattern
        return
    try:
        from braceexpand import braceexpand
    except ImportError:
        raise InputError(f"brace ranges ({pattern}) need the braceexpand package: pip install 'gbc[inputs]'") from None
    yield from braceexpand(pattern)


def _label(location: str) -> str:
    name = location.rstrip("/").rsplit("/", 1)[-1]
    return name.split("?", 1)[0] or location


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def resolve(args: Sequence[str]) -> List[InputUnit]:
    """The inputs named by ``args``, in order (see the module docstring). Raises
    ``InputError`` for an argument that is none of the known kinds, and
    ``FileNotFoundError`` for a missing folder or file that is not a shard."""
    units: List[InputUnit] = []
    for arg in args:
        arg = str(arg)
        braced = "{" in arg and "}" in arg
        for name in expand_braces(arg) if braced else [arg]:
            units.extend(_resolve_one(name, from_range=braced))
    return units


def _resolve_one(name: str, from_range: bool) -> List[InputUnit]:
    if is_url(name):
        if _is_tar_name(name.split("?", 1)[0]):
            return [InputUnit("tar", name, _label(name))]
        raise InputError(f"a URL input must be a tar shard (.tar): {name}")
    path = Path(name)
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.is_file() and _is_tar_name(p.name))
        if shards:
            return [InputUnit("tar", str(p), p.name) for p in shards]
        return [InputUnit("images", name, path.name)]
    if _is_tar_name(path.name):
        return [InputUnit("tar", name, path.name)]  # a missing shard is reported when it is read
    fmt = list_format(name)
    if not path.exists():
        if from_range:  # reported when it is read, like a missing shard
            return [InputUnit("list", name, path.name, fmt) if fmt else InputUnit("tar", name, path.name)]
        raise FileNotFoundError(f"no such file or folder: {name}")
    if fmt is not None:
        return [InputUnit("list", name, path.name, fmt)]
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return [InputUnit("images", name, path.name)]
    try:
        if tarfile.is_tarfile(name):
            return [InputUnit("tar", name, path.name)]
    except OSError:
        pass
    raise InputError(f"{name} is not an image, a folder, a tar shard or a URL list "
                     "(.parquet, .csv, .tsv, .jsonl, .txt)")
