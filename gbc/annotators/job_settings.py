"""What an image job needs from the run's configuration, resolved once per run.

``JobSettings.from_config(AnnotateConfig)`` flattens the configuration into the values the
per-image state machine (:mod:`gbc.annotators.job`) and the query kinds read on every answer,
loads the prompts of every registered kind, and picks the strategy modules (text helpers,
detection post-processing, composition hints and drawing) and the same-object test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict


@dataclass
class JobSettings:
    """What an ``ImageJob`` needs, resolved once per run from ``AnnotateConfig``."""

    seed: int
    max_depth: int
    max_vertices_per_image: int
    max_image_side: int
    min_crop_side: int
    crop_margin: float
    max_entities: int
    include_entity: bool
    include_composition: bool
    include_relation: bool
    merge_overlap_threshold: float
    reference_parsing: bool
    detection_from_image: Any
    detection_from_entity: Any
    generation: Dict[str, Any]  # query kind name -> its GenerationConfig
    prompts: Dict[str, Any]  # query kind name -> its PromptPair
    # modules with the strategy functions (text helpers, detection post-processing, composition
    # hints and drawing); resolved at run start
    text: Any = None
    detection: Any = None
    composition: Any = None
    same_object: Any = None  # (name, name) -> bool used by duplicate merging

    @classmethod
    def from_config(cls, config) -> "JobSettings":
        from gbc.annotators import composition, detection, prompts, text
        from gbc.annotators.kinds import query_kinds

        lim, q = config.limits, config.queries
        generation = {}
        for kind in query_kinds():
            # a kind registered after the configuration was made runs with its own defaults
            section = getattr(config.generation, kind.name, None)
            generation[kind.name] = section if section is not None else kind.generation()
        return cls(
            seed=config.seed,
            max_depth=lim.max_depth,
            max_vertices_per_image=lim.max_vertices_per_image,
            max_image_side=lim.max_image_side,
            min_crop_side=lim.min_crop_side,
            crop_margin=lim.crop_margin,
            max_entities=lim.max_entities,
            include_entity=q.include_entity,
            include_composition=q.include_composition,
            include_relation=q.include_relation,
            merge_overlap_threshold=q.merge_overlap_threshold,
            reference_parsing=q.reference_parsing,
            detection_from_image=config.detection.from_image,
            detection_from_entity=config.detection.from_entity,
            generation=generation,
            prompts=prompts.load_prompts(config.prompts or None),
            text=text,
            detection=detection,
            composition=composition,
            same_object=_same_object_test(q),
        )


def _same_object_test(queries):
    from gbc.annotators import text

    if queries.same_object == "semantic":
        from gbc.annotators.semantic import SemanticSameObject

        return SemanticSameObject(threshold=queries.semantic_threshold)
    return text.same_object
