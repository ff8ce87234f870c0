"""Captions of a vertex (``Description``) with the optional fields of the released "full" layout."""

from __future__ import annotations

from typing import Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict

DescLabel = Literal["short", "detail", "original", "relation", "composition", "hardcode", "bagofwords"]
DESC_LABELS: tuple[str, ...] = ("short", "detail", "original", "relation", "composition", "hardcode", "bagofwords")

#: Description labels written by a model (as opposed to hard-coded hints or external alt-text).
MODEL_WRITTEN_DESC_LABELS: tuple[str, ...] = ("detail", "short", "composition", "relation")


class CaptionStatistics(BaseModel):
    model_config = ConfigDict(extra="allow")

    n_words: Optional[int] = None
    n_tokens: Optional[int] = None


class ClipScores(BaseModel):
    model_config = ConfigDict(extra="allow")

    scores: Optional[Dict[str, float]] = None
    truncation: bool = False


class Description(BaseModel):
    """One caption of a vertex.

    ``text`` and ``label`` are always present. ``full_label`` (``"<desc label>-<vertex label>"``),
    ``statistics``, ``clip_scores`` and ``toxicity_scores`` belong to the reference "full" layout
    and are written back only when they were read (or set).
    """

    model_config = ConfigDict(extra="allow")

    text: str
    label: DescLabel
    full_label: Optional[str] = None
    statistics: Optional[CaptionStatistics] = None
    clip_scores: Optional[ClipScores] = None
    toxicity_scores: Optional[Dict[str, float]] = None

    @classmethod
    def full_layout(cls, text: str, label: str, vertex_label: str) -> "Description":
        """A description with every field of the full layout set, as the annotator writes it."""
        return cls(
            text=text,
            label=label,
            full_label=f"{label}-{vertex_label}",
            statistics=None,
            clip_scores=ClipScores(scores=None, truncation=False),
            toxicity_scores=None,
        )
