"""Exports for CLIP training: caption strategies (``gbc.export.captions``), token counting
(``gbc.export.tokens``) and writers of open_clip CSV, WebDataset shards and Parquet
(``gbc.export.writers``). Exports are views: they read graphs and never change them.
"""

from gbc.export.captions import (
    STRATEGIES,
    CaptionFilter,
    CaptionRow,
    caption_rows,
    get_strategy,
    structured_text,
)
from gbc.export.tokens import CLIP_MAX_TOKENS, clip_token_counter, estimate_clip_tokens, split_sentences

__all__ = [
    "CLIP_MAX_TOKENS",
    "STRATEGIES",
    "CaptionFilter",
    "CaptionRow",
    "caption_rows",
    "clip_token_counter",
    "estimate_clip_tokens",
    "get_strategy",
    "split_sentences",
    "structured_text",
]
