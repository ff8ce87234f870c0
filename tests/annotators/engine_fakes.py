"""Small real backends and an in-memory store for the engine tests.

``TableMllm`` answers each request with a function of the request (so a test writes the
answers a model would give), ``TableDetector`` returns boxes from a table keyed by
(vertex id, phrase). Both record every call. ``MemoryStore`` implements the part of the
store contract the engine uses.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from gbc.annotators.backends.base import PhraseDetections


class TableMllm:
    name = "table"

    def __init__(self, answer: Callable, max_batch_size: int = 8, delay_s: float = 0.0):
        self.answer = answer
        self.max_batch_size = max_batch_size
        self.delay_s = delay_s
        self.calls: List[list] = []
        self._lock = threading.Lock()

    def generate(self, requests):
        with self._lock:
            self.calls.append(list(requests))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self.answer(r) for r in requests]

    def close(self):
        pass


class TableDetector:
    name = "table"

    def __init__(self, table: Dict[Tuple[str, str], List[Tuple[Tuple[float, float, float, float], float]]],
                 max_batch_size: int = 8, global_coords: bool = True):
        """``table[(parent vertex id, phrase)] = [(box, score), ...]``; boxes given in global
        image coordinates (converted to the request's crop) unless ``global_coords=False``."""
        self.table = table
        self.max_batch_size = max_batch_size
        self.global_coords = global_coords
        self.calls: List[list] = []

    def detect(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            crop = r.context["crop_box"]
            found = {}
            for phrase in r.phrases:
                rows = self.table.get((r.context["vertex_id"], phrase), [])
                boxes = [self._to_crop(b, crop) for b, _ in rows]
                found[phrase] = PhraseDetections(boxes=boxes, scores=[s for _, s in rows])
            out.append(found)
        return out

    def _to_crop(self, box, crop):
        if not self.global_coords:
            return box
        w, h = crop[2] - crop[0], crop[3] - crop[1]
        return ((box[0] - crop[0]) / w, (box[1] - crop[1]) / h, (box[2] - crop[0]) / w, (box[3] - crop[1]) / h)

    def close(self):
        pass


class _Record:
    def __init__(self, status, reason=None, error_type=None, attempts=1):
        self.status = status
        self.reason = reason
        self.error_type = error_type
        self.attempts = attempts


class MemoryStore:
    """The store contract used by the engine, kept in dictionaries."""

    def __init__(self):
        self.graphs: Dict[str, object] = {}
        self.records: Dict[str, _Record] = {}
        self.provenance: Dict[str, Optional[dict]] = {}
        self.commit_order: List[str] = []
        self.meta: dict = {}

    def commit_image(self, key, graph, provenance=None, attempts=1):
        self.graphs[key] = graph
        self.records[key] = _Record("done", attempts=attempts)
        self.provenance[key] = provenance
        self.commit_order.append(key)

    def mark_failed(self, key, reason, error_type=None, attempts=1, provenance=None):
        self.records[key] = _Record("failed", reason, error_type, attempts)
        self.provenance[key] = provenance
        self.commit_order.append(key)

    def status(self, key):
        return self.records.get(key)

    def keys(self, status=None):
        return [k for k, r in self.records.items() if status is None or r.status == status]

    def update_meta(self, values):
        self.meta.update(values)

    def close(self):
        pass
