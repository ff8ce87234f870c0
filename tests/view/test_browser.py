"""``gbc view`` in a real headless Chromium (Playwright driving the system browser).

Skips with the reason when Playwright or a Chromium binary is missing, or when the shared
reference graphs are absent. Set GBC_VIEW_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from view_graphs import XSS, small_graph

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium browser on this machine (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Server:
    """``gbc view`` started as a user would, on a free port."""

    def __init__(self, src, tmp_path, *args):
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "gbc.cli.main", "view", str(src), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()}")
        self.url = found.group(1)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture()
def page(browser, request):
    # The XSS test turns the page's CSP off: the captions must be inert by themselves.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp="xss" in request.node.name)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    yield pg
    context.close()


def screenshot(page, tmp_path, name):
    out = Path(os.environ.get("GBC_VIEW_SCREENSHOT_DIR") or tmp_path) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    assert out.stat().st_size > 10_000
    return out


def unique_word(records):
    """A caption word that occurs in exactly one graph (and that graph's key)."""
    owners = {}
    counts = Counter()
    for record in records:
        words = set()
        for v in record["vertices"]:
            for d in v["descs"]:
                words |= {w.lower() for w in re.findall(r"[A-Za-z]{7,}", d["text"])}
        counts.update(words)
        for w in words:
            owners[w] = record["img_path"]
    word = sorted(w for w, n in counts.items() if n == 1)[0]
    return word, owners[word]


def test_reference_graphs_in_a_browser(browser, page, reference_dir, tmp_path):
    jsonl = reference_dir / "wiki_gbc_graphs.jsonl"
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    server = Server(jsonl, tmp_path, "--images-root", reference_dir / "images")
    try:
        page.goto(server.url)
        page.wait_for_selector("li.row")
        assert page.locator("li.row").count() == len(records)
        wait_until(lambda: page.locator("li.row img.thumb").first.evaluate("img => img.naturalWidth") > 0)  # a thumbnail

        # keyboard: j moves the cursor, Enter opens the second graph
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_selector("#graph-key")
        assert page.locator("#graph-key").text_content() == records[1]["img_path"]
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#graph-key")).to_have_text(records[0]["img_path"])

        # click a vertex in the graph drawing: its box is highlighted and its captions shown
        horses = records[0]
        horse = next(v for v in horses["vertices"] if v["vertex_id"] == "horse")
        page.wait_for_selector("svg.boxes rect.box[data-vid='horse']")
        page.click("svg.graph g.node[data-vid='horse']")
        assert "selected" in page.get_attribute("svg.boxes rect.box[data-vid='horse']", "class")
        assert "selected" not in page.get_attribute("svg.boxes rect.box[data-vid='snow']", "class")
        shown = page.locator("#details").text_content()
        for d in horse["descs"]:
            assert d["text"] in shown

        # hovering a box highlights the vertex in the drawing too
        page.hover("svg.graph g.node[data-vid='snow']")
        assert "hover" in page.get_attribute("svg.boxes rect.box[data-vid='snow']", "class")
        boxes = [v for v in horses["vertices"] if v["label"] != "image"]
        smallest = min(boxes, key=lambda v: (v["bbox"]["right"] - v["bbox"]["left"]) * (v["bbox"]["bottom"] - v["bbox"]["top"]))
        page.hover(f"svg.boxes rect.box[data-vid={json.dumps(smallest['vertex_id'])}]", force=True)
        assert "hover" in page.get_attribute(f"svg.graph g.node[data-vid={json.dumps(smallest['vertex_id'])}]", "class")

        # follow an edge phrase from the image's captions to the child it names
        page.click("svg.graph g.node[data-vid='']")
        phrase = page.locator("#details a.phrase[data-target='snow']").first
        assert phrase.text_content().lower() == "snow"
        phrase.click()
        assert "selected" in page.get_attribute("svg.boxes rect.box[data-vid='snow']", "class")
        assert page.locator("#details h2").text_content().startswith("snow")
        assert "v=snow" in page.url
        screenshot(page, tmp_path, "graph.png")

        # raw JSON one click away, shown as text
        page.click("#raw-panel summary")
        wait_until(lambda: len(page.locator("#raw-json").text_content()) > 100)
        assert json.loads(page.locator("#raw-json").text_content())["img_path"] == horses["img_path"]

        # search a word found in one graph only, and land on it
        word, owner = unique_word(records)
        page.fill("#quick-q", word)
        page.press("#quick-q", "Enter")
        page.wait_for_selector("#result-count")
        assert page.locator("#rows li.row").count() == 1
        assert "null" not in page.locator("#main").text_content()
        page.click("#rows li.row a")
        expect(page.locator("#graph-key")).to_have_text(owner)
        assert word in page.locator("#details").text_content().lower() or page.locator("svg.boxes rect.box").count() > 0

        page.goto(server.url + "#/stats")
        page.wait_for_selector("img.stats-plot")
        wait_until(lambda: page.locator("img.stats-plot").evaluate("img => img.naturalWidth") > 0, timeout=60)
        screenshot(page, tmp_path, "stats.png")
        assert page.errors == []
    finally:
        server.close()


def test_xss_caption_shows_as_text_and_runs_nothing(browser, page, tmp_path):
    graph = small_graph("x.png", f"A caption {XSS} and a dog.", child="<script>window.__xss=2</script>")
    graph.vertices[0].descs[0].text = 'A caption <img src=x onerror="window.__xss=1"> and a dog.'
    graph.img_path = '"><img src=x onerror="window.__xss=3">.png'
    path = tmp_path / "xss.jsonl"
    path.write_text(json.dumps(graph.to_dict()) + "\n")
    server = Server(path, tmp_path)
    try:
        page.goto(server.url)
        page.wait_for_selector("li.row a")
        page.click("li.row a")
        page.wait_for_selector("#details p.caption")
        text = page.locator("#details").text_content()
        assert '<img src=x onerror="window.__xss=1">' in text
        page.locator("svg.graph g.node").nth(1).click()
        assert page.locator("#details .facts code").text_content() == '"<script>window.__xss=2</script>"'
        page.goto(server.url + "#/find?q=caption")
        page.wait_for_selector("#result-count")
        assert page.evaluate("window.__xss") is None
        assert page.locator("img[src='x']").count() == 0 and page.locator("script:not([src])").count() == 0
        assert page.errors == []
    finally:
        server.close()


def test_warning_when_listening_beyond_loopback(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(small_graph("a.png", "x").to_dict()) + "\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "gbc.cli.main", "view", str(path), "--port", "0", "--host", "0.0.0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert "no authentication" in proc.stderr.readline()
        assert "http://0.0.0.0:" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)


def test_port_in_use_is_one_error_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(small_graph("a.png", "x").to_dict()) + "\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "gbc.cli.main", "view", str(path), "--port", str(port)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_missing_source_is_one_error_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "gbc.cli.main", "view", str(tmp_path / "nope.lmdb")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: no such file or store: {tmp_path / 'nope.lmdb'}"]
