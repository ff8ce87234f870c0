"""Exports for CLIP training: caption strategies (``gbc.export.captions``), token counting
(``gbc.export.tokens``) and writers of open_clip CSV, WebDataset shards and Parquet
(``gbc.export.writers``). Exports are views: they read graphs and never change them.

    from gbc.export import CaptionFilter, ExportOptions, export_graphs, open_source
    pairs, total = open_source("graphs.lmdb")
    summary = export_graphs(pairs, "train.csv", ExportOptions(fmt="csv", images_root="images/"))
    print(summary.rows_by_type)
"""

from gbc.export.captions import (
    STRATEGIES,
    CaptionFilter,
    CaptionRow,
    caption_rows,
    get_strategy,
    structured_text,
)
from gbc.export.source import open_source
from gbc.export.tokens import CLIP_MAX_TOKENS, clip_token_counter, estimate_clip_tokens, split_sentences
from gbc.export.writers import ExportOptions, ExportSummary, export_graphs

__all__ = [
    "CLIP_MAX_TOKENS",
    "STRATEGIES",
    "CaptionFilter",
    "CaptionRow",
    "ExportOptions",
    "ExportSummary",
    "caption_rows",
    "clip_token_counter",
    "estimate_clip_tokens",
    "export_graphs",
    "get_strategy",
    "open_source",
    "split_sentences",
    "structured_text",
]
