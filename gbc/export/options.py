"""The settings of one export (``ExportOptions``) and what it counts (``ExportSummary``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from gbc.export.captions import CaptionFilter, get_strategy
from gbc.export.images import DEFAULT_JPEG_QUALITY

FORMATS = ("csv", "wds", "parquet")
#: Samples per WebDataset or Parquet shard (img2dataset's default).
DEFAULT_SHARD_SIZE = 10_000
#: What to do with a graph whose image file is missing: skip it, or export its rows text-only.
MISSING_POLICIES = ("skip", "text")
#: Which WebDataset samples carry the whole graph in their .json: every sample, only the
#: first sample of each graph (the others name it by ``image_key``), or none.
GRAPH_JSON_POLICIES = ("all", "first", "none")
#: Which WebDataset samples carry their image: every sample, or only the first sample of each
#: graph that uses it (the graph's other samples with the same image name that one in ``image_in``).
IMAGE_POLICIES = ("all", "first")


@dataclass
class ExportOptions:
    """Settings of one export (see ``gbc export --help``)."""

    fmt: str = "csv"
    strategy: str = "gbc-captions"
    caption_filter: CaptionFilter = field(default_factory=CaptionFilter)
    images_root: Optional[str] = None
    #: input folders recorded by the store at annotate time, used when ``images_root`` is None
    image_roots: Tuple[str, ...] = ()
    max_side: Optional[int] = None
    shard_size: int = DEFAULT_SHARD_SIZE
    text_only: bool = False
    missing: str = "skip"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    graph_json: str = "first"
    workers: int = 1
    allow_outside_root: bool = False  # read image files outside images_root too
    #: Replace an output that already holds data (refused otherwise; see gbc.export.output).
    overwrite: bool = False
    images: str = "all"

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown export format {self.fmt!r}; choose from {', '.join(FORMATS)}")
        get_strategy(self.strategy)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        if self.images not in IMAGE_POLICIES:
            raise ValueError(f"images must be one of {', '.join(IMAGE_POLICIES)}, got {self.images!r}")
        if self.graph_json not in GRAPH_JSON_POLICIES:
            raise ValueError(f"graph_json must be one of {', '.join(GRAPH_JSON_POLICIES)}, got {self.graph_json!r}")


@dataclass
class ExportSummary:
    """Counts of one export. ``rows_by_type`` counts rows per caption type."""

    graphs_read: int = 0
    graphs_exported: int = 0
    graphs_text_only: int = 0
    skipped_missing_image: int = 0
    skipped_image_error: int = 0
    skipped_outside_root: int = 0
    skipped_invalid_box: int = 0
    refused_images: List[str] = field(default_factory=list)  # "key: path" of the first refusals
    graphs_without_rows: int = 0
    rows: int = 0
    dropped_sentences: int = 0
    rows_by_type: Counter = field(default_factory=Counter)
    files: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    token_counter: str = ""

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.__dict__)
        out["rows_by_type"] = dict(sorted(self.rows_by_type.items()))
        return out
