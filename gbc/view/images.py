"""Images for the viewer, served only from inside the source's image roots.

A graph's ``img_path`` is untrusted (graph files come from anywhere): it is looked up under each
root (as recorded, then by its base name), and the file found must resolve (symlinks followed)
to a regular file inside that root's real path. Anything else is "not found". The path is never
URL-decoded: ``%2e%2e`` stays a file name.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Tuple

#: Longest side of a thumbnail in the list, in pixels.
THUMB_SIDE = 160
#: Thumbnails kept in memory (a few KB each).
THUMB_CACHE = 512
#: Formats a browser shows as they are; others are re-encoded as PNG.
WEB_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
             ".webp": "image/webp", ".bmp": "image/bmp"}


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:
        return False


def resolve_image(img_path: Optional[str], roots: Sequence[Path]) -> Optional[Path]:
    """The real path of the image ``img_path`` under one of ``roots``, or None.

    Relative paths are joined to each root; an absolute path counts only when it already lies
    inside a root. The base name is tried next (graphs often record paths of the machine that
    made them). ``..`` parts are refused outright rather than normalised away.
    """
    if not img_path or "\x00" in img_path:
        return None
    recorded = PurePosixPath(img_path.replace("\\", "/"))
    if ".." in recorded.parts:
        return None
    for root in roots:
        try:
            real_root = Path(root).resolve(strict=True)
        except OSError:
            continue
        candidates = []
        if recorded.is_absolute():
            candidates.append(Path(str(recorded)))
        else:
            candidates.append(real_root / Path(*recorded.parts) if recorded.parts else real_root)
        if recorded.name:
            candidates.append(real_root / recorded.name)
        for candidate in candidates:
            try:
                real = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if real.is_file() and _inside(real, real_root):
                return real
    return None


def image_response_body(path: Path) -> Tuple[bytes, str]:
    """``(bytes, media type)`` of the image file, re-encoded as PNG when browsers cannot show it."""
    media = WEB_TYPES.get(path.suffix.lower())
    if media is not None:
        return path.read_bytes(), media
    from PIL import Image

    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue(), "image/png"


class ThumbnailCache:
    """JPEG thumbnails of image files, the most recently used kept in memory."""

    def __init__(self, size: int = THUMB_CACHE, side: int = THUMB_SIDE):
        self.size = size
        self.side = side
        self._items: "OrderedDict[Tuple[str, int], bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        stamp = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if stamp in self._items:
                self._items.move_to_end(stamp)
                return self._items[stamp]
        data = self._make(path)
        with self._lock:
            self._items[stamp] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data

    def _make(self, path: Path) -> bytes:
        from PIL import Image

        with Image.open(path) as im:
            # JPEG: let the decoder skip the detail a thumbnail throws away.
            im.draft("RGB", (self.side * 2, self.side * 2))
            im = im.convert("RGB")
            im.thumbnail((self.side, self.side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
        return buf.getvalue()


def image_roots(explicit: Optional[Path], remembered: List[Path], source_path: Path) -> List[Path]:
    """Where images are looked for: ``--images-root``, else the folders the store remembers,
    else the folder holding the source."""
    if explicit is not None:
        return [Path(explicit)]
    if remembered:
        return list(remembered)
    source_path = Path(source_path)
    return [source_path.parent if source_path.is_file() else source_path.resolve().parent]
