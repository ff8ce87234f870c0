"""Pixels on demand: regions cut and scaled only when a backend asks, one decode per image,
reduced decoding of large images, and the pixel budget of the images in flight."""

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine_fakes import MemoryStore, TableDetector, TableMllm

from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import ImageLoadError, crop_region, load_image, scale_to_fit
from gbc.annotators.regions import ImageHandle, PixelBudget, Region, open_image, region_pixels
from test_engine import SCENE_BOXES, make_images, scene_answers

REPO = Path(__file__).resolve().parents[2]


def _gradient(size):
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.broadcast_to((x + y) / 2, (h, w, 1))], axis=2)
    return Image.fromarray(arr.astype(np.uint8))


def test_region_size_is_known_without_decoding_and_matches_the_pixels(tmp_path):
    path = tmp_path / "a.png"
    _gradient((600, 300)).save(path)
    handle = open_image(path)
    cases = [((0, 0, 1, 1), 512, 1), ((0.1, 0.2, 0.3, 0.25), 512, 100),
             ((0.5, 0.5, 1.0, 1.0), 1024, 128), ((0.999, 0.999, 1, 1), 256, 64)]
    regions = [Region(handle, box, max_side, min_side) for box, max_side, min_side in cases]
    assert handle.decodes == 0
    full = load_image(path)
    for region, (box, max_side, min_side) in zip(regions, cases):
        expected = scale_to_fit(full if box == (0, 0, 1, 1) else crop_region(full, box), max_side, min_side)
        pixels = region.pixels()
        assert region.size == pixels.size == expected.size
        # same picture as cropping then scaling (edges may differ by the filter's reach)
        diff = np.abs(np.asarray(pixels, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
        assert np.median(diff) <= 2
    assert handle.decodes == 1  # every region above came from one decode


def test_backend_asks_for_a_smaller_size_and_gets_it_cut_and_scaled_once(tmp_path):
    from gbc.annotators.backends.hf_mllm import scale_image

    path = tmp_path / "a.png"
    _gradient((800, 400)).save(path)
    region = Region(open_image(path), (0.0, 0.0, 0.5, 1.0), 1024, 1)
    assert region.size == (400, 400)
    assert scale_image(region, 100).size == (100, 100)
    assert region_pixels(region, 200).size == (200, 200)
    plain = Image.new("RGB", (10, 10))
    assert region_pixels(plain) is plain


def test_a_backend_written_for_pil_images_gets_the_pixels(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(path)
    handle = open_image(path)
    region = Region(handle, (0.0, 0.0, 0.5, 1.0), 1024, 1)
    assert handle.decodes == 0
    assert region.mode == "RGB" and region.convert("L").size == (100, 100)
    assert np.asarray(region).shape == (100, 100, 3) and handle.decodes == 1
    assert region.getpixel((0, 0)) == (10, 20, 30)


def test_drawing_is_applied_to_the_pixels_only(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (100, 100), (0, 0, 0)).save(path)
    handle = open_image(path)
    calls = []

    def draw(image, owned):
        calls.append(owned)
        image.putpixel((0, 0), (255, 0, 0))
        return image

    region = Region(handle, (0, 0, 1, 1), 1024, 1, draw=draw)
    assert calls == [] and handle.decodes == 0
    assert region.pixels().getpixel((0, 0)) == (255, 0, 0)
    # the whole image is shared by every whole-image query: the drawing went on a copy
    assert Region(handle, (0, 0, 1, 1), 1024, 1).pixels().getpixel((0, 0)) == (0, 0, 0)
    assert region.preview((4, 4)).getpixel((0, 0)) == (0, 0, 0)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    path = tmp_path / "big.jpg"
    _gradient((4000, 2000)).save(path, quality=90)
    handle = open_image(path, max_decoded_side=1000)
    assert handle.size == (4000, 2000)
    image, (sx, sy) = handle.decoded()
    # draft mode: the decoder itself reduces by 1/2^k, keeping the longest side >= 1000
    assert image.size == (1000, 500) and sx == sy == 0.25
    assert handle.decode_pixels == 1000 * 500  # what the budget charges
    region = Region(handle, (0.0, 0.0, 0.5, 0.5), 1024, 1)
    assert region.size == (1024, 512) and region.pixels().size == (1024, 512)
    # 0 keeps the full size
    assert open_image(path, max_decoded_side=0).decoded()[0].size == (4000, 2000)


def test_large_png_is_held_reduced_but_charged_its_full_decode(tmp_path):
    path = tmp_path / "big.png"
    _gradient((3000, 1500)).save(path)
    handle = open_image(path, max_decoded_side=1000)
    assert handle.decode_pixels == 3000 * 1500  # a PNG decodes at full size first
    image, _ = handle.decoded()
    assert image.size == (1000, 500)  # then reduced by an integer factor, keeping the longest side >= 1000


def test_exif_rotation_is_known_from_the_header(tmp_path):
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # turned by 90 degrees
    _gradient((40, 20)).save(path, exif=exif)
    handle = open_image(path)
    assert handle.size == (20, 40) == load_image(path).size
    assert handle.decodes == 0
    assert Region(handle, (0, 0, 1, 1), 1024, 1).pixels().size == (20, 40)


def test_header_problems_are_found_when_opening_and_damage_when_decoding(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageLoadError) as err:
        open_image(tmp_path / "empty.png")
    assert err.value.error_type == "EmptyFile"
    with pytest.raises(ImageLoadError) as err:
        open_image(tmp_path / "text.jpg")
    assert err.value.error_type == "NotAnImage"
    buf = io.BytesIO()
    _gradient((512, 512)).save(buf, "JPEG")  # cut in the middle of the pixel data
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    handle = open_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError) as err:
        Region(handle, (0, 0, 1, 1), 1024, 1).pixels()
    assert err.value.error_type == "CorruptImage"


def _counting_opens(monkeypatch):
    counts = []
    original = ImageHandle._decode

    def counting(self, scale):
        counts.append(self.path)
        return original(self, scale)

    monkeypatch.setattr(ImageHandle, "_decode", counting)
    return counts


def test_backends_that_do_not_look_at_pixels_never_decode(tmp_path, monkeypatch):
    decodes = _counting_opens(monkeypatch)
    images = make_images(tmp_path / "imgs", 3)
    sizes = []

    def answer(request):
        sizes.append(request.image.size)  # known from the header
        return scene_answers(request)

    store = MemoryStore()
    summary = RecursiveAnnotator(AnnotateConfig(), TableMllm(answer), TableDetector(SCENE_BOXES)).run(images, store)
    assert summary.done == 3 and len(sizes) > 3
    assert decodes == []


def test_scripted_backends_decode_each_image_once(tmp_path, monkeypatch):
    decodes = _counting_opens(monkeypatch)
    images = make_images(tmp_path / "imgs", 4)
    store = MemoryStore()
    summary = RecursiveAnnotator(AnnotateConfig(), create_mllm("scripted"), create_detector("scripted")).run(images, store)
    assert summary.done == 4 and summary.backends["mllm"]["requests"] > 4 * 3
    assert sorted(decodes) == sorted(s.path for s in images)


def test_pixel_budget_waits_and_lets_a_huge_image_in_alone():
    budget = PixelBudget(100)
    assert budget.acquire(60)
    got = []
    waiter = threading.Thread(target=lambda: got.append(budget.acquire(60)))
    waiter.start()
    time.sleep(0.05)
    assert got == []  # 120 > 100: waits
    budget.release(60)
    waiter.join(2)
    assert got == [True] and budget.used == 60
    budget.release(60)
    assert budget.acquire(500)  # larger than the budget, nothing else in flight: in alone
    stopped = []
    waiter = threading.Thread(target=lambda: stopped.append(budget.acquire(1)))
    waiter.start()
    budget.stop()
    waiter.join(2)
    assert stopped == [False]


def test_pixel_budget_bounds_the_images_in_flight(tmp_path):
    images = make_images(tmp_path / "imgs", 6, size=(320, 240))
    seen = []

    def answer(request):
        seen.append(request.image_key)
        return scene_answers(request)

    mllm = TableMllm(answer, max_batch_size=32)
    det = TableDetector(SCENE_BOXES, max_batch_size=32)
    # room for two 320 x 240 images, although twenty could be in flight by count
    config = AnnotateConfig().with_overrides({"limits.pixels_in_flight": 2 * 320 * 240,
                                              "limits.images_in_flight": 20})
    annotator = RecursiveAnnotator(config, mllm, det)
    summary = annotator.run(images, MemoryStore())
    assert summary.done == 6
    assert max(len({r.image_key for r in call}) for call in mllm.calls) <= 2
    assert annotator.pixel_budget.peak <= 2 * 320 * 240 and annotator.pixel_budget.used == 0


def test_budget_setting_does_not_change_the_fingerprint():
    base = AnnotateConfig()
    assert base.with_overrides({"limits.pixels_in_flight": 5}).fingerprint() == base.fingerprint()
    assert base.with_overrides({"limits.max_decoded_side": 1000}).fingerprint() != base.fingerprint()


_PEAK_CHILD = """
import json, sys
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import discover_images
sys.path.insert(0, sys.argv[3])
from engine_fakes import MemoryStore


def high_water_mb():
    # VmHWM starts afresh at exec (ru_maxrss would include the parent's memory at fork)
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) / 1024


config = AnnotateConfig().with_overrides(json.loads(sys.argv[2]))
annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
images = discover_images([sys.argv[1]])
before = high_water_mb()
summary = annotator.run(images, MemoryStore())
print(json.dumps({"done": summary.done, "before_mb": before, "peak_mb": high_water_mb()}))
"""


def _peak_run(folder, overrides):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(folder), json.dumps(overrides),
                           str(Path(__file__).parent)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS read from /proc (Linux)")
def test_huge_images_are_bounded_by_the_pixel_budget(tmp_path):
    # Six 3000 x 3000 PNGs, 26 MB each once decoded, all six in flight by count. The pixel
    # budget lets one in at a time and the held copy is reduced to 1000 px: the run's memory
    # grows by about one decode, not by six images (as when every image was decoded up front).
    folder = tmp_path / "huge"
    folder.mkdir()
    side = 3000
    for i in range(6):
        Image.new("RGB", (side, side), (40 * i, 200 - 30 * i, 90)).save(folder / f"h{i}.png", compress_level=1)
    per_image_mb = side * side * 3 / 2 ** 20
    run = _peak_run(folder, {"limits.images_in_flight": 6, "limits.max_decoded_side": 1000,
                             "limits.pixels_in_flight": side * side})
    assert run["done"] == 6
    assert run["peak_mb"] - run["before_mb"] < 2.5 * per_image_mb, run
