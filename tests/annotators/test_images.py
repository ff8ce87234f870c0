"""Discovery and robust loading of images: every odd file either loads as RGB or fails with a reason."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from gbc.annotators.images import ImageLoadError, crop_region, discover_images, load_image, scale_to_fit


def _save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


def test_discover_sorted_relative_keys_case_insensitive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c").mkdir()
    for rel in ["z.PNG", "a.jpg", "b/x.JpEg", "b/c/y.webp", "b/notes.txt", ".hidden.png", "g.GIF", "m.bmp", "t.tiff", "u.TIF"]:
        (tmp_path / rel).write_bytes(b"x")
    keys = [s.key for s in discover_images([tmp_path])]
    assert keys == sorted(["z.PNG", "a.jpg", "b/x.JpEg", "b/c/y.webp", "g.GIF", "m.bmp", "t.tiff", "u.TIF"])
    # a file given directly is keyed by its name
    direct = discover_images([tmp_path / "b" / "x.JpEg"])
    assert [(s.key, s.path) for s in direct] == [("x.JpEg", str(tmp_path / "b" / "x.JpEg"))]


def test_discover_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover_images([tmp_path / "missing"])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(b"x")
    (tmp_path / "two" / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="same image key"):
        discover_images([tmp_path / "one", tmp_path / "two"])
    # the same file twice is fine
    assert len(discover_images([tmp_path / "one", tmp_path / "one" / "a.png"])) == 1


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def _exif_rotated(path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(path, exif=exif)
    return str(path)


def _animated(path):
    frames = [Image.new("P", (8, 6), i) for i in (1, 2, 3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return str(path)


def _palette_transparent(path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    return str(path)


def _truncated(path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    return str(path)


GOOD = [
    ("cmyk.jpg", lambda p: _save(Image.new("CMYK", (12, 9), (0, 255, 0, 0)), p), (12, 9)),
    ("gray16.png", lambda p: _save(Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)), p), (7, 5)),
    ("palette_alpha.png", _palette_transparent, (10, 10)),
    ("gray.png", lambda p: _save(Image.new("L", (6, 4), 128), p), (6, 4)),
    ("one.png", lambda p: _save(Image.new("RGB", (1, 1), (1, 2, 3)), p), (1, 1)),
    ("anim.gif", _animated, (8, 6)),
    ("rotated.jpg", _exif_rotated, (20, 40)),
    ("rgba.webp", lambda p: _save(Image.new("RGBA", (9, 9), (0, 0, 255, 0)), p), (9, 9)),
    ("bw.bmp", lambda p: _save(Image.new("1", (5, 5), 1), p), (5, 5)),
    ("plain.tiff", lambda p: _save(Image.new("RGB", (3, 2)), p), (3, 2)),
]


@pytest.mark.parametrize("name,make,size", GOOD, ids=[g[0] for g in GOOD])
def test_loads_as_rgb(tmp_path, name, make, size):
    path = make(tmp_path / name)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == size


def test_pixel_conversions(tmp_path):
    # 16-bit samples are scaled, not clipped to white
    g16 = load_image(_save(Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16)), tmp_path / "g.png"))
    assert 120 <= g16.getpixel((0, 0))[0] <= 135
    # transparency is composed over white
    assert load_image(_palette_transparent(tmp_path / "p.png")).getpixel((0, 0)) == (255, 255, 255)
    # CMYK is converted to RGB colours
    assert load_image(_save(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), tmp_path / "c.jpg")).getpixel((0, 0))[0] > 200


BAD = [
    ("empty.png", lambda p: _write(p, b""), "EmptyFile"),
    ("text.jpg", lambda p: _write(p, b"this is not an image"), "NotAnImage"),
    ("truncated.jpg", _truncated, "CorruptImage"),
]


@pytest.mark.parametrize("name,make,error_type", BAD, ids=[b[0] for b in BAD])
def test_bad_files_fail_with_reason(tmp_path, name, make, error_type):
    path = make(tmp_path / name)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.error_type == error_type
    assert info.value.reason


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(Image.new("L", (200, 100)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="too large") as info:
        load_image(path, max_pixels=10_000)
    assert info.value.error_type == "ImageTooLarge"
    assert load_image(path, max_pixels=20_000).size == (200, 100)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError):
        load_image(os.path.join(tmp_path, "nope.png"))


@pytest.mark.parametrize(
    "size,max_side,min_side,expected",
    [((2000, 1000), 1024, 1, (1024, 512)), ((100, 50), 1024, 128, (256, 128)), ((1000, 10), 1024, 128, (1024, 10)),
     ((300, 300), 1024, 128, (300, 300))],
)
def test_scale_to_fit(size, max_side, min_side, expected):
    assert scale_to_fit(Image.new("RGB", size), max_side, min_side).size == expected


def test_crop_region_never_empty():
    img = Image.new("RGB", (100, 50))
    assert crop_region(img, (0.2, 0.2, 0.6, 1.0)).size == (40, 40)
    assert crop_region(img, (0.999, 0.999, 0.999, 0.999)).size == (1, 1)


def test_upright_jpeg_is_loaded_as_decoded(tmp_path):
    # the image is used as decoded (no copy): same pixels as PIL's own decoding
    path = tmp_path / "plain.jpg"
    arr = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    with Image.open(path) as ref:
        ref.load()
        expected = ref.tobytes()
    got = load_image(str(path))
    assert got.mode == "RGB" and got.size == (40, 30) and got.tobytes() == expected
    got.putpixel((0, 0), (1, 2, 3))  # writable


def test_keep_freed_memory_is_applied_once():
    from gbc.annotators import images

    assert images.keep_freed_memory(0) is False  # 0: allocator left alone
    images.keep_freed_memory(32)  # True on glibc, False elsewhere
    assert images.keep_freed_memory(32) is False  # already applied: the first call wins
