"""Settings of the recursive annotator: one validated model, loadable from YAML.

Every bound of a run is a named field with a documented default; unknown keys are errors.
The defaults follow the reference pipeline's ``configs/captioning/default.yaml`` where it has
one (detection thresholds, merge and mask thresholds) and add the bounds it lacks (depth, vertex
budget, image scaling, crop margins, retries).

>>> cfg = AnnotateConfig()
>>> cfg.limits.max_depth, cfg.detection.from_entity.max_rel_area
(4, 0.8)
>>> cfg = cfg.with_overrides({"limits.max_depth": 2, "seed": 7})
>>> cfg.limits.max_depth, cfg.seed
(2, 7)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from gbc.annotators.detection import DetectionSettings, EntityDetectionSettings
from gbc.annotators.kinds import GenerationConfig, query_kinds
from gbc.annotators.kinds.image import ImageGenerationConfig  # noqa: F401 - importable from here as before
from gbc.errors import GbcError, describe_validation_error

class ConfigError(GbcError, ValueError):
    """A configuration file or override that cannot be used (unknown key, bad value)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackendConfig(_Section):
    """How one backend is built and called."""

    spec: Optional[str] = Field(None, description="backend spec string, e.g. 'transformers:<model>' or 'scripted'")
    options: Dict[str, Any] = Field(default_factory=dict, description="backend options (validated by the backend)")
    batch_size: Optional[int] = Field(None, ge=1, description="largest batch sent in one call; default: the backend's max_batch_size")
    concurrency: int = Field(1, ge=1, description="calls in flight at once (raise it for servers that batch continuously; keep 1 for a local GPU)")
    timeout_s: float = Field(600.0, gt=0, description="a call that takes longer counts as failed (then retried)")
    retries: int = Field(2, ge=0, description="retries of a failed call before its images fail")
    backoff_s: float = Field(1.0, ge=0, description="sleep before the first retry; doubled at each further retry")
    backoff_factor: float = Field(2.0, ge=1.0, description="growth of the sleep between retries")


class LimitsConfig(_Section):
    """Bounds on graph size, memory and model inputs."""

    max_depth: int = Field(4, ge=0, description="deepest entity level (0: image query only; children of the image are level 1)")
    max_vertices_per_image: int = Field(64, ge=1, description="vertex budget per graph (image, entities, compositions, relations)")
    images_in_flight: int = Field(64, ge=1, description="images decoded or being annotated at once (memory bound; feeds the batches)")
    max_image_side: int = Field(1024, ge=16, description="images and crops are scaled down to this longest side before a model sees them")
    min_crop_side: int = Field(128, ge=1, description="crops whose shortest side is smaller are scaled up to it (capped by max_image_side)")
    crop_margin: float = Field(0.05, ge=0, le=1, description="context added around an entity or composition crop sent to the MLLM, as a fraction of the box size per side")
    max_image_pixels: int = Field(178_956_970, ge=1, description="larger images are refused as possible decompression bombs (PIL's own default limit x2)")
    pixels_in_flight: int = Field(200_000_000, ge=1, description="decoded pixels of the images in flight at most (memory bound besides the image count; an image larger than this is annotated alone); an RGB pixel takes 3 bytes")
    max_decoded_side: int = Field(3072, ge=0, description="images whose longest side is larger are held at a reduced size of at least this side (JPEGs decoded at 1/2, 1/4 or 1/8 scale, other formats reduced after decoding); crops are cut from it; 0 keeps the full size")
    max_entities: int = Field(10, ge=1, description="at most this many tagged objects or features are read from one answer")
    allocator_keep_mb: int = Field(32, ge=0, description="glibc only, whole process: freed memory up to this many MB is kept for reuse instead of being returned to the system and faulted in again (decoded images and crops are large, short-lived buffers); 0 leaves the allocator's settings alone")


class DetectionSection(_Section):
    from_image: DetectionSettings = Field(default_factory=DetectionSettings, description="detection of the image's tagged objects")
    from_entity: EntityDetectionSettings = Field(default_factory=EntityDetectionSettings, description="detection of an entity's features inside its crop")


class QueriesConfig(_Section):
    """Which queries run and how their results combine."""

    include_entity: bool = Field(True, description="detect tagged objects and caption each box (recursion)")
    include_composition: bool = Field(True, description="one composition vertex per group of >= 2 boxes of one phrase")
    include_relation: bool = Field(True, description="relation query for each image/entity vertex with >= 2 child groups")
    merge_overlap_threshold: float = Field(0.85, ge=0, le=1, description="a new box overlapping an existing vertex by more than this (both ways) with the same object name becomes that vertex")
    mask_inside_threshold: float = Field(0.85, ge=0, le=1, description="threshold of the sub/super masks written in the graph")
    same_object: Literal["rule", "semantic"] = Field("rule", description="how merged duplicates must be named: 'rule' = equal singular forms; 'semantic' = also synonyms by sentence-embedding similarity (needs gbc[semantic])")
    semantic_threshold: float = Field(0.8, ge=0, le=1, description="cosine similarity at or above which two names count as the same object (same_object: semantic)")
    reference_parsing: bool = Field(False, description="read image and relation answers as the reference pipeline (apple/ml-gbc) does, so that its recordings replay exactly: objects tagged in the concise caption are kept beyond limits.max_entities (only the identification list is cut), and a relation member counts only where its own name is written ('[bowl]' is not the member 'bowls')")


class GenerationSection(_Section):
    """``generation.<kind>``: the generation settings of every registered query kind, each
    validated by its kind's own model (``QueryKind.generation``, holding the kind's defaults);
    an unknown kind is an error like any unknown setting."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @model_validator(mode="wrap")
    @classmethod
    def _per_kind(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, cls):
            return data
        checked = _kinds_section().model_validate(data if data is not None else {})
        return handler({name: getattr(checked, name) for name in type(checked).model_fields})


_SECTION_MODELS: Dict[tuple, type] = {}


def _kinds_section() -> type:
    """A model with one field per registered kind (made again only when the kinds change)."""
    kinds = tuple((kind.name, kind.generation) for kind in query_kinds())
    model = _SECTION_MODELS.get(kinds)
    if model is None:
        fields = {name: (settings, Field(default_factory=settings)) for name, settings in kinds}
        model = _SECTION_MODELS[kinds] = create_model("GenerationSection", __base__=_Section, **fields)
    return model


class AnnotateConfig(_Section):
    """All settings of ``gbc annotate`` / ``RecursiveAnnotator``.

    YAML files mirror this structure (``limits: {max_depth: 3}``); flat overrides use dotted
    keys (``{"limits.max_depth": 3}``).
    """

    mllm: BackendConfig = Field(default_factory=BackendConfig)
    detector: BackendConfig = Field(default_factory=BackendConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    detection: DetectionSection = Field(default_factory=DetectionSection)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    prompts: Dict[str, str] = Field(default_factory=dict, description="prompt override files by query kind (see gbc.annotators.prompts)")
    seed: int = Field(0, description="same inputs, settings and seed give the same graphs")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]]) -> "AnnotateConfig":
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "AnnotateConfig":
        """Read a YAML file (an empty file gives the defaults)."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        try:
            config = cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_explain(exc)}") from None
        # prompt files named in a config file are found next to it, wherever the run starts
        config.prompts = {kind: str((path.parent / p) if not Path(p).is_absolute() else Path(p))
                          for kind, p in config.prompts.items()}
        return config

    def with_overrides(self, overrides: Mapping[str, Any]) -> "AnnotateConfig":
        """A copy with dotted-key overrides applied (``None`` values are ignored)."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            parts = dotted.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown setting {dotted!r}")
                node = node[part]
            node[parts[-1]] = value
        return AnnotateConfig.from_mapping(data)

    def fingerprint(self) -> str:
        """Short hash of the settings that shape graphs (not backend specs or batch sizes)."""
        data = self.model_dump(mode="json")
        for section in ("mllm", "detector"):
            data.pop(section)
        data["limits"].pop("images_in_flight")
        data["limits"].pop("allocator_keep_mb")
        data["limits"].pop("pixels_in_flight")
        if data["limits"]["max_decoded_side"] == LimitsConfig.model_fields["max_decoded_side"].default:
            data["limits"].pop("max_decoded_side")  # fingerprints of runs before the setting existed stay the same
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _explain(exc: ValidationError) -> str:
    return "invalid configuration: " + describe_validation_error(exc, subject="config", unknown="unknown setting {where!r}")


def describe_settings(config: Optional[BaseModel] = None, prefix: str = "") -> Dict[str, tuple]:
    """``{dotted name: (default, description)}`` for every leaf setting (for docs and ``--help``)."""
    config = config if config is not None else AnnotateConfig()
    out: Dict[str, tuple] = {}
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            out.update(describe_settings(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = (value, field.description or "")
    for name, value in (config.model_extra or {}).items():  # generation.<kind> sections
        out.update(describe_settings(value, f"{prefix}{name}."))
    return out
