"""Model backends (MLLMs and open-vocabulary detectors), chosen by spec string."""

from gbc.annotators.backends.base import (
    BackendError,
    BackendOptions,
    BackendUnavailable,
    DetectionRequest,
    DetectorBackend,
    GenerationOptions,
    MllmBackend,
    MllmRequest,
    PhraseDetections,
)
from gbc.annotators.backends.registry import create_detector, create_mllm, register_detector, register_mllm, registered_backends

__all__ = [
    "BackendError",
    "BackendOptions",
    "BackendUnavailable",
    "DetectionRequest",
    "DetectorBackend",
    "GenerationOptions",
    "MllmBackend",
    "MllmRequest",
    "PhraseDetections",
    "create_detector",
    "create_mllm",
    "register_detector",
    "register_mllm",
    "registered_backends",
]
