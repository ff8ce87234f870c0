"""Making each graph ready for a writer: its caption rows and their images, in this process
or in a pool of worker processes. Preparing never raises: what went wrong is the outcome."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from gbc.export.captions import CaptionRow, get_strategy
from gbc.export.images import EncodedImage, ImageEncoder, locate_image
from gbc.export.options import ExportOptions
from gbc.schemas import GbcGraph

#: Graphs per worker handed out at a time when exporting with several processes, and
#: graphs per task sent to a worker.
WORKER_WINDOW = 64
WORKER_CHUNK = 8


@dataclass
class PreparedGraph:
    """One graph made ready for the writer (in this process or in a worker); never raises."""

    key: str
    graph: GbcGraph
    outcome: str  # "ok", "no_rows", "missing", "outside_root", "invalid_box" or "image_error"
    rows: List[CaptionRow] = field(default_factory=list)
    images: List[Optional[EncodedImage]] = field(default_factory=list)
    source: Optional[Path] = None
    dropped: int = 0
    error: str = ""


def _images_for(encoder: Optional[ImageEncoder], rows: List[CaptionRow]) -> List[Optional[EncodedImage]]:
    if encoder is None:
        return [None] * len(rows)
    cache: Dict[Optional[Tuple[float, ...]], EncodedImage] = {}
    out = []
    for row in rows:
        if row.bbox not in cache:
            cache[row.bbox] = encoder.crop(row.bbox)
        out.append(cache[row.bbox])
    return out


def _non_finite_box_row(rows: List[CaptionRow]) -> Optional[CaptionRow]:
    for row in rows:
        if row.bbox is not None and not all(map(math.isfinite, row.bbox)):
            return row
    return None


def prepare_graph(key: str, graph: GbcGraph, options: ExportOptions) -> PreparedGraph:
    """The caption rows of ``graph`` and their images, or the reason it is not exported."""
    batch = get_strategy(options.strategy)(graph, options.caption_filter)
    if not batch.rows:
        return PreparedGraph(key, graph, "no_rows")
    bad = _non_finite_box_row(batch.rows)
    if bad is not None:  # no crop can be cut from it, and JSON cannot hold it
        return PreparedGraph(key, graph, "invalid_box",
                             error=f"{key}: vertex {bad.vertex_id!r} has a non-finite box {bad.bbox}")
    encoder = source = None
    if not options.text_only:
        lookup = locate_image(graph.img_path, options.images_root, options.allow_outside_root,
                              options.image_roots)
        source = lookup.path
        if lookup.refused is not None:
            # Never read a file outside the images root, not even as a text-only fallback.
            return PreparedGraph(key, graph, "outside_root", source=lookup.refused)
        if source is None and options.missing == "skip":
            return PreparedGraph(key, graph, "missing")
        if source is not None:
            crops = any(row.bbox is not None for row in batch.rows)
            encoder = ImageEncoder(source, options.max_side, options.jpeg_quality, crops=crops)
    try:
        images = _images_for(encoder, batch.rows)
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        return PreparedGraph(key, graph, "image_error", source=source,
                             error=f"{key}: cannot read image {source}: {exc}")
    return PreparedGraph(key, graph, "ok", batch.rows, images, source, batch.dropped_sentences)


_WORKER_OPTIONS: Optional[ExportOptions] = None


def _init_worker(options: ExportOptions) -> None:
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options


def _prepare_in_worker(pair: Tuple[str, GbcGraph]) -> PreparedGraph:
    return prepare_graph(pair[0], pair[1], _WORKER_OPTIONS)


def prepared_graphs(pairs: Iterable[Tuple[str, GbcGraph]], options: ExportOptions) -> Iterator[PreparedGraph]:
    """Prepared graphs in input order, made by ``options.workers`` processes.

    Workers take windows of ``WORKER_WINDOW`` graphs per worker, so reading never runs far
    ahead of writing (a store of millions of graphs is never held in memory).
    """
    if options.workers <= 1:
        for key, graph in pairs:
            yield prepare_graph(key, graph, options)
        return
    import multiprocessing

    # spawn: workers must not inherit an open LMDB environment (fork would share it).
    ctx = multiprocessing.get_context("spawn")
    it = iter(pairs)
    with ctx.Pool(options.workers, initializer=_init_worker, initargs=(options,)) as pool:
        while True:
            window = list(itertools.islice(it, options.workers * WORKER_WINDOW))
            if not window:
                break
            yield from pool.imap(_prepare_in_worker, window, chunksize=WORKER_CHUNK)
