"""The GBC data model, free of any model or storage library.

``GbcGraph`` reads both released layouts (GBC10M records and the reference "full" layout)
and writes them back unchanged; see ``gbc.schemas.graph``.
"""

from gbc.schemas.bbox import Bbox, union_bboxes
from gbc.schemas.description import (
    DESC_LABELS,
    MODEL_WRITTEN_DESC_LABELS,
    CaptionStatistics,
    ClipScores,
    Description,
)
from gbc.schemas.graph import (
    VERTEX_LABELS,
    Edge,
    EdgeSpan,
    GbcGraph,
    GraphValidationError,
    Vertex,
    find_problems,
)

__all__ = [
    "Bbox",
    "CaptionStatistics",
    "ClipScores",
    "DESC_LABELS",
    "Description",
    "Edge",
    "EdgeSpan",
    "GbcGraph",
    "GraphValidationError",
    "MODEL_WRITTEN_DESC_LABELS",
    "VERTEX_LABELS",
    "Vertex",
    "find_problems",
    "union_bboxes",
]
