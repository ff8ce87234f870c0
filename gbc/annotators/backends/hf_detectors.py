"""Open-vocabulary detectors of ``transformers``: ``grounding-dino:<id or folder>`` and ``owlv2:<id or folder>``.

Both find several phrases of one image in one forward pass and several images (whole images
or crops of any size) in one batch. They return raw boxes relative to each request's image
with the model's scores; the only filter is a low model-level score floor (``threshold``):
thresholds, NMS and area rules belong to the engine.

Boxes and scores are decoded here from the raw model outputs rather than through the
processors' ``post_process_*`` helpers: those changed signature across transformers versions
(``box_threshold`` became ``threshold`` in 4.55), lose the query index needed to score one box
against every phrase of a joint prompt, and (OWLv2) fail on padded query lists.

Example::

    detector = registry.create_detector("grounding-dino:IDEA-Research/grounding-dino-tiny")
    [found] = detector.detect([DetectionRequest(image=img, phrases=["cat", "red sofa"])])
    found["cat"].boxes  # [(left, top, right, bottom), ...] in [0, 1]
"""

from __future__ import annotations

import logging
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field

from gbc.annotators.backends.base import (
    BackendError,
    BackendOptions,
    DetectionRequest,
    PhraseDetections,
    load_or_unavailable,
)
from gbc.annotators.backends.hf_mllm import dtype_kwarg, is_out_of_memory, missing_model_error, resolve_device, scale_image
from gbc.annotators.backends.registry import register_detector

log = logging.getLogger(__name__)

#: default detector (the reference pipeline's): Grounding DINO tiny, 172M parameters
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"


def default_detector_spec() -> str:
    """The spec of the default detector."""
    return f"grounding-dino:{DEFAULT_DETECTOR}"


def unique_phrases(phrases: Sequence[str]) -> List[str]:
    """Non-empty phrases in first-seen order, each once."""
    seen: Dict[str, None] = {}
    for phrase in phrases:
        if phrase.strip() and phrase not in seen:
            seen[phrase] = None
    return list(seen)


def phrase_positions(offsets: Sequence[Sequence[int]], spans: Sequence[Tuple[int, int]]) -> List[List[int]]:
    """Token positions of each character span of a prompt, from a tokenizer's offset mapping.

    Special and padding tokens have empty offsets ``(0, 0)`` and belong to no phrase.
    """
    return [
        [i for i, (start, end) in enumerate(offsets) if end > start and start >= begin and end <= stop]
        for begin, stop in spans
    ]


def clip_box(left: float, top: float, right: float, bottom: float) -> Tuple[float, float, float, float]:
    def clamp(v: float) -> float:
        return min(1.0, max(0.0, float(v)))

    return clamp(left), clamp(top), clamp(right), clamp(bottom)


class DetectorOptions(BackendOptions):
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights precision")
    max_batch_size: int = Field(8, ge=1, description="most (image, prompt) rows in one forward pass")
    max_image_side: Optional[int] = Field(
        1333, ge=16, description="images are scaled down to this longer side before preprocessing"
    )
    revision: Optional[str] = Field(None, description="hub revision (branch, tag or commit) to load")


class _ZeroShotDetector:
    """Shared loading and batching; subclasses build rows, run them and decode the outputs."""

    name = ""
    Options = DetectorOptions

    def __init__(self, argument: str, options=None):
        if not argument:
            raise BackendError(f"the {self.name} backend needs a model: {self.name}:<hub id or local folder>")
        self.argument = argument
        self.options = options or self.Options()
        self.max_batch_size = self.options.max_batch_size
        self.model = None
        self.processor = None
        self.device: Optional[str] = None
        self.dtype = None

    @classmethod
    def from_loaded(cls, model, processor, options=None, argument: str = "<in memory>"):
        """A backend around an already loaded model and processor (benchmarks, custom loading)."""
        backend = cls(argument, options)
        parameter = next(model.parameters())
        backend.model, backend.processor = model.eval(), processor
        backend.device, backend.dtype = str(parameter.device), parameter.dtype
        return backend

    def load(self) -> None:
        """Load the processor and the weights (called by the first ``detect``).

        Any failure is a ``BackendUnavailable``: without the model no request can be answered.
        """
        if self.model is None:
            load_or_unavailable(self.argument, self._load)

    def _load(self) -> None:
        from gbc.annotators.backends.hub import hub_load_options

        # Before importing transformers: a model that can come from nowhere fails in seconds.
        common = dict(hub_load_options(self.argument, self.options.revision))
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        device = resolve_device(self.options.device)
        dtype = getattr(torch, self.options.dtype)
        if self.options.revision:
            common["revision"] = self.options.revision
        try:
            processor = AutoProcessor.from_pretrained(self.argument, **common)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(self.argument, **{dtype_kwarg(): dtype}, **common)
        except (OSError, ValueError) as exc:
            raise missing_model_error(self.argument, exc) from exc
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype

    def detect(self, requests: Sequence[DetectionRequest]) -> List[Dict[str, PhraseDetections]]:
        """For each request, phrase -> raw boxes and scores (phrases with no box are absent)."""
        if not requests:
            return []
        self.load()
        results: List[Dict[str, PhraseDetections]] = [{} for _ in requests]
        rows: List[Tuple[int, List[str]]] = []
        images = []
        for index, request in enumerate(requests):
            phrases = unique_phrases(request.phrases)
            images.append(scale_image(request.image, self.options.max_image_side) if phrases else None)
            rows.extend((index, chunk) for chunk in self.split_phrases(phrases))
        start = 0
        while start < len(rows):
            batch = rows[start : start + self.max_batch_size]
            decoded = self._run_with_fallback([images[i] for i, _ in batch], [chunk for _, chunk in batch])
            for (index, _), found in zip(batch, decoded):
                results[index].update(found)
            start += len(batch)
        return results

    def _run_with_fallback(self, images, chunks) -> List[Dict[str, PhraseDetections]]:
        """``run_rows``; a CUDA out-of-memory error halves the batch (remembered) and retries."""
        import torch

        try:
            return self.run_rows(images, chunks)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(chunks) == 1:
                raise
            self.max_batch_size = max(1, min(self.max_batch_size, len(chunks) // 2))
            log.warning("out of memory with a batch of %d; retrying as batches of %d", len(chunks), self.max_batch_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        size = self.max_batch_size
        decoded: List[Dict[str, PhraseDetections]] = []
        for begin in range(0, len(chunks), size):
            decoded.extend(self._run_with_fallback(images[begin : begin + size], chunks[begin : begin + size]))
        return decoded

    def split_phrases(self, phrases: List[str]) -> List[List[str]]:
        raise NotImplementedError

    def run_rows(self, images, chunks: List[List[str]]) -> List[Dict[str, PhraseDetections]]:
        raise NotImplementedError

    def _to_device(self, inputs):
        import torch

        inputs = inputs.to(self.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)
        return inputs

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        self.model = None
        self.processor = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _collect(scores, boxes, threshold: float) -> PhraseDetections:
    """Boxes (already relative corners, one row per query) whose score reaches ``threshold``, best first."""
    keep = (scores >= threshold).nonzero().flatten().tolist()
    keep.sort(key=lambda q: -float(scores[q]))
    found = PhraseDetections()
    for q in keep:
        box = clip_box(*boxes[q].tolist())
        if box[2] > box[0] and box[3] > box[1]:  # boxes wholly outside the image (padding) vanish
            found.boxes.append(box)
            found.scores.append(float(scores[q]))
    return found


@register_detector
class GroundingDinoDetector(_ZeroShotDetector):
    """Grounding DINO: the phrases of one image joined into one prompt ``"a . b . c ."``.

    Each predicted box is scored against each phrase by the highest probability over that
    phrase's tokens, so one pass gives every phrase its own boxes; phrases that do not fit the
    model's text length (``max_text_len``, 256 for the released models) go to further passes.
    """

    name = "grounding-dino"
    spec_syntax = "grounding-dino:<hub id or local folder>"

    class Options(DetectorOptions):
        threshold: float = Field(
            0.2, ge=0.0, le=1.0, description="model-level score floor (the engine applies its own thresholds)"
        )
        max_phrases_per_pass: Optional[int] = Field(
            None, ge=1, description="phrases joined into one prompt at most (besides the text length limit)"
        )

    def _text_limit(self) -> int:
        return int(getattr(self.model.config, "max_text_len", 256))

    @staticmethod
    def _clean(phrase: str) -> str:
        # "." separates phrases in the prompt: a phrase must not contain one of its own
        return " ".join(phrase.replace(".", " ").split()) or "object"

    def split_phrases(self, phrases: List[str]) -> List[List[str]]:
        tokenizer = self.processor.tokenizer
        budget = self._text_limit() - 2  # [CLS] and [SEP]
        most = self.options.max_phrases_per_pass or len(phrases) or 1
        chunks: List[List[str]] = []
        used = 0
        for phrase in phrases:
            cost = len(tokenizer.tokenize(self._clean(phrase))) + 1  # the phrase and its " ."
            if chunks and used + cost <= budget and len(chunks[-1]) < most:
                chunks[-1].append(phrase)
                used += cost
            else:
                chunks.append([phrase])
                used = cost
        return chunks

    def run_rows(self, images, chunks):
        import torch

        prompts, char_spans = [], []
        for chunk in chunks:
            text, spans = "", []
            for phrase in chunk:
                clean = self._clean(phrase)
                spans.append((len(text), len(text) + len(clean)))
                text += clean + " . "
            prompts.append(text.strip())
            char_spans.append(spans)
        tokens = self.processor.tokenizer(
            prompts, padding="longest", truncation=True, max_length=self._text_limit(),
            return_offsets_mapping=True, return_tensors="pt",
        )
        offsets = tokens.pop("offset_mapping")
        pixels = self.processor.image_processor(images, return_tensors="pt")
        inputs = self._to_device(pixels)
        for key, value in tokens.items():
            inputs[key] = value.to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu()  # (rows, queries, text positions)
        cx, cy, w, h = outputs.pred_boxes.float().cpu().unbind(-1)  # relative to each unpadded image
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        decoded = []
        for row, (chunk, spans) in enumerate(zip(chunks, char_spans)):
            found: Dict[str, PhraseDetections] = {}
            for phrase, positions in zip(chunk, phrase_positions(offsets[row].tolist(), spans)):
                positions = [p for p in positions if p < probs.shape[-1]]
                if not positions:  # truncated away
                    log.warning("phrase %r did not fit the text limit of %s", phrase, self.argument)
                    continue
                scores = probs[row][:, positions].max(dim=-1).values
                detections = _collect(scores, corners[row], self.options.threshold)
                if detections.boxes:
                    found[phrase] = detections
            decoded.append(found)
        return decoded


@register_detector
class Owlv2Detector(_ZeroShotDetector):
    """OWLv2: the phrases of one image are its text queries, all scored in one pass.

    The processor pads each image to a square (bottom and right) before resizing, so boxes
    come back relative to a ``max(h, w)`` square and are un-padded here.
    """

    name = "owlv2"
    spec_syntax = "owlv2:<hub id or local folder>"

    class Options(DetectorOptions):
        threshold: float = Field(
            0.1, ge=0.0, le=1.0, description="model-level score floor (the engine applies its own thresholds)"
        )
        max_queries_per_pass: int = Field(32, ge=1, description="text queries of one image in one forward pass")

    def split_phrases(self, phrases: List[str]) -> List[List[str]]:
        step = self.options.max_queries_per_pass
        return [phrases[i : i + step] for i in range(0, len(phrases), step)]

    def run_rows(self, images, chunks):
        import torch

        limit = int(self.model.config.text_config.max_position_embeddings)
        inputs = self.processor(
            text=[list(c) for c in chunks], images=images, return_tensors="pt",
            padding="max_length", truncation=True, max_length=limit,
        )
        inputs = self._to_device(inputs)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu()  # (rows, patches, queries)
        cx, cy, w, h = outputs.pred_boxes.float().cpu().unbind(-1)  # relative to the padded square
        decoded = []
        for row, (image, chunk) in enumerate(zip(images, chunks)):
            width, height = image.size
            side = max(width, height)
            sx, sy = side / width, side / height
            corners = torch.stack(
                [(cx[row] - w[row] / 2) * sx, (cy[row] - h[row] / 2) * sy, (cx[row] + w[row] / 2) * sx, (cy[row] + h[row] / 2) * sy],
                dim=-1,
            )
            found: Dict[str, PhraseDetections] = {}
            for query, phrase in enumerate(chunk):
                detections = _collect(probs[row, :, query], corners, self.options.threshold)
                if detections.boxes:
                    found[phrase] = detections
            decoded.append(found)
        return decoded
