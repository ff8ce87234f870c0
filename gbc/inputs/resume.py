"""Resuming against a store: status lookups per batch of images (no set of all keys in memory)."""

from __future__ import annotations

from typing import List, Optional, Sequence

#: The origin a store records for graphs imported rather than annotated.
IMPORTED = "imported"


class StoreResume:
    """``skip`` for ``InputStream``: asks ``store`` whether each image needs annotating.

    ``store`` needs ``status(key)`` (a record with ``status`` and ``origin``, or None); a store
    with ``status_origins(keys)`` (``GraphStore``) is asked a whole batch in one transaction.

    Without ``retry_failed``: an image with a status is finished and passed over, unless it
    was recorded from another origin (input and position) than this one: then this is a
    second image under the same key, left out as a duplicate (its graph would replace the
    first one's). With ``retry_failed``: only images that failed are annotated again.
    """

    def __init__(self, store, retry_failed: bool = False):
        self.store = store
        self.retry_failed = retry_failed

    def __call__(self, key: str, origin: Optional[str]) -> Optional[str]:
        return self.many([key], [origin])[0]

    def many(self, keys: Sequence[str], origins: Sequence[Optional[str]]) -> List[Optional[str]]:
        """One answer per key: None to annotate, else why not (``"duplicate ..."`` for a duplicate)."""
        lookup = getattr(self.store, "status_origins", None)
        if lookup is not None:
            found = lookup(keys)
        else:
            found = []
            for key in keys:
                record = self.store.status(key)
                found.append(None if record is None else (record.status, getattr(record, "origin", None)))
        return [self._decide(k, o, f) for k, o, f in zip(keys, origins, found)]

    def _decide(self, key: str, origin: Optional[str], found) -> Optional[str]:
        if found is None:
            return "not failed before" if self.retry_failed else None
        status, recorded = found
        # a graph imported into the store (origin "imported") is finished, not a second image
        if origin and recorded and recorded not in (origin, IMPORTED):
            return f"duplicate key {key!r}: at {origin}, already taken from {recorded}; left out"
        if self.retry_failed and status == "failed":
            return None
        return "finished"
