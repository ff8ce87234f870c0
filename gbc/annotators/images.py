"""Finding images on disk and loading them robustly.

Keys are stable: for a folder argument, the path of each image relative to that folder with
POSIX separators (``birds/owl.jpg``); for a file argument, its name. A name that is not valid
UTF-8 gets its readable, reversible escaped form (``bad\\xffutf8.jpg``, see ``gbc.store.keys``).
Loading never returns a half-usable image: it either gives an RGB picture with the EXIF rotation
applied or raises ``ImageLoadError`` with a reason that the engine records as the image's failure.

>>> from PIL import Image
>>> import tempfile, os
>>> d = tempfile.mkdtemp(); Image.new("RGB", (4, 3)).save(os.path.join(d, "a.png"))
>>> [s.key for s in discover_images([d])]
['a.png']
>>> load_image(os.path.join(d, "a.png")).size
(4, 3)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Tuple, Union

from gbc.errors import GbcError
from gbc.schemas import geometry

# Discovery lives with the other inputs; re-exported here for the engine and its callers.
from gbc.inputs.folders import IMAGE_EXTENSIONS, discover_images  # noqa: F401
from gbc.inputs.items import ImageSource  # noqa: F401

#: Default refusal limit for decoded pixels (width x height), guarding against decompression bombs.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970


class ImageLoadError(GbcError, ValueError):
    """The file is not an image that can be annotated; ``reason`` says why."""

    def __init__(self, reason: str, error_type: str = "ImageLoadError"):
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


def load_image(path: Union[str, os.PathLike, bytes], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """Decode ``path`` (a file, or the image's bytes) into an RGB ``PIL.Image`` (first frame,
    EXIF rotation applied).

    Transparent images are composed over white; 16-bit, CMYK, palette and grayscale images are
    converted. Raises ``ImageLoadError`` for empty, truncated, unreadable or oversized files.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(path, (bytes, bytearray, memoryview)):
        import io

        size = len(path)
        opened = io.BytesIO(path)
    else:
        opened = path = os.fspath(path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise ImageLoadError(*describe_open_error(exc)) from None
    if size == 0:
        raise ImageLoadError("empty file (0 bytes)", "EmptyFile")
    try:
        with Image.open(opened) as im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageLoadError(f"image has no pixels ({width}x{height})", "EmptyImage")
            if width * height > max_pixels:
                raise ImageLoadError(
                    f"image too large: {width}x{height} = {width * height} pixels exceeds the limit "
                    f"of {max_pixels} (limits.max_image_pixels)",
                    "ImageTooLarge",
                )
            im.seek(0)  # animated files: the first frame
            im.load()
            # In place: the usual upright image is then used as decoded, without the full
            # copy that exif_transpose makes when there is nothing to turn.
            ImageOps.exif_transpose(im, in_place=True)
            return _to_rgb(im)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("not an image file (format not recognised)", "NotAnImage") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image too large: {exc}", "ImageTooLarge") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports truncated or corrupt data as OSError/SyntaxError/EOFError
        raise ImageLoadError(f"corrupt or truncated image: {exc}", "CorruptImage") from None


#: Why a file cannot be opened, by errno: (reason, error type). Others: "cannot read file".
_OPEN_ERRORS = {
    errno.ENOENT: ("file not found (deleted, or a broken symbolic link)", "FileNotFound"),
    errno.ELOOP: ("symbolic link loop (the link points back to itself)", "SymlinkLoop"),
    errno.EACCES: ("permission denied", "PermissionDenied"),
    errno.EPERM: ("permission denied", "PermissionDenied"),
    errno.ENAMETOOLONG: ("file name too long", "NameTooLong"),
}


def describe_open_error(exc: OSError) -> Tuple[str, str]:
    """``(reason, error type)`` of a file that cannot be opened (missing, a symbolic link loop, ...)."""
    known = _OPEN_ERRORS.get(exc.errno)
    if known is not None:
        return known
    return f"cannot read file: {exc.strerror or exc}", "UnreadableFile"


def _to_rgb(im):
    from PIL import Image

    if im.mode == "RGB":
        return im.copy() if im.readonly else im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # scale 16/32-bit samples to 8 bits instead of clipping everything above 255 to white
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8"), mode="L")
    if im.mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = Image.fromarray(((arr - lo) * scale).astype("uint8"), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return im.convert("RGB")


def _fit_scale(width: int, height: int, max_side: int, min_side: int) -> float:
    if max(width, height) > max_side:
        return max_side / max(width, height)
    if min(width, height) < min_side:
        return min(min_side / min(width, height), max_side / max(width, height))
    return 1.0


def fit_size(width: int, height: int, max_side: int, min_side: int = 1) -> Tuple[int, int]:
    """The size ``scale_to_fit`` gives an image of ``width`` x ``height``."""
    scale = _fit_scale(width, height, max_side, min_side)
    if abs(scale - 1.0) < 1e-9:
        return (width, height)
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def scale_to_fit(image, max_side: int, min_side: int = 1):
    """Scale ``image`` so its longest side is at most ``max_side`` and, when possible, its
    shortest side at least ``min_side`` (tiny crops are enlarged; the longest-side cap wins)."""
    from PIL import Image

    scale = _fit_scale(*image.size, max_side, min_side)
    if abs(scale - 1.0) < 1e-9:
        return image
    new = fit_size(*image.size, max_side, min_side)
    return image.resize(new, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


def crop_region(image, box: Tuple[float, float, float, float]):
    """Crop ``image`` to ``box`` (left, top, right, bottom relative to the image), at least 1 px."""
    return image.crop(geometry.to_pixels(box, *image.size))


_ALLOCATOR_TUNED: list = []


def keep_freed_memory(keep_mb: int) -> bool:
    """Ask glibc's allocator to keep up to ``keep_mb`` MB of freed memory for reuse.

    Decoded images and crops are buffers of 0.1 to 4 MB that live for a few milliseconds.
    With glibc's defaults most of them are mapped fresh from the system and given back when
    freed, so every page is faulted in (and zeroed) again for the next one, which costs more
    CPU than cutting the crop itself. Setting ``M_TRIM_THRESHOLD`` to ``keep_mb`` and
    ``M_MMAP_THRESHOLD`` to a quarter of it makes such buffers come from the heap and be
    reused. The setting is process-wide, applied once (the first call wins), and bounded:
    at most about ``keep_mb`` of free memory stays with each allocator arena. Returns whether
    it was applied (``False`` for ``keep_mb == 0``, other C libraries, or when already applied).
    """
    if keep_mb <= 0 or _ALLOCATOR_TUNED:
        return False
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    keep = int(keep_mb) * 1024 * 1024
    # mallopt returns 1 on success; glibc caps the mmap threshold at 32 MB (64-bit)
    ok = bool(mallopt(m_trim_threshold, keep)) and bool(mallopt(m_mmap_threshold, min(keep // 4, 32 * 1024 * 1024)))
    _ALLOCATOR_TUNED.append(keep_mb)
    return ok
