"""Finding a graph's image and turning it into the bytes a training sample holds."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from gbc.schemas import GbcGraph
from gbc.store.keys import name_from_key

#: JPEG quality of re-encoded images and crops.
DEFAULT_JPEG_QUALITY = 95


Roots = Union[None, str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass
class ImageLookup:
    """Where a graph's image was found. ``path`` is the file to read (``None``: missing or
    refused); ``refused`` is a file that exists but lies outside the images roots and was
    therefore not read."""

    path: Optional[Path] = None
    refused: Optional[Path] = None


def _root_list(roots: Roots) -> List[Path]:
    if roots is None:
        return []
    if isinstance(roots, (str, os.PathLike)):
        return [Path(roots)]
    return [Path(r) for r in roots]


def is_inside_roots(path: os.PathLike, roots: Roots) -> bool:
    """True when ``path``, with every symlink and ``..`` resolved, lies inside one of ``roots``
    (themselves resolved). An empty list of roots contains nothing."""
    real = os.path.realpath(path)
    for root in _root_list(roots):
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False


def locate_image(img_path: Optional[str], roots: Roots = None, allow_outside: bool = False,
                 recorded_roots: Sequence[os.PathLike] = ()) -> ImageLookup:
    """Find the file of a recorded ``img_path``, reading only inside the images ``roots``.

    With roots, each root is tried at ``root/img_path``, then at
    ``root/<base name of img_path>`` (graphs made elsewhere record that machine's paths).
    A candidate that resolves outside every root (``..`` components, an absolute path,
    a symlink pointing elsewhere) is not read: it is reported as ``refused`` when no candidate
    inside the roots exists, unless ``allow_outside``. Without roots ``img_path`` is read as
    recorded (relative to the working directory), else looked for the same way under each of
    ``recorded_roots`` (the input folders a store recorded when it was annotated), which then
    are the roots.
    """
    found = _locate(img_path, roots, allow_outside, recorded_roots)
    original = name_from_key(img_path) if img_path and found.path is None else None
    if original is not None:  # an escaped key of a file name that is not UTF-8: the name itself
        by_name = _locate(original, roots, allow_outside, recorded_roots)
        if by_name.path is not None or found.refused is None:
            return by_name
    return found


def _locate(img_path: Optional[str], roots: Roots, allow_outside: bool,
            recorded_roots: Sequence[os.PathLike]) -> ImageLookup:
    if not img_path:
        return ImageLookup()
    recorded = Path(img_path)
    root_list = _root_list(roots)
    if not root_list:
        if recorded.is_file():
            return ImageLookup(recorded)
        root_list = _root_list(list(recorded_roots))
        if not root_list:
            return ImageLookup()
    refused: Optional[Path] = None
    for root in root_list:
        # root / an absolute path is that path: the containment check decides.
        for candidate in (root / recorded, root / recorded.name):
            if not candidate.is_file():
                continue
            if allow_outside or is_inside_roots(candidate, root_list):
                return ImageLookup(candidate)
            refused = refused or candidate
    return ImageLookup(None, refused)


def find_image(graph: GbcGraph, images_root: Roots = None, recorded_roots: Sequence[os.PathLike] = (),
               allow_outside: bool = False) -> Optional[Path]:
    """The local file of ``graph``'s image, or ``None`` when it has none (URL-only), it is
    missing, or it lies outside the images roots (see ``locate_image``)."""
    return locate_image(graph.img_path, images_root, allow_outside, recorded_roots).path


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
    byte for byte. The source is decoded at most once when ``crops`` says whether crops will
    be asked for. Crops (``bbox`` in relative xyxy) and images larger than ``max_side`` are
    re-encoded as JPEG (``quality``).
    """

    def __init__(self, path: Path, max_side: Optional[int] = None, quality: int = DEFAULT_JPEG_QUALITY,
                 crops: bool = False):
        """``crops``: crops will be asked for too; a whole image that must be resized is then
        made from the same full decode as the crops (one decode per image) rather than from a
        reduced-size decode of its own."""
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.path = Path(path)
        self.max_side = max_side
        self.quality = quality
        self.crops = crops
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
                elif fmt == "JPEG" and self._image is None and not self.crops:
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
