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


# ---------------------------------------------------------------------------- stand-ins
# Until gbc.annotators.prompts / detection / composition exist, tests install minimal modules
# with the same API so the engine can run; the real modules are used as soon as they import.
def install_missing_standins() -> List[str]:
    import importlib
    import sys
    import types
    from dataclasses import dataclass

    import gbc.annotators as pkg

    installed = []

    api = {"prompts": "load_prompts", "detection": "select_boxes", "composition": "spatial_hints"}

    def have(name):
        try:
            module = importlib.import_module(f"gbc.annotators.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gbc.annotators.{name}":
                raise
            return False
        return hasattr(module, api[name])  # prompts/ is also a folder of prompt files

    def install(name, module):
        sys.modules[f"gbc.annotators.{name}"] = module
        setattr(pkg, name, module)
        installed.append(name)

    if not have("prompts"):
        m = types.ModuleType("gbc.annotators.prompts")

        @dataclass
        class PromptPair:
            system: str
            user_template: str

        m.PROMPT_VERSION = "standin-1"
        m.PromptPair = PromptPair
        m.load_prompts = lambda overrides=None: {k: PromptPair(f"system {k}", f"user {k}") for k in
                                                 ("image", "entity", "composition", "relation")}
        m.image_user_prompt = lambda p: p.user_template
        m.entity_user_prompt = lambda p, name: f"{p.user_template} {name}"
        m.composition_user_prompt = lambda p, count, name, members, hints: f"{p.user_template} {count} {name}"
        m.relation_user_prompt = lambda p, count, members: f"{p.user_template} {count} " + ", ".join(f"[{x}]" for x in members)
        install("prompts", m)

    if not have("detection"):
        m = types.ModuleType("gbc.annotators.detection")

        @dataclass
        class DetectionSettings:
            score_threshold: float = 0.35
            nms_single: float = 0.05
            nms_multiple: float = 0.2
            high_conf_tolerance: Optional[float] = 0.05
            topk: Optional[int] = 6
            min_rel_area: Optional[float] = None
            min_abs_area_px: Optional[float] = None
            max_rel_area: Optional[float] = None
            remove_contained: Optional[bool] = False

        def select_boxes(boxes, scores, label, settings, crop_size_px, crop_rel_area=1.0):
            kept = [(tuple(b), s) for b, s in zip(boxes, scores) if s > settings.score_threshold]
            if settings.max_rel_area:
                kept = [(b, s) for b, s in kept if (b[2] - b[0]) * (b[3] - b[1]) < settings.max_rel_area]
            kept.sort(key=lambda x: -x[1])
            return kept[: settings.topk] if settings.topk else kept

        m.DetectionSettings = DetectionSettings
        m.select_boxes = select_boxes
        install("detection", m)

    if not have("composition"):
        m = types.ModuleType("gbc.annotators.composition")

        def spatial_hints(names, boxes, rng, crop_size=None, root=None):
            order = list(range(len(names)))
            rng.shuffle(order)
            return [f"{names[order[0]]} is near {names[order[1]]}."]

        m.spatial_hints = spatial_hints
        m.draw_numbered_boxes = lambda image, boxes, labels=None: image.copy()
        install("composition", m)
    return installed
