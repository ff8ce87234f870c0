"""Models that score captions: CLIP-style image-text models and a toxicity classifier.

Spec strings, as for annotation backends:

- ``transformers:<hub id or folder>``: ``CLIPModel``, ``SiglipModel`` or anything ``AutoModel``
  loads that has ``get_image_features`` / ``get_text_features``;
- ``open_clip:<name>[:<pretrained>]``: an open_clip model, when open_clip is installed;
- toxicity: ``transformers:<hub id or folder>`` of a sequence classifier (one sigmoid score
  per label, as Detoxify's models are read).

Nothing is loaded at construction; ``load()`` (called on first use) turns any failure into
``BackendUnavailable``, which stops a run at once. Work is split into CPU preparation
(``prepare_images`` / ``prepare_texts``, safe to run in a helper thread) and model calls
(``encode_images`` / ``encode_texts``), which run in batches of ``batch_size``; a CUDA
out-of-memory error halves the batch for the rest of the run.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gbc.annotators.backends.base import BackendError, BackendUnavailable, load_or_unavailable
from gbc.annotators.backends.hf_mllm import dtype_kwarg, is_out_of_memory, missing_model_error, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

#: Regions (or texts) per forward pass unless told otherwise.
DEFAULT_BATCH_SIZE = 128
#: Model families whose text tower was trained on texts padded to the full context.
_PAD_TO_CONTEXT = ("siglip", "siglip2")
_KINDS = ("transformers", "open_clip")


@dataclass
class ModelOptions:
    """Where and how a scoring model runs."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class PreparedTexts:
    """Texts tokenised for a model: model inputs, token counts (start/end tokens included,
    before truncation) and whether each text was cut to the model's context."""

    inputs: Dict[str, Any]
    n_tokens: List[int]
    truncated: List[bool]


def default_score_name(spec: str) -> str:
    """The score name derived from a spec: the model's last path part (``openai/clip-vit-large-patch14-336``
    -> ``clip-vit-large-patch14-336``; ``open_clip:ViT-B-32:laion2b_s34b_b79k`` -> ``ViT-B-32-laion2b_s34b_b79k``)."""
    kind, _, argument = spec.partition(":")
    if kind == "open_clip":
        argument = argument.replace("hf-hub:", "")
        parts = [p for p in argument.split(":") if p]
        name = "-".join(p.rstrip("/").split("/")[-1] for p in parts)
    else:
        name = argument.rstrip("/").split("/")[-1]
    return re.sub(r"\s+", "-", name) or kind


def parse_clip_option(text: str) -> Tuple[str, str]:
    """``[NAME=]SPEC`` -> ``(name, spec)``; the name defaults to :func:`default_score_name`."""
    name, sep, spec = text.partition("=")
    # a '=' inside a path or after the kind belongs to the spec, not to a name
    if not sep or ":" in name or "/" in name:
        name, spec = "", text
    spec = spec.strip()
    kind, colon, argument = spec.partition(":")
    if not colon or kind not in _KINDS or not argument:
        raise BackendError(f"bad CLIP model spec {spec!r}: expected transformers:<hub id or folder> or open_clip:<name>[:<pretrained>]")
    name = name.strip() or default_score_name(spec)
    return name, spec


def _to_numpy(features) -> np.ndarray:
    import torch

    if not torch.is_tensor(features):
        # transformers 5 returns a model output whose pooled, projected features are pooler_output
        features = features.pooler_output if getattr(features, "pooler_output", None) is not None else features[0]
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy()


def _slice(inputs: Dict[str, Any], start: int, stop: int) -> Dict[str, Any]:
    return {k: v[start:stop] for k, v in inputs.items()}


def _length(inputs: Dict[str, Any]) -> int:
    return len(next(iter(inputs.values()))) if inputs else 0


class _BatchRunner:
    """Runs a model call over inputs in batches; halves the batch (for good) on out of memory."""

    def __init__(self, options: ModelOptions, label: str):
        self.batch_size = max(1, int(options.batch_size))
        self.label = label

    def run(self, inputs: Dict[str, Any], call: Callable[[Dict[str, Any]], np.ndarray]) -> np.ndarray:
        n = _length(inputs)
        parts: List[np.ndarray] = []
        start = 0
        while start < n:
            size = min(self.batch_size, n - start)
            try:
                parts.append(call(_slice(inputs, start, start + size)))
            except Exception as exc:
                if not is_out_of_memory(exc) or size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                log.warning("%s: out of memory with a batch of %d; batches of %d from now on", self.label, size, self.batch_size)
                _free_accelerator_memory()
                continue
            start += size
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _free_accelerator_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - freeing memory is best effort
        pass


class ClipScoreModel:
    """Base of CLIP-style scorers: unit-norm image and text features whose dot product is the score."""

    kind = ""

    def __init__(self, argument: str, name: Optional[str] = None, options: Optional[ModelOptions] = None):
        if not argument:
            raise BackendError(f"the {self.kind} scorer needs a model: {self.kind}:<model>")
        self.argument = argument
        self.spec = f"{self.kind}:{argument}"
        self.name = name or default_score_name(self.spec)
        self.options = options or ModelOptions()
        self.device: Optional[str] = None
        self.dtype = None
        self.context_length = 0
        self._loaded = False
        self._images = _BatchRunner(self.options, f"{self.name} images")
        self._texts = _BatchRunner(self.options, f"{self.name} texts")

    def load(self) -> None:
        if not self._loaded:
            load_or_unavailable(self.spec, self._load)
            self._loaded = True

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_images(self, images: Sequence[Any]) -> Dict[str, Any]:
        raise NotImplementedError  # pragma: no cover

    def prepare_texts(self, texts: Sequence[str]) -> PreparedTexts:
        raise NotImplementedError  # pragma: no cover

    def count_tokens(self, texts: Sequence[str]) -> List[int]:
        """Tokens of each text before truncation, start and end tokens included."""
        raise NotImplementedError  # pragma: no cover

    def encode_images(self, inputs: Dict[str, Any]) -> np.ndarray:
        return self._images.run(inputs, self._image_features)

    def encode_texts(self, prepared: PreparedTexts) -> np.ndarray:
        return self._texts.run(prepared.inputs, self._text_features)

    def _image_features(self, batch: Dict[str, Any]) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def _text_features(self, batch: Dict[str, Any]) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        self._loaded = False
        _free_accelerator_memory()


class TransformersClip(ClipScoreModel):
    """``transformers:<hub id or folder>``: CLIP, SigLIP and any ``AutoModel`` with image and text features."""

    kind = "transformers"

    def __init__(self, argument: str, name: Optional[str] = None, options: Optional[ModelOptions] = None):
        super().__init__(argument, name, options)
        self.model = None
        self.image_processor = None
        self.tokenizer = None
        self._pad_to_context = False

    @classmethod
    def from_loaded(cls, model, processor, name: str = "clip", options: Optional[ModelOptions] = None) -> "TransformersClip":
        """A scorer around a model and processor already in memory (benchmarks, custom loading)."""
        scorer = cls("<in memory>", name, options)
        parameter = next(model.parameters())
        scorer._adopt(model.eval(), processor, str(parameter.device), parameter.dtype)
        scorer._loaded = True
        return scorer

    def _load(self) -> None:
        from transformers import AutoModel, AutoProcessor

        device = resolve_device(self.options.device)
        dtype = resolve_dtype(self.options.dtype, device)
        try:
            processor = AutoProcessor.from_pretrained(self.argument)
            model = AutoModel.from_pretrained(self.argument, **{dtype_kwarg(): dtype})
        except (OSError, ValueError) as exc:
            raise missing_model_error(self.argument, exc) from exc
        self._adopt(model.to(device).eval(), processor, device, dtype)

    def _adopt(self, model, processor, device: str, dtype) -> None:
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise BackendUnavailable(f"model {self.argument!r} ({type(model).__name__}) has no {method}: not a CLIP-style model")
        image_processor = getattr(processor, "image_processor", None)
        tokenizer = getattr(processor, "tokenizer", None)
        if image_processor is None or tokenizer is None:
            raise BackendUnavailable(f"model {self.argument!r} has no image processor and tokenizer pair")
        config = model.config
        text_config = getattr(config, "text_config", config)
        context = getattr(text_config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.context_length = int(min(context, tokenizer.model_max_length or context))
        self._pad_to_context = getattr(config, "model_type", "") in _PAD_TO_CONTEXT
        # texts are counted whole on purpose (n_tokens, truncation flag): no "too long" warning
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.device, self.dtype = device, dtype

    def prepare_images(self, images: Sequence[Any]) -> Dict[str, Any]:
        return dict(self.image_processor(images=list(images), return_tensors="pt"))

    def count_tokens(self, texts: Sequence[str]) -> List[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def prepare_texts(self, texts: Sequence[str]) -> PreparedTexts:
        texts = list(texts)
        ids = self.tokenizer(texts, truncation=False)["input_ids"]
        lengths = [len(row) for row in ids]
        context = self.context_length
        # tokenised once; only the texts that do not fit are tokenised again, truncated the tokenizer's way
        long = [i for i, n in enumerate(lengths) if n > context]
        if long:
            cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=context)["input_ids"]
            for i, row in zip(long, cut):
                ids[i] = row
        padding = "max_length" if self._pad_to_context else "longest"
        encoded = self.tokenizer.pad({"input_ids": ids}, padding=padding, max_length=context, return_tensors="pt",
                                     return_attention_mask=True)
        inputs = {k: encoded[k] for k in ("input_ids", "attention_mask") if k in encoded}
        return PreparedTexts(inputs, lengths, [n > context for n in lengths])

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        import torch

        out = {}
        for key, value in batch.items():
            value = value.to(self.device)
            out[key] = value.to(self.dtype) if torch.is_floating_point(value) else value
        return out

    def _image_features(self, batch: Dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _to_numpy(self.model.get_image_features(**self._to_device(batch)))

    def _text_features(self, batch: Dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _to_numpy(self.model.get_text_features(**self._to_device(batch)))

    def close(self) -> None:
        self.model = None
        super().close()


class OpenClipScorer(ClipScoreModel):
    """``open_clip:<name>[:<pretrained>]`` (``hf-hub:<repo>`` names work as open_clip reads them)."""

    kind = "open_clip"

    def __init__(self, argument: str, name: Optional[str] = None, options: Optional[ModelOptions] = None):
        super().__init__(argument, name, options)
        self.model = None
        self.transform = None
        self.tokenizer = None

    def _load(self) -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise BackendUnavailable("open_clip models need the open_clip package: pip install open-clip-torch") from exc
        model_name, pretrained = self.argument, None
        if not self.argument.startswith("hf-hub:") and ":" in self.argument:
            model_name, pretrained = self.argument.split(":", 1)
        device = resolve_device(self.options.device)
        dtype = resolve_dtype(self.options.dtype, device)
        model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        self.model = model.to(dtype).eval()
        self.transform = transform
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        self.device, self.dtype = device, dtype

    def prepare_images(self, images: Sequence[Any]) -> Dict[str, Any]:
        import torch

        return {"pixel_values": torch.stack([self.transform(im) for im in images])}

    def count_tokens(self, texts: Sequence[str]) -> List[int]:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:  # tokenizers without a plain encode (HF-backed ones) report the padded length
            return [int((row != 0).sum()) for row in self.tokenizer(list(texts))]
        # open_clip's BPE encode leaves out the start and end tokens
        return [len(encode(t)) + 2 for t in texts]

    def prepare_texts(self, texts: Sequence[str]) -> PreparedTexts:
        texts = list(texts)
        lengths = self.count_tokens(texts)
        tokens = self.tokenizer(texts)
        return PreparedTexts({"input_ids": tokens}, lengths, [n > self.context_length for n in lengths])

    def _image_features(self, batch: Dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _to_numpy(self.model.encode_image(batch["pixel_values"].to(self.device, self.dtype)))

    def _text_features(self, batch: Dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _to_numpy(self.model.encode_text(batch["input_ids"].to(self.device)))

    def close(self) -> None:
        self.model = None
        super().close()


def create_clip_model(spec: str, name: Optional[str] = None, options: Optional[ModelOptions] = None) -> ClipScoreModel:
    """A CLIP-style scorer for ``spec`` (not loaded yet)."""
    kind, _, argument = spec.partition(":")
    classes = {"transformers": TransformersClip, "open_clip": OpenClipScorer}
    if kind not in classes:
        raise BackendError(f"unknown CLIP model kind {kind!r} in {spec!r}; expected one of: {', '.join(classes)}")
    return classes[kind](argument, name, options)


class ToxicityModel:
    """``transformers:<hub id or folder>``: a sequence classifier; every label gets its sigmoid score."""

    def __init__(self, spec: str, options: Optional[ModelOptions] = None):
        kind, _, argument = spec.partition(":")
        if kind != "transformers" or not argument:
            raise BackendError(f"bad toxicity model spec {spec!r}: expected transformers:<hub id or folder>")
        self.spec, self.argument = spec, argument
        self.options = options or ModelOptions()
        self.model = None
        self.tokenizer = None
        self.labels: List[str] = []
        self.max_length = 512
        self.device: Optional[str] = None
        self._runner = _BatchRunner(self.options, "toxicity")

    @classmethod
    def from_loaded(cls, model, tokenizer, options: Optional[ModelOptions] = None) -> "ToxicityModel":
        scorer = cls("transformers:<in memory>", options)
        scorer._adopt(model.eval(), tokenizer, str(next(model.parameters()).device))
        return scorer

    def load(self) -> None:
        if self.model is None:
            load_or_unavailable(self.spec, self._load)

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = resolve_device(self.options.device)
        # toxicity heads are small; full precision keeps the scores comparable across devices
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.argument)
            model = AutoModelForSequenceClassification.from_pretrained(self.argument)
        except (OSError, ValueError) as exc:
            raise missing_model_error(self.argument, exc) from exc
        self._adopt(model.to(device).eval(), tokenizer, device)

    def _adopt(self, model, tokenizer, device: str) -> None:
        id2label = getattr(model.config, "id2label", None) or {}
        n = int(model.config.num_labels)
        self.labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(n)]
        limit = getattr(model.config, "max_position_embeddings", None) or 512
        self.max_length = int(min(limit, tokenizer.model_max_length or limit))
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def prepare_texts(self, texts: Sequence[str]) -> Dict[str, Any]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return dict(encoded)

    def score(self, inputs: Dict[str, Any]) -> np.ndarray:
        """Sigmoid scores, one row per text and one column per label (``self.labels``)."""
        return self._runner.run(inputs, self._scores)

    def _scores(self, batch: Dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
        return torch.sigmoid(logits.float()).cpu().numpy()

    def close(self) -> None:
        self.model = None
        _free_accelerator_memory()
