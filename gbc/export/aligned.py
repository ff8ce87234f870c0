"""Caption shards that line up with the input shards: same shard names, same sample keys.

``export_aligned(store, shards, out, options)`` writes, for every input shard ``NAME.tar``
(given as its name and its sample keys in order), ``out/NAME.tar`` holding for each sample key,
in the same order:

- ``<key>.json``: ``{"key", "status", "captions": [{"caption", "caption_type", "vertex_id",
  "vertex_label", "desc_label", "bbox"}, ...]}``, plus ``reason`` for a failed image and the
  whole ``graph`` when ``options.graph_json`` is not ``"none"``; ``status`` is ``done``,
  ``failed`` or ``missing`` (not in the store);
- ``<key>.txt``: the first caption, when there is one.

No image is copied: a training loader opens the original shard and this one side by side
(WebDataset sample keys match, in the same order), so every input sample has its captions
without a second copy of its pixels. A ``NAME_stats.json`` beside each tar counts the samples.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import msgspec

from gbc.export.captions import get_strategy


def _tar_name(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".tar"
    return name if name.endswith(".tar") else name + ".tar"


def export_aligned(store, shards: Iterable[Tuple[str, Iterator[str]]], out, options) -> Dict[str, Any]:
    """Write one caption shard per input shard (see the module docstring); returns counts.

    ``store`` needs ``get(key)`` and ``status(key)``; ``shards`` yields ``(shard file name,
    sample keys in order)``; ``options`` is an ``ExportOptions`` (strategy, caption filter,
    ``graph_json``). Two input shards with the same file name are refused (their caption
    shards would overwrite each other).
    """
    from gbc.export.tar import TarWriter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    strategy = get_strategy(options.strategy)
    totals: Counter = Counter()
    files: List[str] = []
    names: set = set()
    for name, keys in shards:
        tar_name = _tar_name(name)
        if tar_name in names:
            raise ValueError(f"two input shards are named {name}: their caption shards would have the same name")
        names.add(tar_name)
        counts: Counter = Counter()
        tar = TarWriter(out / tar_name)
        try:
            for key in keys:
                record = store.status(key)
                meta: Dict[str, Any] = {"key": key, "status": "missing", "captions": []}
                first = None
                if record is not None and record.status == "done":
                    graph = store.get(key)
                    rows = strategy(graph, options.caption_filter).rows if graph is not None else []
                    meta["status"] = "done"
                    meta["captions"] = [{"caption": r.text, "caption_type": r.caption_type, "vertex_id": r.vertex_id,
                                         "vertex_label": r.vertex_label, "desc_label": r.desc_label,
                                         "bbox": list(r.bbox) if r.bbox is not None else None} for r in rows]
                    first = rows[0].text if rows else None
                    counts["rows"] += len(rows)
                    head = msgspec.json.encode(meta)
                    if options.graph_json != "none" and graph is not None:
                        head = head[:-1] + b',"graph":' + graph.to_json() + b"}"
                else:
                    if record is not None:
                        meta.update(status="failed", reason=record.reason, error_type=record.error_type)
                    head = msgspec.json.encode(meta)
                counts[meta["status"]] += 1
                tar.add(f"{key}.json", head)
                if first is not None:
                    tar.add(f"{key}.txt", first.encode("utf-8"))
        finally:
            tar.close()
        stats_path = out / (tar_name[: -len(".tar")] + "_stats.json")
        stats_path.write_text(json.dumps({"count": sum(counts[s] for s in ("done", "failed", "missing")),
                                          **{k: counts[k] for k in ("done", "failed", "missing", "rows")}}, indent=2))
        files += [str(out / tar_name), str(stats_path)]
        totals.update(counts)
        totals["shards"] += 1
    summary = {k: totals[k] for k in ("shards", "done", "failed", "missing", "rows")}
    summary["files"] = files
    return summary
