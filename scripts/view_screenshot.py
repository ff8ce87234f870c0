"""Make the README's picture of ``gbc view``: the example images annotated with the scripted
backends, one graph opened with a vertex selected, captured by headless Chromium.

    python scripts/view_screenshot.py docs/gbc-view.png

Needs the ``view`` extra, playwright and a Chromium binary (``apt-get install chromium``).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "house_and_trees.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(out: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "demo.lmdb"
        subprocess.run([sys.executable, "-m", "gbc.cli.main", "annotate", str(REPO / "examples/images"), "-o", str(store),
                        "--mllm", "scripted", "--detector", "scripted"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        server = subprocess.Popen([sys.executable, "-m", "gbc.cli.main", "view", str(store), "--port", "0",
                                   "--images-root", str(REPO / "examples/images")],
                                  stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 640})
                page.goto(url + "#/graph/" + urllib.parse.quote(KEY, safe=""))
                page.wait_for_selector("svg.boxes rect.box")
                node = page.locator("svg.graph g.node-image").first
                node.click()
                page.mouse.move(0, 0)
                page.wait_for_timeout(300)
                png = page.screenshot()
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "gbc-view.png")
