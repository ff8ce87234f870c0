"""Backend protocols: a backend only turns a batch of inputs into a batch of outputs.

Thresholds, NMS, merging, id minting and prompt formats belong to the engine. A backend is
one small class with a ``name`` (the spec prefix), a validated ``Options`` model and one
batch method; it never loads weights in ``__init__`` (first use does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from pydantic import BaseModel, ConfigDict

from gbc.errors import GbcError


class BackendOptions(BaseModel):
    """Base of every backend's options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class GenerationOptions:
    max_new_tokens: int = 512
    temperature: float = 0.0
    seed: Optional[int] = None


@dataclass
class MllmRequest:
    """One MLLM query.

    ``image`` is what the model should see: from the engine a ``gbc.annotators.regions.Region``
    (the image, a box and the wanted size; ``size`` known, pixels cut and scaled only by
    ``image.pixels(max_side)`` or ``scale_image``), from other callers a PIL RGB image. ``kind`` is the
    query kind (``image``, ``entity``, ``composition``, ``relation``); ``image_key`` and
    ``context`` (e.g. ``{"vertex_id": ..., "name": ..., "members": [...]}``) are for
    backends that answer from records (replay) or by rule (scripted); model backends ignore them.
    """

    image: Any
    system_prompt: str
    user_prompt: str
    kind: str = "image"
    image_key: str = ""
    context: Dict[str, Any] = field(default_factory=dict)
    options: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass
class DetectionRequest:
    """Find each of ``phrases`` in ``image`` (the whole image or a crop: a ``Region`` from the
    engine, or a PIL RGB image; see ``MllmRequest``)."""

    image: Any
    phrases: List[str]
    image_key: str = ""
    context: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PhraseDetections:
    """Raw boxes for one phrase: ``boxes`` are ``(left, top, right, bottom)`` relative to the
    request's image (in [0, 1]); ``scores`` are the detector's confidences. No filtering applied."""

    boxes: List[Tuple[float, float, float, float]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)


class BackendError(GbcError, RuntimeError):
    """A backend failed in a way that retrying will not fix (bad spec, model not found, ...)."""


class BackendUnavailable(BackendError):
    """The backend cannot serve any request (model cannot be loaded, server unreachable after
    retries, bad credentials); the run stops instead of failing images.

    Raise it only for problems that concern every request alike; a problem with one request
    (an unknown image key, a request the server rejects) stays a plain ``BackendError`` and
    fails only that request's image.
    """


@runtime_checkable
class MllmBackend(Protocol):
    name: ClassVar[str]
    #: largest batch the engine should form for this backend (concurrency for HTTP backends)
    max_batch_size: int

    def generate(self, requests: Sequence[MllmRequest]) -> List[str]:
        """One answer text per request, in order. Raises on failure (the engine retries)."""

    def close(self) -> None: ...


@runtime_checkable
class DetectorBackend(Protocol):
    name: ClassVar[str]
    max_batch_size: int

    def detect(self, requests: Sequence[DetectionRequest]) -> List[Dict[str, PhraseDetections]]:
        """For each request, a mapping phrase -> raw detections (phrases with no box may be absent)."""

    def close(self) -> None: ...


def load_or_unavailable(argument: str, load) -> None:
    """Run ``load()``; any failure becomes ``BackendUnavailable`` naming the model.

    Without its model a backend can answer no request, so the run must stop rather than fail
    every image (wrong device, corrupt weights, out of memory while loading, ...).
    """
    try:
        load()
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"model {argument!r} cannot be loaded: {exc.__class__.__name__}: {exc}") from exc

