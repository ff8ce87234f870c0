"""Writers of CLIP training data: open_clip CSV, WebDataset shards, Parquet shards.

``export_graphs`` streams ``(key, graph)`` pairs through a caption strategy into one writer
and returns an ``ExportSummary`` (rows per caption type, graphs skipped and why)::

    from gbc.export.writers import ExportOptions, export_graphs
    from gbc.export.source import open_source
    pairs, total = open_source("graphs.jsonl")
    summary = export_graphs(pairs, "shards/", ExportOptions(fmt="wds", images_root="images/"))
    print(summary.rows_by_type)

Module map (one concern each; the names below are importable from here too):

- ``gbc.export.options``: ``ExportOptions``, ``ExportSummary`` and the policies;
- ``gbc.export.prepare``: each graph's caption rows and images, by one or several processes;
- ``gbc.export.csv_writer``: ``csv``, one tab-separated file with columns ``filepath`` and
  ``title``, one caption per row (open_clip's ``--csv-separator '\\t'``);
- ``gbc.export.wds_writer``: ``wds``, WebDataset tar shards in the img2dataset layout with a
  Parquet index and a stats file per shard;
- ``gbc.export.parquet_writer``: ``parquet``, shards of flat columns, one row per caption;
- ``gbc.export.tar``: the ustar writer of the tar shards; ``gbc.export.writer_base``: shard
  counting and sample keys shared by the sharded writers.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Iterable, Tuple

from gbc.export.csv_writer import CsvWriter
from gbc.export.options import (
    DEFAULT_SHARD_SIZE,
    FORMATS,
    GRAPH_JSON_POLICIES,
    IMAGE_POLICIES,
    MISSING_POLICIES,
    ExportOptions,
    ExportSummary,
)
from gbc.export.output import csv_images_dir, stage_output
from gbc.export.parquet_writer import ParquetWriter
from gbc.export.prepare import prepared_graphs
from gbc.export.wds_writer import WdsWriter
from gbc.export.writer_base import ExportedGraph
from gbc.schemas import GbcGraph

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FORMATS",
    "GRAPH_JSON_POLICIES",
    "IMAGE_POLICIES",
    "MISSING_POLICIES",
    "CsvWriter",
    "ExportOptions",
    "ExportSummary",
    "ParquetWriter",
    "WdsWriter",
    "export_graphs",
]

#: Error messages kept in the summary (the count covers all of them).
MAX_ERRORS_KEPT = 20

_CAPTION_TYPE = operator.attrgetter("caption_type")

_WRITERS = {"csv": CsvWriter, "wds": WdsWriter, "parquet": ParquetWriter}


def export_graphs(pairs: Iterable[Tuple[str, GbcGraph]], out, options: ExportOptions) -> ExportSummary:
    """Write the rows of every graph in ``pairs`` to ``out`` (a file for CSV, else a folder).

    Graphs whose image is missing are skipped and counted (or exported text-only with
    ``missing="text"``); unreadable images are skipped, counted, and their errors kept in
    ``summary.errors``. Every graph read is accounted for in the summary. With
    ``options.workers > 1`` captions and images are made in worker processes; the output
    is the same as with one.

    An output that already holds data (the CSV file or its images folder, a folder that is
    not empty) is refused with ``OutputExistsError`` unless ``options.overwrite``; the new
    output is written beside it and replaces the old one whole only when complete.
    """
    flt = options.caption_filter
    summary = ExportSummary(token_counter=flt.token_counter()[1] if flt.max_tokens else "no limit")
    out = Path(out)
    staged = stage_output(out, options.fmt, options.overwrite)
    try:
        if options.fmt == "csv":
            writer = CsvWriter(staged.path, options, images_dir_as_read=csv_images_dir(out))
        else:
            writer = _WRITERS[options.fmt](staged.path, options)
        _write_all(writer, pairs, options, summary)
        if not summary.rows:
            # Nothing exported: no empty output is left, and an old one is not replaced by it.
            staged.discard()
            summary.files = []
            return summary
        staged.commit()
    except BaseException:
        staged.discard()  # the old output, if any, stays as it was
        raise
    summary.files = [staged.final_name(f) for f in writer.files]
    return summary


def _write_all(writer, pairs: Iterable[Tuple[str, GbcGraph]], options: ExportOptions, summary: ExportSummary) -> None:
    completed = False
    try:
        for p in prepared_graphs(pairs, options):
            summary.graphs_read += 1
            if p.outcome == "no_rows":
                summary.graphs_without_rows += 1
                continue
            if p.outcome == "missing":
                summary.skipped_missing_image += 1
                continue
            if p.outcome == "outside_root":
                summary.skipped_outside_root += 1
                if len(summary.refused_images) < MAX_ERRORS_KEPT:
                    summary.refused_images.append(f"{p.key}: {p.source}")
                continue
            if p.outcome == "invalid_box":
                summary.skipped_invalid_box += 1
                if len(summary.errors) < MAX_ERRORS_KEPT:
                    summary.errors.append(p.error)
                continue
            if p.outcome == "image_error":
                summary.skipped_image_error += 1
                if len(summary.errors) < MAX_ERRORS_KEPT:
                    summary.errors.append(p.error)
                continue
            writer.write_graph(ExportedGraph(p.key, p.graph, p.source), p.rows, p.images)
            summary.graphs_exported += 1
            if p.images[0] is None:
                summary.graphs_text_only += 1
            summary.rows += len(p.rows)
            summary.dropped_sentences += p.dropped
            summary.rows_by_type.update(map(_CAPTION_TYPE, p.rows))
        writer.close()
        completed = True
    finally:
        if not completed:
            try:
                writer.close()  # releases its open files; may fail again on a full disk
            except Exception:
                pass  # the staging folder is removed by the caller anyway
