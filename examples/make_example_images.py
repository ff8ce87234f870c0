"""Regenerate the tiny demo images in ``examples/images`` (simple drawn scenes, a few KB each)."""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent / "images"


def scene(sky, ground, items, size=(192, 144)):
    img = Image.new("RGB", size, sky)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((0, int(h * 0.6), w, h), fill=ground)
    for shape, box, colour in items:
        xy = tuple(int(v * (w if i % 2 == 0 else h)) for i, v in enumerate(box))
        (draw.ellipse if shape == "ellipse" else draw.rectangle)(xy, fill=colour)
    return img


def main() -> None:
    HERE.mkdir(exist_ok=True)
    scene((120, 170, 230), (90, 160, 70), [
        ("rect", (0.10, 0.35, 0.35, 0.70), (150, 80, 60)),
        ("ellipse", (0.60, 0.30, 0.72, 0.62), (30, 110, 40)),
        ("ellipse", (0.78, 0.28, 0.92, 0.62), (30, 110, 40)),
    ]).save(HERE / "house_and_trees.png")
    scene((20, 20, 50), (40, 40, 40), [
        ("ellipse", (0.75, 0.08, 0.88, 0.25), (240, 240, 200)),
        ("rect", (0.15, 0.65, 0.40, 0.80), (200, 30, 30)),
        ("rect", (0.55, 0.66, 0.80, 0.82), (30, 30, 200)),
    ]).save(HERE / "night_street.png")
    scene((235, 225, 200), (170, 120, 80), [
        ("rect", (0.20, 0.45, 0.80, 0.60), (120, 70, 40)),
        ("ellipse", (0.30, 0.35, 0.40, 0.45), (250, 250, 250)),
        ("ellipse", (0.55, 0.35, 0.65, 0.45), (250, 250, 250)),
    ]).save(HERE / "table_with_cups.png")
    (HERE / "garden").mkdir(exist_ok=True)
    scene((150, 200, 240), (60, 170, 60), [
        ("ellipse", (0.10, 0.60, 0.20, 0.75), (230, 60, 120)),
        ("ellipse", (0.30, 0.62, 0.40, 0.77), (240, 200, 40)),
        ("rect", (0.60, 0.40, 0.85, 0.70), (130, 90, 50)),
    ]).save(HERE / "garden" / "flowers.png")


if __name__ == "__main__":
    main()
