"""The default backends, for a run whose config names none: which models, and whether they can be had.

LLaVA-1.6 (Mistral-7B) on CUDA, a small LLaVA-OneVision on CPU, Grounding DINO tiny for
detection. :func:`check_default_models` says in seconds (before torch is even imported) that a
default model is neither cached nor downloadable, instead of letting the hub client retry for
minutes; :func:`default_specs` names the models for the backends not given.
"""

from __future__ import annotations

import os
from typing import Dict

from gbc.errors import GbcError

__all__ = ["ModelsExtraMissing", "check_default_models", "default_specs"]


class ModelsExtraMissing(GbcError, ImportError):
    """The default model backends need torch and transformers, which are not installed."""


def default_specs(config) -> Dict[str, str]:
    """Overrides (``mllm.spec``, ``detector.spec``) naming the default model of each backend that
    ``config`` leaves unset; ``ModelsExtraMissing`` when the models extra is not installed."""
    try:
        from gbc.annotators.backends.hf_detectors import default_detector_spec
        from gbc.annotators.backends.hf_mllm import default_mllm_spec

        overrides = {}
        if not config.mllm.spec:
            overrides["mllm.spec"] = default_mllm_spec(config.mllm.options.get("device"))
        if not config.detector.spec:
            overrides["detector.spec"] = default_detector_spec()
    except ImportError as exc:
        raise ModelsExtraMissing(
            f"no --mllm/--detector given, and the default model backends need torch and transformers "
            f"({exc.name} is missing): pip install 'gbc[models]', or pass --mllm SPEC --detector SPEC "
            "(for a demo without models: --mllm scripted --detector scripted)"
        ) from None
    return overrides


def check_default_models(config) -> None:
    """Without network, raise ``BackendUnavailable`` at once when a default model that ``config``
    would use is neither in the Hugging Face cache nor downloadable."""
    from gbc.annotators.backends import hf_detectors, hf_mllm, hub
    from gbc.annotators.backends.base import BackendUnavailable

    try:
        import huggingface_hub  # noqa: F401  (without it, the models extra is missing: default_specs says so)
    except ImportError:
        return
    needed = []  # (model to name, models any of which will do)
    if not config.mllm.spec:
        device = str(config.mllm.options.get("device") or "auto")
        cuda = device.startswith("cuda") or (device == "auto" and os.path.exists("/proc/driver/nvidia/version"))
        either = [hf_mllm.DEFAULT_CUDA_MLLM, hf_mllm.DEFAULT_CPU_MLLM] if device == "auto" else []
        needed.append((hf_mllm.DEFAULT_CUDA_MLLM if cuda else hf_mllm.DEFAULT_CPU_MLLM, either))
    if not config.detector.spec:
        needed.append((hf_detectors.DEFAULT_DETECTOR, []))
    missing = [name for name, either in needed if not any(hub.is_cached(m) for m in either or [name])]
    if not missing:
        return
    reason = hub.hub_unreachable_reason()
    if reason is None:
        return  # downloadable
    fetch = " and ".join(f"`hf download {name}`" for name in missing)
    raise BackendUnavailable(
        f"no --mllm/--detector given, and the default model{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(m) for m in missing)} {'are' if len(missing) > 1 else 'is'} not in the Hugging Face cache "
        f"and the hub at {hub.hub_endpoint()} cannot be reached ({reason}): fetch "
        f"{'them' if len(missing) > 1 else 'it'} first with {fetch} (then run with HF_HUB_OFFLINE=1 if offline), "
        "or pass --mllm SPEC --detector SPEC (a demo without models: --mllm scripted --detector scripted)")
