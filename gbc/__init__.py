"""gbc: graph-based captioning.

Module map
----------
- ``gbc.schemas``: the data model (``Bbox``, ``Description``, ``Edge``, ``Vertex``, ``GbcGraph``).
- ``gbc.store``: the LMDB graph store and the JSONL / JSON / Parquet readers and writers.
- ``gbc.annotators``: backends, prompts, parsers and the recursive annotation engine.
- ``gbc.scoring``: caption scores (CLIP-style models, toxicity) and score filters.
- ``gbc.export``: caption strategies and writers for CLIP training.
- ``gbc.viz``: pictures of graphs.
- ``gbc.distributed``: sharding, merging and Ray.
- ``gbc.cli``: the ``gbc`` command.

Annotating images (``gbc.annotate``; ``runner=gbc.RayRunner(...)`` for a Ray cluster)::

    import gbc
    config = gbc.AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})
    summary = gbc.annotate(["photos/"], "photos.lmdb", config)

Loading graphs::

    import gbc
    for graph in gbc.read_graphs("graphs.jsonl"):
        print(graph.short_caption, len(graph.vertices))
"""

from gbc._version import __version__
from gbc.errors import GbcError
from gbc.schemas import Bbox, Description, Edge, GbcGraph, Vertex


def read_graphs(path, **kwargs):
    """Iterate the graphs stored at ``path`` (``.jsonl``, ``.json``, ``.parquet`` or a ``.lmdb`` store)."""
    from gbc.store.files import read_graphs as _read

    return _read(path, **kwargs)


def write_graphs(path, graphs, **kwargs):
    """Write ``graphs`` to ``path``; the format follows the extension. Returns the number written."""
    from gbc.store.files import write_graphs as _write

    return _write(path, graphs, **kwargs)


def open_store(path, readonly=True, **kwargs):
    """Open an LMDB graph store; read-only by default (a mapping from image key to ``GbcGraph``).

    Read-only, a store with unmerged shards (``path/shards/*.lmdb``, left by a distributed
    run) or a folder of ``*.lmdb`` stores opens as one view of all of them (``MultiStore``).
    """
    from gbc.store.shards import open_store as _open

    return _open(path, readonly=readonly, **kwargs)


def annotate(inputs, store, config, **kwargs):
    """Annotate ``inputs`` (image folders, tar shards, URL lists) into the LMDB store ``store``
    with the backends and settings of ``config`` (an ``AnnotateConfig``); returns the run's
    summary. Resumes what the store holds; ``runner=gbc.RayRunner(workers=4)`` runs on Ray.
    See ``gbc.annotators.run.annotate`` for every option.

    >>> config = gbc.AnnotateConfig().with_overrides({"mllm.spec": "scripted", "detector.spec": "scripted"})
    >>> gbc.annotate(["photos/"], "photos.lmdb", config)["done"]  # doctest: +SKIP
    """
    from gbc.annotators.run import annotate as _annotate

    return _annotate(inputs, store, config, **kwargs)


def score_graphs(graphs, scorer):
    """Score every caption of ``graphs`` with ``scorer`` (a ``CaptionScorer``); yields the graphs.

    >>> scorer = gbc.CaptionScorer.from_specs(clip=["transformers:openai/clip-vit-base-patch32"],
    ...                                       images_root="images/")  # doctest: +SKIP
    >>> gbc.write_graphs("scored.jsonl", gbc.score_graphs(gbc.read_graphs("graphs.jsonl"), scorer))  # doctest: +SKIP
    """
    from gbc.scoring.scorer import score_graphs as _score

    return _score(graphs, scorer)


_LAZY = {"CaptionScorer": "gbc.scoring.scorer", "ScoreFilter": "gbc.scoring.filters",
         "AnnotateConfig": "gbc.annotators.config", "LocalRunner": "gbc.annotators.run",
         "RayRunner": "gbc.distributed.ray_runner"}


def __getattr__(name):
    # the scoring classes load numpy and the backend helpers, the run classes the engine's
    # settings, only when asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gbc' has no attribute {name!r}")


__all__ = [
    "AnnotateConfig",
    "CaptionScorer",
    "LocalRunner",
    "RayRunner",
    "ScoreFilter",

    "Bbox",
    "Description",
    "Edge",
    "GbcError",
    "GbcGraph",
    "Vertex",
    "__version__",
    "annotate",
    "open_store",
    "read_graphs",
    "score_graphs",
    "write_graphs",
]
