"""Backends chosen by spec string: ``<name>:<argument>``, e.g. ``transformers:llava-hf/llava-v1.6-mistral-7b-hf``.

Built-in backends register the same way third-party ones do::

    @register_mllm
    class MyBackend:
        name = "mine"
        class Options(BackendOptions): ...
        def __init__(self, argument: str, options: Options): ...

A package adds backends without any change here by declaring an entry point in the group
``gbc.backends`` that names the module (or class) holding such decorated classes, e.g. in its
``setup.cfg``::

    [options.entry_points]
    gbc.backends =
        mine = my_package.gbc_backends

Entry points are loaded on the first lookup, in every process that looks a backend up (Ray
workers included), so a spec names a third-party backend exactly like a built-in one.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Optional, Type

from gbc.annotators.backends.base import BackendError
from gbc.errors import describe_validation_error

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
#: Entry-point group through which other packages register backends.
ENTRY_POINT_GROUP = "gbc.backends"
_loaded = False
#: Plugins that failed to load: entry-point name -> one-line reason (shown when a spec is unknown).
_plugin_errors: Dict[str, str] = {}


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
    _load_plugins()


def _load_plugins() -> None:
    """Import every ``gbc.backends`` entry point; their decorated classes register themselves.

    A plugin that cannot be imported does not stop the others: its error is kept and named
    when a spec matches no backend (it may be the one the user wanted)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party package must not break the built-ins
            _plugin_errors[ep.name] = f"{ep.value}: {type(exc).__name__}: {' '.join(str(exc).split())}"


def _split(spec: str) -> tuple[str, str]:
    name, sep, argument = spec.partition(":")
    return name.strip(), argument.strip() if sep else ""


def _create(kind: str, table: Dict[str, Type], spec: str, options: Optional[Mapping[str, Any]]):
    _load_builtins()
    name, argument = _split(spec)
    cls = table.get(name)
    if cls is None:
        known = ", ".join(sorted(table)) or "none"
        broken = "".join(f"; plugin {n!r} failed to load ({why})" for n, why in sorted(_plugin_errors.items()))
        raise BackendError(f"unknown {kind} backend {name!r} in spec {spec!r}; registered: {known}{broken}")
    try:
        opts = cls.Options(**dict(options or {}))
    except Exception as exc:  # pydantic.ValidationError
        raise BackendError(f"invalid options for {kind} backend {name!r}: {describe_validation_error(exc, subject='options', unknown='{where}: unknown option')}") from exc
    return cls(argument, opts)


def create_mllm(spec: str, options: Optional[Mapping[str, Any]] = None):
    """Build (without loading weights) the MLLM backend named by ``spec``."""
    return _create("MLLM", _MLLMS, spec, options)


def create_detector(spec: str, options: Optional[Mapping[str, Any]] = None):
    """Build (without loading weights) the detector backend named by ``spec``."""
    return _create("detector", _DETECTORS, spec, options)


def registered_backends() -> Dict[str, Dict[str, Type]]:
    _load_builtins()
    return {"mllm": dict(_MLLMS), "detector": dict(_DETECTORS)}
