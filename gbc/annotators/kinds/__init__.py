"""The query kinds of the engine, one module each, and their registry.

``query_kinds()`` lists them (the built-in ones in the order registered below); see
:mod:`gbc.annotators.kinds.base` for what a kind holds. A new kind is a module defining one
:class:`QueryKind` and a ``register_kind`` call: here for a built-in kind, in its own package
for a third-party one (registered before the run's configuration is made).

>>> [kind.name for kind in query_kinds()][:4]
['image', 'entity', 'composition', 'relation']
"""

from gbc.annotators.kinds.base import (
    GenerationConfig,
    ImageFailure,
    QueryKind,
    get_kind,
    query_kinds,
    register_kind,
    unregister_kind,
)
from gbc.annotators.kinds.composition import COMPOSITION
from gbc.annotators.kinds.entity import ENTITY
from gbc.annotators.kinds.image import IMAGE
from gbc.annotators.kinds.relation import RELATION

__all__ = [
    "COMPOSITION",
    "ENTITY",
    "GenerationConfig",
    "IMAGE",
    "ImageFailure",
    "QueryKind",
    "RELATION",
    "get_kind",
    "query_kinds",
    "register_kind",
    "unregister_kind",
]

# The one list of the built-in kinds: registration order is the order of prompts, settings
# and provenance.
for _kind in (IMAGE, ENTITY, COMPOSITION, RELATION):
    register_kind(_kind)
