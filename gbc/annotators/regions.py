"""Image pixels on demand: an image is decoded when a backend first needs its pixels, once,
at the resolution the run needs; a query names a region of it and a wanted size.

The engine opens each image with :func:`open_image` (the file header only: format, size,
orientation, the limits) and hands backends :class:`Region` objects: (image, box, wanted
size, optional drawing). Backends that answer from records or rules (``replay``,
``scripted``) never cut or scale pixels; model backends call :meth:`Region.pixels` (through
``scale_image``) and get the crop cut and scaled in one step, at the size they need.

Decoding happens at most once per image in a homogeneous run. Images whose longest side
exceeds ``max_decoded_side`` are held at a reduced size: JPEGs are decoded at 1/2, 1/4 or
1/8 scale by the decoder itself (draft mode, much less work and memory), other formats are
decoded and then reduced by an integer factor. The held image keeps its longest side at
least ``max_decoded_side``, so regions of a third of the image or more keep full detail
when the run scales to 1024 px. :meth:`Region.preview` serves rule-based backends that
only look at colours: it uses whatever is decoded, or decodes at the smallest scale.

>>> from PIL import Image
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.jpg"); Image.new("RGB", (400, 200), "red").save(path)
>>> handle = open_image(path)
>>> region = Region(handle, (0.5, 0.0, 1.0, 1.0), max_side=100, min_side=1)
>>> region.size, handle.decodes
((100, 100), 0)
>>> region.pixels().size, handle.decodes
((100, 100), 1)
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional, Tuple, Union

from gbc.schemas import geometry
from gbc.annotators.images import DEFAULT_MAX_IMAGE_PIXELS, ImageLoadError, _to_rgb, describe_open_error, fit_size

Box = Tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)

#: Default longest side kept when decoding a larger image (``limits.max_decoded_side``).
DEFAULT_MAX_DECODED_SIDE = 3072

_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees


def _transpose_methods() -> dict:
    from PIL import Image

    t = Image.Transpose
    return {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
            6: t.ROTATE_270, 7: t.TRANSVERSE, 8: t.ROTATE_90}


class _Lazy(dict):
    def get(self, key, default=None):
        if not self:
            self.update(_transpose_methods())
        return super().get(key, default)


#: EXIF orientation -> the transpose that makes the image upright (as ``ImageOps.exif_transpose``)
_TRANSPOSE = _Lazy()


class ImageHandle:
    """One image file: its size and orientation from the header; pixels decoded on demand.

    ``size`` is the upright size at full resolution (what graphs record). ``decode_pixels``
    is the number of pixels a full decode at the chosen scale holds at once: what the pixel
    budget of the engine charges for this image.
    """

    def __init__(self, path: Union[str, bytes], size: Tuple[int, int], fmt: str, max_decoded_side: int,
                 orientation: int = 1):
        self.path = path  # a file, or the image's bytes (tar members, downloads)
        self.orientation = orientation  # EXIF orientation read with the header (1: upright)
        self.size = size
        self.format = fmt
        self.max_decoded_side = max_decoded_side
        self.decodes = 0  # how many times the file was decoded (tests and benchmarks)
        self._lock = threading.Lock()
        self._decoded = None  # (PIL image, scale in (0, 1])
        self._whole: dict = {}  # wanted size -> the whole image scaled to it (shared by queries)
        width, height = size
        longest = max(width, height)
        self.held_scale = 1.0 if not max_decoded_side or longest <= max_decoded_side else max_decoded_side / longest
        # a JPEG decodes straight to the reduced size; other formats hold the full size while decoding
        peak = self.held_scale if fmt == "JPEG" else 1.0
        self.decode_pixels = max(1, int(width * peak + 0.999)) * max(1, int(height * peak + 0.999))

    # ------------------------------------------------------------------ decoding
    def decoded(self, scale: Optional[float] = None):
        """``(image, (sx, sy))``: the decoded RGB image and its scale to ``size`` per axis
        (reductions round sizes up, so the two may differ slightly).

        ``scale`` is the least scale wanted (``None``: the held scale); an image already
        decoded at that scale or more is reused, otherwise the file is decoded again.
        """
        want = self.held_scale if scale is None else min(max(scale, 1e-6), self.held_scale)
        with self._lock:
            current = self._decoded
            if current is not None and min(current[1]) >= want - 1e-9:
                return current
            image, got = self._decode(want)
            self._decoded = (image, got)
            self._whole.clear()
            self.decodes += 1
            return self._decoded

    def _decode(self, scale: float):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(_readable(self.path)) as im:
                raw_w, raw_h = im.size
                if im.format == "JPEG" and scale < 1.0:
                    # the decoder picks the largest 1/2^k reduction that stays at or above this size
                    im.draft("RGB", (max(1, int(raw_w * scale + 0.999)), max(1, int(raw_h * scale + 0.999))))
                im.seek(0)
                im.load()
                image = _to_rgb(im)
            # the orientation of the header, so that the size matches the one given out before
            method = _TRANSPOSE.get(self.orientation)
            if method is not None:
                image = image.transpose(method)
        except UnidentifiedImageError:
            raise ImageLoadError("not an image file (format not recognised)", "NotAnImage") from None
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"image too large: {exc}", "ImageTooLarge") from None
        except ImageLoadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageLoadError(f"corrupt or truncated image: {exc}", "CorruptImage") from None
        got = min(image.size[0] / self.size[0], image.size[1] / self.size[1])
        factor = int(got / scale + 1e-9) if scale < 1.0 else 1
        if factor >= 2:  # formats without reduced decoding: an integer box reduction
            image = image.reduce(factor)
        return image, (image.size[0] / self.size[0], image.size[1] / self.size[1])

    def whole(self, wanted: Tuple[int, int]):
        """The whole image at ``wanted`` size, made once and shared (callers must not draw on it)."""
        cached = self._whole.get(wanted)
        if cached is not None:
            return cached
        image, _ = self.decoded()
        if image.size != wanted:
            image = _resample(image, wanted, (0.0, 0.0) + image.size)
        self._whole[wanted] = image
        return image

    def release(self) -> None:
        """Drop the decoded pixels (the handle can still decode again if asked)."""
        with self._lock:
            self._decoded = None
            self._whole = {}


def _readable(path: Union[str, bytes]):
    """What ``Image.open`` reads: the file, or the bytes held in memory."""
    if isinstance(path, bytes):
        import io

        return io.BytesIO(path)
    return path


def open_image(path: Union[str, os.PathLike, bytes], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               max_decoded_side: int = DEFAULT_MAX_DECODED_SIDE) -> ImageHandle:
    """Read the header of ``path`` (a file, or the image's bytes): size, format, orientation and
    the limits; no pixels.

    Raises ``ImageLoadError`` (with the same reasons as ``load_image``) for missing, empty,
    unrecognised or oversized files; damage in the pixel data shows when pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, (bytearray, memoryview)):
        path = bytes(path)
    if isinstance(path, bytes):
        size = len(path)
    else:
        path = os.fspath(path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise ImageLoadError(*describe_open_error(exc)) from None
    if size == 0:
        raise ImageLoadError("empty file (0 bytes)", "EmptyFile")
    try:
        with Image.open(_readable(path)) as im:
            width, height = im.size
            fmt = im.format or ""
            if width < 1 or height < 1:
                raise ImageLoadError(f"image has no pixels ({width}x{height})", "EmptyImage")
            if width * height > max_pixels:
                raise ImageLoadError(
                    f"image too large: {width}x{height} = {width * height} pixels exceeds the limit "
                    f"of {max_pixels} (limits.max_image_pixels)",
                    "ImageTooLarge",
                )
            # A PNG's EXIF can follow the pixel data, and reading it there decodes the whole
            # image: only an eXIf chunk before the pixels counts (read with the header).
            has_exif = fmt != "PNG" or "exif" in im.info
            orientation = im.getexif().get(0x0112) if has_exif else None
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("not an image file (format not recognised)", "NotAnImage") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image too large: {exc}", "ImageTooLarge") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"corrupt or truncated image: {exc}", "CorruptImage") from None
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageHandle(path, (width, height), fmt, max_decoded_side, orientation or 1)


def pixel_box(size: Tuple[int, int], box: Box) -> Tuple[int, int, int, int]:
    """``crop_region``'s pixel box of relative ``box`` in an image of ``size`` (at least 1 px)."""
    return geometry.to_pixels(box, size[0], size[1])


def _resample(image, wanted: Tuple[int, int], box):
    from PIL import Image

    width, height = image.size  # scaled coordinates may overshoot the edge by a rounding error
    box = (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))
    upscale = wanted[0] > (box[2] - box[0])
    return image.resize(wanted, Image.Resampling.BICUBIC if upscale else Image.Resampling.LANCZOS, box=box)


class Region:
    """A region of an image as a model should see it: ``box`` (relative, left/top/right/bottom)
    scaled so its longest side is at most ``max_side`` and, when possible, its shortest side at
    least ``min_side``; ``draw(image, owned)`` is applied to the pixels once they are made.

    ``size`` is known without decoding. Pixels are made by :meth:`pixels` only.
    """

    __slots__ = ("handle", "box", "max_side", "min_side", "draw", "_pixel_box", "size", "_made")

    def __init__(self, handle: ImageHandle, box: Box, max_side: int, min_side: int = 1,
                 draw: Optional[Callable[[Any, bool], Any]] = None):
        self.handle = handle
        self.box = tuple(float(v) for v in box)
        self.max_side = max_side
        self.min_side = min_side
        self.draw = draw
        whole = self.box == FULL
        self._pixel_box = (0, 0) + tuple(handle.size) if whole else pixel_box(handle.size, self.box)
        left, top, right, bottom = self._pixel_box
        self.size = fit_size(right - left, bottom - top, max_side, 1 if whole else min_side)
        self._made = None

    def __getattr__(self, name: str):
        # Backends written for plain PIL images (``request.image.convert(...)``, ``.mode``,
        # ``numpy.asarray(request.image)``) get the region's pixels, made once on first use.
        if name.startswith("__") and name != "__array_interface__":
            raise AttributeError(name)
        if self._made is None:
            self._made = self.pixels()
        return getattr(self._made, name)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def pixels(self, max_side: Optional[int] = None):
        """The region as an RGB ``PIL.Image`` (a new image the caller owns, drawing applied);
        ``max_side`` asks for a smaller longest side than the region's own (a backend that
        would scale it down anyway gets it cut and scaled once)."""
        wanted = self.size
        if max_side and max(wanted) > max_side:
            wanted = fit_size(wanted[0], wanted[1], max_side)
        if self.box == FULL:
            image = self.handle.whole(wanted)
            if self.draw is not None:
                return self.draw(image.copy(), True)
            return image.copy()
        image, (sx, sy) = self.handle.decoded()
        left, top, right, bottom = self._pixel_box
        if sx == sy == 1.0 and (right - left, bottom - top) == wanted:
            out = image.crop(self._pixel_box)
        else:
            out = _resample(image, wanted, (left * sx, top * sy, right * sx, bottom * sy))
        return self.draw(out, True) if self.draw is not None else out

    def preview(self, size: Tuple[int, int] = (8, 8)):
        """A small picture of the region (no drawing) for backends that only look at colours:
        made from whatever is decoded, or from a decode at the smallest scale."""
        from PIL import Image

        width, height = self.handle.size
        least = min(1.0, 4 * max(size) / max(width, height))
        image, (sx, sy) = self.handle.decoded(least if self.handle._decoded is None else 1e-6)
        left, top, right, bottom = self._pixel_box
        w, h = image.size
        box = (min(left * sx, w - 1e-3), min(top * sy, h - 1e-3), min(right * sx, w), min(bottom * sy, h))
        box = box[:2] + (max(box[2], box[0] + 1e-3), max(box[3], box[1] + 1e-3))
        return image.resize(size, Image.Resampling.BICUBIC, box=box)


def region_pixels(image: Any, max_side: Optional[int] = None):
    """Pixels of a request's ``image``: a :class:`Region` is cut and scaled (to ``max_side`` at
    most), a ``PIL.Image`` is returned as it is."""
    if isinstance(image, Region):
        return image.pixels(max_side)
    return image


class PixelBudget:
    """Bounds the decoded pixels of the images in flight (``limits.pixels_in_flight``).

    ``acquire(n)`` waits until ``n`` more pixels fit, except that an image larger than the
    whole budget is let in when nothing else is in flight (it is annotated alone rather than
    never); ``stop()`` wakes every waiter for good.
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._stopped = False

    def acquire(self, n: int) -> bool:
        """Reserve ``n`` pixels; False when the budget was stopped while waiting."""
        with self._cond:
            while not self._stopped and self.used > 0 and self.used + n > self.limit:
                self._cond.wait()
            if self._stopped:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
