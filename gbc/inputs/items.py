"""What an input yields: one image to annotate, with where it came from and what came with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from gbc.errors import GbcError


class InputError(GbcError, ValueError):
    """A run-level problem with the inputs themselves (unknown kind, list without its URL column, ...)."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs several times more to create (millions are)
class ImageSource:
    """An image to annotate.

    ``key`` names it in the store. ``path`` says where it is read from: a file path, a URL,
    or ``shard.tar#member`` for a tar member. ``data`` holds its bytes when they were already
    read (tar members, downloads); otherwise the engine reads ``path``. ``error`` (with
    ``error_type``) says why the image could not be obtained at all (HTTP 404, timeout, a
    sample without an image, ...): the engine records it as the image's failure. ``url`` and
    ``caption`` come with the input (a list's URL, a sample's alt-text) and end up in the
    graph as ``img_url`` and ``original_caption``. ``origin`` names the input and position
    the image was taken from (``00003.tar:17``, ``urls.parquet:1234``): it is recorded with
    the image's status so that a later run tells a resumed image from a duplicate key.
    """

    key: str
    path: str
    data: Optional[bytes] = None
    error: Optional[str] = None
    error_type: Optional[str] = None
    url: Optional[str] = None
    caption: Optional[str] = None
    origin: Optional[str] = None

    def __repr__(self) -> str:  # the bytes are no use in a repr
        size = "" if self.data is None else f", {len(self.data)} bytes"
        return f"ImageSource(key={self.key!r}, path={self.path!r}{size})"
