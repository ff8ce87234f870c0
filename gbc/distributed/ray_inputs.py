"""Tar shards and URL lists on Ray: each input is read inside the cluster, as a stream.

``RayInputs(units, ...)`` is what ``annotate_on_ray`` takes instead of a list of images when
the inputs are tar shards or URL lists. The driver never lists their images: it makes a Ray
dataset of one row per input (``from_items``), and a ``flat_map`` task per input reads it
with the same reader as a local run (``gbc.inputs.InputStream``: same keys, same failure
records, same duplicate rules), asks the output store and its shards which images are
finished (in batches, one transaction each), downloads the URLs of the others, and emits
one row per image to annotate (its bytes, or why it could not be had). The rows flow into
the same pool of annotator actors as image folders do. Each task writes what it saw (images
found, skipped, duplicates, warnings) beside the shards; the driver adds these up.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from gbc.inputs import Columns, DownloadOptions, InputStream, InputUnit, StoreResume

#: CPUs asked for by a task reading one input: it mostly waits on files and downloads, and the
#: annotator actors may hold all but a share of the cluster's CPUs (a task asking for a whole
#: CPU could then never be scheduled).
READ_TASK_CPUS = 0.25
#: Columns of an image row; absent values travel as "" (bytes b"") so that no column is all nulls.
ROW_FIELDS = ("key", "path", "data", "error", "error_type", "url", "caption", "origin")


class _FinishedAnywhere:
    """``status_origins`` over the output store and its shards (read-only): done wins over failed."""

    def __init__(self, out: Path):
        from gbc.store.lmdb_store import GraphStore

        paths = ([out] if (out / "data.mdb").exists() else []) + [
            p for p in sorted((out / "shards").glob("*.lmdb")) if (p / "data.mdb").exists()]
        self.stores = [GraphStore(str(p), readonly=True) for p in paths]

    def status_origins(self, keys: Sequence[str]) -> List[Optional[Tuple[str, Optional[str]]]]:
        best: List[Optional[Tuple[str, Optional[str]]]] = [None] * len(keys)
        for store in self.stores:
            for i, found in enumerate(store.status_origins(keys)):
                if found is not None and (best[i] is None or (best[i][0] != "done" and found[0] == "done")):
                    best[i] = found
        return best

    def close(self) -> None:
        for store in self.stores:
            store.close()


def read_input(row: Dict[str, Any], *, units: Sequence[InputUnit], columns: Columns, download: DownloadOptions,
               out: str, retry_failed: bool, part: Optional[Tuple[int, int]], run_id: str) -> Iterator[Dict[str, Any]]:
    """Ray Data ``flat_map`` function: the images of one input that need annotating, as rows."""
    index = int(row["unit"])
    finished = _FinishedAnywhere(Path(out))
    stream = InputStream([units[index]], columns=columns, download=download,
                         skip=StoreResume(finished, retry_failed), shard=part)
    try:
        for source in stream:
            yield {name: _plain(getattr(source, name), name) for name in ROW_FIELDS}
    finally:
        finished.close()
        counts = _counts_path(Path(out), run_id, index)
        counts.parent.mkdir(parents=True, exist_ok=True)
        tmp = counts.with_name(counts.name + ".tmp")
        tmp.write_text(json.dumps(stream.counts.to_dict()), encoding="utf-8")
        os.replace(tmp, counts)


def _plain(value, name: str):
    if value is None:
        return b"" if name == "data" else ""
    return value


def source_from_row(batch: Dict[str, Any], i: int):
    """The ``ImageSource`` of row ``i`` of a batch of image rows (inverse of ``read_input``)."""
    from gbc.inputs import ImageSource

    values = {}
    for name in ROW_FIELDS:
        value = batch[name][i] if name in batch else None
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value)
        values[name] = None if value is None or (name != "key" and len(value) == 0) else (
            value if name == "data" else str(value))
    return ImageSource(**values)


def _counts_path(out: Path, run_id: str, index: int) -> Path:
    return out / "shards" / f"inputs-{run_id}-{index:06d}.json"


class RayInputs:
    """Tar shards and URL lists for ``annotate_on_ray`` (see the module docstring).

    ``part=(i, n)`` keeps one part of ``n`` as ``--shard i/N`` does: whole inputs when there
    are at least ``n``, else images by key. ``limit`` stops after that many images.
    """

    def __init__(self, units: Sequence[InputUnit], columns: Columns = Columns(),
                 download: DownloadOptions = DownloadOptions(), part: Optional[Tuple[int, int]] = None,
                 limit: Optional[int] = None):
        chooser = InputStream(units, columns=columns, download=download, shard=part)  # checks list columns
        self.units = chooser.selected_units()
        self.part = None if chooser.by_file else part
        self.columns, self.download, self.limit = columns, download, limit

    def __bool__(self) -> bool:
        return bool(self.units)

    def dataset(self, ray, out: Path, retry_failed: bool, run_id: str):
        reader = functools.partial(read_input, units=self.units, columns=self.columns, download=self.download,
                                   out=str(out), retry_failed=retry_failed, part=self.part, run_id=run_id)
        rows = ray.data.from_items([{"unit": i} for i in range(len(self.units))],
                                   override_num_blocks=len(self.units)).flat_map(reader, num_cpus=READ_TASK_CPUS)
        return rows.limit(self.limit) if self.limit is not None else rows

    def counts(self, out: Path, run_id: str) -> Dict[str, Any]:
        """What the input tasks of run ``run_id`` saw, added up (their files are removed)."""
        total: Dict[str, Any] = {"found": 0, "skipped": 0, "duplicates": 0, "inputs": 0, "inputs_missing": 0,
                                 "warnings": []}
        for path in sorted((out / "shards").glob(f"inputs-{run_id}-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            for name in ("found", "skipped", "duplicates", "inputs", "inputs_missing"):
                total[name] += int(data.get(name, 0))
            total["warnings"] += data.get("warnings", [])[: 50 - len(total["warnings"])]
            path.unlink()
        return total
