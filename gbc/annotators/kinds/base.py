"""What a query kind is, and the registry that lists the kinds.

A query kind is one sort of question the engine asks the MLLM about a region. One
:class:`QueryKind` object holds all that is specific to it:

- its prompt: a system prompt and a user template (the shipped file ``prompts/<name>.txt``,
  or ``prompt_text``), and ``user_prompt``, the function that fills the template;
- ``parse`` (answer text -> typed answer; pure, never raises) and ``format`` (the inverse,
  which fake and replay backends write their answers with);
- ``generation``: its generation settings, a :class:`GenerationConfig` subclass holding the
  kind's defaults (the ``generation.<name>`` section of the run's configuration);
- ``handle(job, task, text)``: what the engine does with an answer for one image; returns the
  follow-up tasks. It may raise :class:`ImageFailure` when the image cannot get a graph. Queries
  are made with ``job.query_task(kind, vertex_id, user_prompt, context, box)``; an image is not
  finished while one of its queries is unanswered;
- optionally ``start(job)``: the queries the kind sends when an image starts (the image query
  does; the other built-in kinds are asked by the engine's state machine as regions appear),
  and ``empty_answer()`` / ``example_answer(context)``: a well-formed answer that says nothing
  (replay, when a record has nothing for a query) or a made-up one (the scripted backend, for
  kinds it has no rules of its own for).

``register_kind`` adds a kind; the configuration, the prompt loader, the engine and the fake
backends all read the registry (:func:`query_kinds`), so a new kind is its own module plus one
registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from pydantic import BaseModel, ConfigDict, Field

from gbc.errors import GbcError

__all__ = [
    "GenerationConfig",
    "ImageFailure",
    "QueryKind",
    "get_kind",
    "query_kinds",
    "register_kind",
    "unregister_kind",
]


class GenerationConfig(BaseModel):
    """Generation settings of one query kind (``generation.<kind>`` in the configuration)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(0.1, ge=0, description="sampling temperature")
    max_new_tokens: int = Field(512, ge=1, description="answer length limit in tokens")


class ImageFailure(GbcError):
    """The image cannot get a graph; ``reason`` is recorded in the store."""

    def __init__(self, reason: str, error_type: str = "NoUsableAnswer"):
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


@dataclass(frozen=True, eq=False)
class QueryKind:
    """One kind of MLLM query (see the module docstring). Compared by identity."""

    name: str
    parse: Callable[..., Any]
    format: Callable[..., str]
    user_prompt: Callable[..., str]
    handle: Callable[[Any, Any, str], List[Any]]
    generation: Type[GenerationConfig] = GenerationConfig
    start: Optional[Callable[[Any], List[Any]]] = None
    empty_answer: Optional[Callable[[], str]] = None
    example_answer: Optional[Callable[[Dict[str, Any]], str]] = None
    prompt_text: Optional[str] = None  # the prompt file's text; None: the shipped prompts/<name>.txt

    def fill(self, job: Any, *slots: Any) -> str:
        """The user prompt of this kind for ``job``'s prompts (shipped or overridden), slots filled."""
        return self.user_prompt(job.settings.prompts[self.name], *slots)

    def __repr__(self) -> str:
        return f"QueryKind({self.name!r})"


_KINDS: Dict[str, QueryKind] = {}


def register_kind(kind: QueryKind) -> QueryKind:
    """Add ``kind`` to the registry (kinds keep their registration order); returns it."""
    if not kind.name or not kind.name.isidentifier():
        raise ValueError(f"a query kind needs a name that is an identifier, got {kind.name!r}")
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise ValueError(f"a query kind named {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove the kind ``name`` (a no-op when it is not registered)."""
    _KINDS.pop(name, None)


def query_kinds() -> Tuple[QueryKind, ...]:
    """Every registered kind, the built-in ones first."""
    _load_builtins()
    return tuple(_KINDS.values())


def get_kind(name: str) -> QueryKind:
    """The kind registered as ``name``; ``KeyError`` naming the known kinds otherwise."""
    _load_builtins()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown query kind {name!r}; known kinds: {list(_KINDS)}") from None


def _load_builtins() -> None:
    # importing the package registers the built-in kinds (it is imported before this module
    # anyway when the package is used; this covers a direct import of this module)
    import gbc.annotators.kinds  # noqa: F401
