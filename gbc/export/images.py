"""Finding a graph's image and turning it into the bytes a training sample holds."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from gbc.schemas import GbcGraph

#: JPEG quality of re-encoded images and crops.
DEFAULT_JPEG_QUALITY = 95


def find_image(graph: GbcGraph, images_root: Optional[os.PathLike] = None,
               recorded_roots: Sequence[os.PathLike] = ()) -> Optional[Path]:
    """The local file of ``graph``'s image, or ``None`` when it has none (URL-only) or it is missing.

    With ``images_root`` the image is looked for at ``images_root/img_path``, then at
    ``images_root/<basename of img_path>`` (the reference graphs record paths of the machine
    that made them). Without it, at ``img_path`` itself, then the same way under each of
    ``recorded_roots`` (the input folders a store recorded when it was annotated).
    """
    if not graph.img_path:
        return None
    recorded = Path(graph.img_path)
    if images_root is None:
        if recorded.is_file():
            return recorded
        roots = recorded_roots
    else:
        roots = [images_root]
    for root in roots:
        for candidate in (Path(root) / recorded, Path(root) / recorded.name):
            if candidate.is_file():
                return candidate
    return None


@dataclass
class EncodedImage:
    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    copied: bool = False  # the bytes are the source file itself


class ImageEncoder:
    """Makes the JPEG bytes of a sample from one source image, opened at most once.

    Whole-image samples reuse one encoding; a JPEG source that needs no resizing is copied
    byte for byte. Crops (``bbox`` in relative xyxy) and images larger than ``max_side`` are
    re-encoded as JPEG (``quality``).
    """

    def __init__(self, path: Path, max_side: Optional[int] = None, quality: int = DEFAULT_JPEG_QUALITY):
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.path = Path(path)
        self.max_side = max_side
        self.quality = quality
        self._image = None
        self._whole: Optional[EncodedImage] = None

    def _open(self):
        if self._image is None:
            from PIL import Image

            with Image.open(self.path) as im:
                im.load()
                self._image = im.convert("RGB") if im.mode != "RGB" else im.copy()
        return self._image

    def _encode(self, image, original: Tuple[int, int]) -> EncodedImage:
        if self.max_side is not None and max(image.size) > self.max_side:
            from PIL import Image

            image = image.copy()
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=self.quality)
        return EncodedImage(buf.getvalue(), image.width, image.height, *original)

    def whole(self) -> EncodedImage:
        if self._whole is None:
            from PIL import Image

            with Image.open(self.path) as probe:
                size, fmt = probe.size, probe.format
                fits = self.max_side is None or max(size) <= self.max_side
                if fmt == "JPEG" and fits:
                    self._whole = EncodedImage(self.path.read_bytes(), size[0], size[1], size[0], size[1], copied=True)
                elif fmt == "JPEG" and self._image is None:
                    # Let the JPEG decoder skip detail the resize throws away (2-8x faster).
                    scale = self.max_side / max(size)
                    probe.draft("RGB", (max(1, int(size[0] * scale)), max(1, int(size[1] * scale))))
                    probe.load()
                    image = probe.convert("RGB") if probe.mode != "RGB" else probe
                    self._whole = self._encode(image, size)
            if self._whole is None:
                image = self._open()
                self._whole = self._encode(image, image.size)
        return self._whole

    def crop(self, bbox: Optional[Tuple[float, float, float, float]]) -> EncodedImage:
        """The sample bytes for a region (``None``: the whole image)."""
        if bbox is None:
            return self.whole()
        from gbc.schemas import Bbox

        image = self._open()
        box = Bbox.from_xyxy(bbox).to_pixels(*image.size)
        return self._encode(image.crop(box), image.size)
