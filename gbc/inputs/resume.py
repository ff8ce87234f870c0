"""Resuming against a store: per image, one status lookup (no set of all keys in memory)."""

from __future__ import annotations

from typing import Optional


class StoreResume:
    """``skip(key, origin)`` for ``InputStream``, asking ``store`` (anything with ``status(key)``
    returning a record with ``status`` and ``origin``, or None).

    Without ``retry_failed``: an image with a status is finished and passed over, unless it
    was recorded from another origin (input and position) than this one: then this is a
    second image under the same key, left out as a duplicate (its graph would replace the
    first one's). With ``retry_failed``: only images that failed are annotated again.
    """

    def __init__(self, store, retry_failed: bool = False):
        self.store = store
        self.retry_failed = retry_failed

    def __call__(self, key: str, origin: Optional[str]) -> Optional[str]:
        record = self.store.status(key)
        if record is None:
            return "not failed before" if self.retry_failed else None
        recorded = getattr(record, "origin", None)
        if origin and recorded and recorded != origin:
            return f"duplicate key {key!r}: at {origin}, already taken from {recorded}; left out"
        if self.retry_failed and record.status == "failed":
            return None
        return "finished"
