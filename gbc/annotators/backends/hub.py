"""Can a Hugging Face hub model be loaded? Found out in seconds, before transformers tries.

Without network, the hub client retries every file of a model that is not cached for
minutes, with a log line per retry, before transformers reports it missing. So before
loading a hub id (not a local folder), the backends ask here first:

- hub reachable (any HTTP answer from ``HF_ENDPOINT`` within ``HUB_PROBE_TIMEOUT_S``):
  load as usual (downloads allowed);
- hub not reachable (or ``HF_HUB_OFFLINE=1``) but the model is in the local cache: load from
  the cache only (``local_files_only``), with no network attempt and no retries;
- neither: ``BackendUnavailable`` at once, naming the model and how to fetch it.

Only ``huggingface_hub`` and the standard library are imported here (not torch or
transformers), so the CLI can check its default models before any heavy import.
The hub client's retry warnings are hidden unless ``GBC_VERBOSE`` is set (``--verbose``).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from typing import Dict, Optional

from gbc.annotators.backends.base import BackendUnavailable

#: Seconds the reachability probe of the hub waits for an answer.
HUB_PROBE_TIMEOUT_S = 3.0
#: Environment variable that lets the hub client's retry warnings through.
VERBOSE_ENV = "GBC_VERBOSE"
#: The hub client's per-retry warnings (the final error is still raised).
_RETRY_LOG_MARKERS = ("Retrying in", "thrown while requesting", "Rate limited. Waiting")


def is_local_model(argument: str) -> bool:
    """True when ``argument`` names a folder rather than a hub id."""
    return os.path.isabs(argument) or argument.startswith((".", "~")) or os.path.exists(argument)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_cached(repo_id: str, revision: Optional[str] = None) -> bool:
    """True when the model's ``config.json`` is in the local hub cache (``HF_HOME``/``HF_HUB_CACHE``)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # not a valid repo id: certainly not cached
        return False
    return isinstance(found, str)


def hub_unreachable_reason(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> Optional[str]:
    """None when the hub answers; otherwise why it cannot be used (offline mode, refused, timed out)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # any HTTP status: the server is there
    except urllib.error.URLError as exc:
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed endpoint
        return str(exc) or type(exc).__name__


def missing_model_error(argument: str, why: str) -> BackendUnavailable:
    """One clear error for a model that is neither a loadable folder, cached nor downloadable."""
    if is_local_model(argument):
        return BackendUnavailable(f"model folder {argument!r} cannot be loaded: {why}")
    return BackendUnavailable(
        f"model {argument!r} is not in the Hugging Face cache and could not be downloaded ({why}). "
        f"Fetch it first with `hf download {argument}` (then run with HF_HUB_OFFLINE=1 if offline), "
        f"or give the path of a local folder saved with save_pretrained."
    )


def hub_load_options(argument: str, revision: Optional[str] = None) -> Dict[str, bool]:
    """Extra ``from_pretrained`` keyword arguments for loading ``argument`` now.

    ``{}`` for a folder or when the hub answers; ``{"local_files_only": True}`` when the hub
    cannot be reached but the model is cached; raises ``BackendUnavailable`` at once when the
    model can come from neither (instead of minutes of retries).
    """
    quiet_hub_retries()
    if is_local_model(argument):
        return {}
    reason = hub_unreachable_reason()
    if reason is None:
        return {}
    if is_cached(argument, revision):
        return {"local_files_only": True}
    raise missing_model_error(argument, f"the hub at {hub_endpoint()} cannot be reached: {reason}")


class _HideRetries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get(VERBOSE_ENV):
            return True
        message = record.getMessage()
        return not any(marker in message for marker in _RETRY_LOG_MARKERS)


_FILTER = _HideRetries()


def quiet_hub_retries() -> None:
    """Hide the hub client's per-retry warnings (idempotent; ``GBC_VERBOSE`` shows them)."""
    # A logger's filter sees only the records logged on that logger: name those that retry.
    for name in ("huggingface_hub.utils._http", "huggingface_hub.hf_api", "huggingface_hub.file_download"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
