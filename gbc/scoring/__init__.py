"""Caption scores and score filters: the curation stage between annotation and export.

- ``gbc.scoring.models``: CLIP-style scorers (transformers, open_clip) and the toxicity classifier.
- ``gbc.scoring.scorer``: ``CaptionScorer`` / ``score_graphs``, batched across graphs.
- ``gbc.scoring.filters``: ``ScoreFilter``: per-label CLIP thresholds, drop-bottom percentiles, toxicity.

Nothing here imports torch until a model is loaded.
"""

from gbc.scoring.scorer import CaptionScorer, ScoredGraph, ScoreSummary, score_graphs

__all__ = ["CaptionScorer", "ScoreSummary", "ScoredGraph", "score_graphs"]
