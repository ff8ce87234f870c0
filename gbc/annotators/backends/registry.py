"""Backends chosen by spec string: ``<name>:<argument>``, e.g. ``transformers:llava-hf/llava-v1.6-mistral-7b-hf``.

Built-in backends register the same way third-party ones do::

    @register_mllm
    class MyBackend:
        name = "mine"
        class Options(BackendOptions): ...
        def __init__(self, argument: str, options: Options): ...
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Optional, Type

from gbc.annotators.backends.base import BackendError

_MLLMS: Dict[str, Type] = {}
_DETECTORS: Dict[str, Type] = {}

# Modules that register built-in backends; imported on first lookup so that heavy libraries
# load only when the backend is constructed (the modules themselves import torch lazily).
_BUILTIN_MODULES = (
    "gbc.annotators.backends.scripted",
    "gbc.annotators.backends.replay",
    "gbc.annotators.backends.hf_mllm",
    "gbc.annotators.backends.openai_mllm",
    "gbc.annotators.backends.hf_detectors",
)
_loaded = False


def register_mllm(cls: Type) -> Type:
    _MLLMS[cls.name] = cls
    return cls


def register_detector(cls: Type) -> Type:
    _DETECTORS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _split(spec: str) -> tuple[str, str]:
    name, sep, argument = spec.partition(":")
    return name.strip(), argument.strip() if sep else ""


def _create(kind: str, table: Dict[str, Type], spec: str, options: Optional[Mapping[str, Any]]):
    _load_builtins()
    name, argument = _split(spec)
    cls = table.get(name)
    if cls is None:
        known = ", ".join(sorted(table)) or "none"
        raise BackendError(f"unknown {kind} backend {name!r} in spec {spec!r}; registered: {known}")
    try:
        opts = cls.Options(**dict(options or {}))
    except Exception as exc:  # pydantic.ValidationError
        raise BackendError(f"invalid options for {kind} backend {name!r}: {_one_line(exc)}") from exc
    return cls(argument, opts)


def _one_line(exc: Exception) -> str:
    """A validation error as one line (``option: message; ...``), for command-line errors."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "options"
        message = "unknown option" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def create_mllm(spec: str, options: Optional[Mapping[str, Any]] = None):
    """Build (without loading weights) the MLLM backend named by ``spec``."""
    return _create("MLLM", _MLLMS, spec, options)


def create_detector(spec: str, options: Optional[Mapping[str, Any]] = None):
    """Build (without loading weights) the detector backend named by ``spec``."""
    return _create("detector", _DETECTORS, spec, options)


def registered_backends() -> Dict[str, Dict[str, Type]]:
    _load_builtins()
    return {"mllm": dict(_MLLMS), "detector": dict(_DETECTORS)}
