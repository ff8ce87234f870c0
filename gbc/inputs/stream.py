"""The images of a run, read lazily from any mix of inputs.

``InputStream(units, ...)`` yields ``ImageSource`` items as the engine asks for them: image
folders (listed as today), tar shards sample by sample, URL lists row by row with the
downloads running ahead on a thread pool. Nothing holds every key: ``skip(key, origin)`` (for
a run, :class:`gbc.inputs.resume.StoreResume` asks the store) decides per image whether it is
annotated, before any byte of it is read or downloaded.

``shard=(i, n)`` keeps one part of ``n``: when there are at least ``n`` tar shards and URL
list files, whole files are dealt out in turn (file ``k`` goes to part ``k mod n``, so each
job reads only its own files); images from folders, and all images when there are fewer
files than parts, are dealt out by a stable hash of their key. Either way each image falls
in exactly one part.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from gbc.inputs.detect import InputUnit
from gbc.inputs.download import DownloadOptions, Downloader, needs_download
from gbc.inputs.items import ImageSource, InputError
from gbc.inputs.urllists import Columns, check_columns

SkipFn = Callable[[str, Optional[str]], Optional[str]]
#: Images asked about at once (one store transaction for a ``StoreResume``).
SKIP_BATCH = 1024
WarnFn = Callable[[str], None]


def key_part(key: str, n: int) -> int:
    """The part (``0 <= part < n``) of image ``key``: the same stable hash as ``gbc.distributed.sharding.shard_of``."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n


@dataclass
class StreamCounts:
    """What a stream has seen so far."""

    found: int = 0  # images (samples, rows, files) met in this job's inputs and part
    skipped: int = 0  # passed over because ``skip`` said so (already finished)
    duplicates: int = 0  # a key already given by another input or position: left out
    yielded: int = 0
    inputs: int = 0  # input units read
    inputs_missing: int = 0
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["warnings"] = list(self.warnings)
        return out


#: Warnings kept in the counts (all are passed to ``warn``).
MAX_WARNINGS_KEPT = 50


class InputStream:
    """Iterable of the ``ImageSource`` items to annotate from ``units`` (see the module docstring).

    ``skip(key, origin)`` returns None to annotate an image, ``"duplicate..."`` (a message) for
    a key that another input already gave, or any other string to pass it over as finished;
    when it has a ``many(keys, origins)`` method, that is asked about batches instead.
    ``limit`` stops after that many items. ``warn`` receives one line per run-level problem
    (missing or truncated shard, duplicate key). Iterate once.
    """

    def __init__(self, units: Sequence[InputUnit], *, columns: Columns = Columns(),
                 download: DownloadOptions = DownloadOptions(), skip: Optional[SkipFn] = None,
                 shard: Optional[Tuple[int, int]] = None, limit: Optional[int] = None,
                 warn: Optional[WarnFn] = None, tar_timeout_s: float = 60.0):
        self.units = list(units)
        self.columns = columns
        self.download = download
        self._skip = skip
        self.shard = shard
        self.limit = limit
        self._warn = warn
        self.tar_timeout_s = tar_timeout_s
        self.counts = StreamCounts()
        self.by_file = False
        if shard is not None:
            index, n = shard
            if not 0 <= index < n:
                raise ValueError(f"shard index must satisfy 0 <= i < N, got {index}/{n}")
            self.by_file = sum(u.shardable for u in self.units) >= n
        for unit in self.units:
            if unit.kind == "list" and not _missing(unit):
                check_columns(unit.location, unit.fmt, columns)

    # ------------------------------------------------------------------ selection
    def selected_units(self) -> List[InputUnit]:
        """The units this job reads (all of them unless whole files are dealt out)."""
        if not self.by_file:
            return list(self.units)
        index, n = self.shard
        out, k = [], 0
        for unit in self.units:
            if unit.shardable:
                if k % n == index:
                    out.append(unit)
                k += 1
            else:
                out.append(unit)
        return out

    def _in_part(self, unit: InputUnit, key: str) -> bool:
        if self.shard is None or (self.by_file and unit.shardable):
            return True
        return key_part(key, self.shard[1]) == self.shard[0]

    def warn(self, message: str) -> None:
        if len(self.counts.warnings) < MAX_WARNINGS_KEPT:
            self.counts.warnings.append(message)
        if self._warn is not None:
            self._warn(message)

    def _decide(self, unit: InputUnit, keys: List[str], origins: List[Optional[str]]) -> List[Optional[str]]:
        """Per image, None to annotate it, else why not (counted here)."""
        answers: List[Optional[str]] = ["other part"] * len(keys)
        mine = [i for i, key in enumerate(keys) if self._in_part(unit, key)]
        self.counts.found += len(mine)
        if self._skip is None or not mine:
            for i in mine:
                answers[i] = None
            return answers
        many = getattr(self._skip, "many", None)
        wanted_keys, wanted_origins = [keys[i] for i in mine], [origins[i] for i in mine]
        said = many(wanted_keys, wanted_origins) if many is not None else [
            self._skip(k, o) for k, o in zip(wanted_keys, wanted_origins)]
        for i, why in zip(mine, said):
            answers[i] = why
            if why is None:
                continue
            if why.startswith("duplicate"):
                self.counts.duplicates += 1
                self.warn(why)
            else:
                self.counts.skipped += 1
        return answers

    def _batched(self, unit: InputUnit, rows: Iterator, make=None) -> Iterator[ImageSource]:
        """``rows`` (``ImageSource`` items, or tuples that start with key and origin, made into
        items by ``make``) less those that ``skip`` passes over, asked about ``SKIP_BATCH`` at a time."""
        while True:
            chunk = list(itertools.islice(rows, SKIP_BATCH))
            if not chunk:
                return
            if make is None:
                answers = self._decide(unit, [s.key for s in chunk], [s.origin for s in chunk])
                yield from (s for s, why in zip(chunk, answers) if why is None)
            else:
                answers = self._decide(unit, [r[0] for r in chunk], [r[1] for r in chunk])
                yield from (make(r) for r, why in zip(chunk, answers) if why is None)

    # ------------------------------------------------------------------ reading
    def _raw(self) -> Iterator[ImageSource]:
        from gbc.inputs.folders import discover_images
        from gbc.inputs.tars import iter_tar
        from gbc.inputs.urllists import iter_rows, row_source

        units = self.selected_units()
        image_args = [u.location for u in units if u.kind == "images"]
        if image_args:
            # Folders and files as before: listed and sorted together (keys clash across them).
            self.counts.inputs += len(image_args)
            unit = next(u for u in units if u.kind == "images")
            yield from self._batched(unit, iter(discover_images(image_args)))
        for unit in units:
            if unit.kind == "tar":
                self.counts.inputs += 1
                if _missing(unit):
                    self.counts.inputs_missing += 1
                    self.warn(f"shard {unit.location} does not exist; skipped")
                    continue
                decide = (lambda keys, origins, unit=unit: self._decide(unit, keys, origins))
                yield from iter_tar(unit.location, unit.label, decide, self.warn, self.tar_timeout_s)
            elif unit.kind == "list":
                self.counts.inputs += 1
                if _missing(unit):
                    self.counts.inputs_missing += 1
                    self.warn(f"URL list {unit.location} does not exist; skipped")
                    continue
                yield from self._batched(unit, iter_rows(unit.location, unit.fmt, self.columns, unit.label), row_source)

    def _limited(self) -> Iterator[ImageSource]:
        for source in self._raw():
            if self.limit is not None and self.counts.yielded >= self.limit:
                return
            self.counts.yielded += 1
            yield source

    def __iter__(self) -> Iterator[ImageSource]:
        downloader: Optional[Downloader] = None
        items = self._limited()
        if any(u.kind == "list" for u in self.units):
            downloader = Downloader(self.download)
            items = downloader.stream(items)
        try:
            yield from items
        finally:
            if downloader is not None:
                self.download_stats = dict(downloader.stats)
                downloader.close()


def _missing(unit: InputUnit) -> bool:
    from pathlib import Path

    return not unit.location.lower().startswith(("http://", "https://")) and not Path(unit.location).exists()


__all__ = ["InputStream", "StreamCounts", "key_part", "needs_download", "InputError"]
