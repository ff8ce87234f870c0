"""``transformers:<hub id or local folder>``: any image-text-to-text model with a chat template.

Loads through ``AutoProcessor`` + ``AutoModelForImageTextToText`` (LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL, ...) on first use and answers a batch of requests in one padded
``generate`` call (left padding, crops of different sizes together). A CUDA out-of-memory
error halves the batch and retries instead of failing the run.

Example::

    from gbc.annotators.backends import registry
    mllm = registry.create_mllm("transformers:llava-hf/llava-v1.6-mistral-7b-hf", {"max_batch_size": 16})
    texts = mllm.generate([MllmRequest(image=img, system_prompt="...", user_prompt="Describe.")])
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field

from gbc.annotators.backends.base import BackendError, BackendOptions, BackendUnavailable, MllmRequest, load_or_unavailable
from gbc.annotators.backends.registry import register_mllm

log = logging.getLogger(__name__)

#: default MLLM on a CUDA GPU: LLaVA-1.6 with Mistral-7B (the paper's smaller LLaVA setting)
DEFAULT_CUDA_MLLM = "llava-hf/llava-v1.6-mistral-7b-hf"
#: default MLLM without a GPU: a 0.5B LLaVA-OneVision that answers in reasonable time on CPUs
DEFAULT_CPU_MLLM = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"

DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_mllm_spec(device: Optional[str] = None) -> str:
    """The spec of the default MLLM for ``device`` (``None``/``"auto"``: the best available one)."""
    resolved = resolve_device(device or "auto")
    return f"transformers:{DEFAULT_CUDA_MLLM if resolved.startswith('cuda') else DEFAULT_CPU_MLLM}"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, then ``mps``, then ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> bfloat16 on CUDA, float16 on MPS, float32 on CPU (CPU half precision is slow)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        if device.startswith("mps"):
            return torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def best_attn_implementation(requested: str, device: str) -> str:
    """``auto`` -> flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if requested != "auto":
        return requested
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def dtype_kwarg() -> str:
    """transformers >= 4.56 calls the loading precision ``dtype``; older versions ``torch_dtype``."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def missing_model_error(argument: str, exc: BaseException) -> BackendUnavailable:
    """One clear error for a model that is neither a local folder, cached nor downloadable.

    It is a ``BackendUnavailable``: no request can be answered, so the run stops at once.
    """
    from gbc.annotators.backends import hub

    return hub.missing_model_error(argument, str(exc) if hub.is_local_model(argument) else exc.__class__.__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def scale_image(image, max_side: Optional[int]):
    """RGB copy of ``image`` whose longer side is at most ``max_side`` (aspect ratio kept).

    An engine region (``gbc.annotators.regions.Region``) is cut and scaled in one step, at
    this size: its pixels are never made at a larger size first."""
    from gbc.annotators.regions import Region

    if isinstance(image, Region):
        return image.pixels(max_side)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        from PIL import Image

        ratio = max_side / max(image.size)
        size = (max(1, round(image.size[0] * ratio)), max(1, round(image.size[1] * ratio)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


@register_mllm
class TransformersMllm:
    """Image-text-to-text models of ``transformers``, batched, on CUDA, MPS or CPU."""

    name = "transformers"
    spec_syntax = "transformers:<hub id or local folder>"

    class Options(BackendOptions):
        device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
            "auto", description="weights precision; auto = bfloat16 on CUDA, float16 on MPS, float32 on CPU"
        )
        max_batch_size: int = Field(8, ge=1, description="most requests answered in one generate call")
        attn_implementation: str = Field(
            "auto", description="auto (flash_attention_2 when installed on CUDA, else sdpa), sdpa, eager, ..."
        )
        max_image_side: Optional[int] = Field(
            1024, ge=16, description="images are scaled down so that their longer side is at most this"
        )
        trust_remote_code: bool = Field(False, description="allow model code from the hub (only for trusted models)")
        revision: Optional[str] = Field(None, description="hub revision (branch, tag or commit) to load")
        generation_kwargs: Dict[str, Any] = Field(
            default_factory=dict, description="extra keyword arguments for generate (e.g. repetition_penalty)"
        )

    def __init__(self, argument: str, options: Optional["TransformersMllm.Options"] = None):
        if not argument:
            raise BackendError("the transformers backend needs a model: transformers:<hub id or local folder>")
        self.argument = argument
        self.options = options or self.Options()
        self.max_batch_size = self.options.max_batch_size
        self.model = None
        self.processor = None
        self.device: Optional[str] = None
        self.dtype = None
        self._system_mode: Optional[str] = None  # "list", "string" or "prepend", found on first use

    @classmethod
    def from_loaded(cls, model, processor, options: Optional["TransformersMllm.Options"] = None, argument: str = "<in memory>"):
        """A backend around an already loaded model and processor (benchmarks, custom loading)."""
        backend = cls(argument, options)
        backend.model = model.eval()
        backend.processor = processor
        backend.device = str(next(model.parameters()).device)
        backend.dtype = next(model.parameters()).dtype
        backend._prepare_processor()
        return backend

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load processor and weights (called by the first ``generate``).

        Any failure is a ``BackendUnavailable``: without the model no request can be answered.
        """
        if self.model is None:
            load_or_unavailable(self.argument, self._load)

    def _load(self) -> None:
        from gbc.annotators.backends.hub import hub_load_options

        # Before importing transformers: a model that can come from nowhere fails in seconds.
        common = dict(hub_load_options(self.argument, self.options.revision),
                      trust_remote_code=self.options.trust_remote_code)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = resolve_device(self.options.device)
        dtype = resolve_dtype(self.options.dtype, device)
        if self.options.revision:
            common["revision"] = self.options.revision
        try:
            processor = AutoProcessor.from_pretrained(self.argument, **common)
        except (OSError, ValueError) as exc:
            raise missing_model_error(self.argument, exc) from exc
        attn = best_attn_implementation(self.options.attn_implementation, device)
        kwargs = dict(common, **{dtype_kwarg(): dtype})
        if device != "cpu" and importlib.util.find_spec("accelerate") is not None:
            # weights go straight to the accelerator instead of through a CPU copy
            kwargs["device_map"] = device
        try:
            model = AutoModelForImageTextToText.from_pretrained(self.argument, attn_implementation=attn, **kwargs)
        except ValueError as exc:
            # some architectures lack sdpa/flash kernels; eager always exists
            if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
                raise missing_model_error(self.argument, exc) from exc
            log.warning("attention implementation %s unavailable for %s (%s); using eager", attn, self.argument, exc)
            model = AutoModelForImageTextToText.from_pretrained(self.argument, attn_implementation="eager", **kwargs)
        except OSError as exc:
            raise missing_model_error(self.argument, exc) from exc
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self._prepare_processor()

    def _prepare_processor(self) -> None:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # decoder-only models continue from the last prompt token: pad on the left
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(self.processor, "chat_template", None) is None and getattr(tokenizer, "chat_template", None) is None:
            raise BackendUnavailable(f"model {self.argument!r} has no chat template; the transformers backend needs one")

    # -- prompts ---------------------------------------------------------------------------------

    def _apply_template(self, messages) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def system_mode(self) -> str:
        """How this model's chat template takes a system prompt: a system turn with a content
        list, a system turn with a plain string, or neither (prepended to the user text)."""
        if self._system_mode is None:
            probe = "SYSTEM-PROBE-7f3a"
            user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}
            self._system_mode = "prepend"
            for mode, content in (("list", [{"type": "text", "text": probe}]), ("string", probe)):
                try:
                    rendered = self._apply_template([{"role": "system", "content": content}, user])
                except Exception:  # templates reject system turns by raising; try the next form
                    continue
                if probe in rendered:
                    self._system_mode = mode
                    break
        return self._system_mode

    def build_prompt(self, request: MllmRequest) -> str:
        """The chat-formatted prompt text (with the model's image placeholder) for one request."""
        system = request.system_prompt.strip()
        user_text = request.user_prompt
        messages = []
        mode = self.system_mode() if system else "none"
        if mode == "list":
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        elif mode == "string":
            messages.append({"role": "system", "content": system})
        elif mode == "prepend":
            user_text = f"{system}\n\n{user_text}"
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]})
        return self._apply_template(messages)

    # -- generation ------------------------------------------------------------------------------

    def generate(self, requests: Sequence[MllmRequest]) -> List[str]:
        """One answer per request, in order; requests with equal generation options share batches."""
        if not requests:
            return []
        self.load()
        answers: List[Optional[str]] = [None] * len(requests)
        groups: Dict[Tuple, List[int]] = {}
        for index, request in enumerate(requests):
            o = request.options
            groups.setdefault((o.max_new_tokens, float(o.temperature), o.seed), []).append(index)
        for indices in groups.values():
            start = 0
            while start < len(indices):
                chunk = indices[start : start + self.max_batch_size]
                for index, text in zip(chunk, self._generate_with_fallback([requests[i] for i in chunk])):
                    answers[index] = text
                start += len(chunk)
        return [a if a is not None else "" for a in answers]

    def _generate_with_fallback(self, batch: List[MllmRequest]) -> List[str]:
        try:
            return self._generate_batch(batch)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(batch) == 1:
                raise
            half = len(batch) // 2
            # remember the smaller size so that later batches do not hit the same wall
            self.max_batch_size = max(1, min(self.max_batch_size, half))
            log.warning("out of memory with a batch of %d; retrying as batches of %d", len(batch), half)
            self._free_cache()
        size = self.max_batch_size
        answers: List[str] = []
        for start in range(0, len(batch), size):
            answers.extend(self._generate_with_fallback(batch[start : start + size]))
        return answers

    def _generate_batch(self, batch: List[MllmRequest]) -> List[str]:
        import torch

        prompts = [self.build_prompt(r) for r in batch]
        images = [scale_image(r.image, self.options.max_image_side) for r in batch]
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)
        options = batch[0].options
        kwargs = dict(self.options.generation_kwargs)
        kwargs["max_new_tokens"] = options.max_new_tokens
        if options.temperature > 0:
            kwargs.update(do_sample=True, temperature=options.temperature)
            if options.seed is not None:
                torch.manual_seed(options.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def _free_cache(self) -> None:
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        self.model = None
        self.processor = None
        self._free_cache()
