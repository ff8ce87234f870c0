"""The viewer's JSON API through the ASGI test client: paging, search, filters, images, safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from gbc.schemas.synthetic import synthetic_graph
from gbc.store import GraphStore
from gbc.view import indexing
from gbc.view.app import create_app
from gbc.view.catalog import fts_query
from view_graphs import ODD_KEYS, XSS, small_graph


def make_world(tmp_path):
    """A store with odd keys, a failed image, an XSS caption, scores, and images (some outside the root)."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "good.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, images / "link.png")
    (images / "%2e%2e").mkdir()
    store_path = tmp_path / "run.lmdb"
    with GraphStore(store_path, readonly=False) as store:
        for i, key in enumerate(ODD_KEYS):
            store.commit_image(key, small_graph("good.png", f"A picture number {i} with a dog.", clip=0.1 * (i + 1)))
        store.commit_image("xss.jpg", small_graph("good.png", f"A caption {XSS} and a dog.", child="ca<b>t"))
        store.commit_image("zebra.jpg", small_graph("good.png", "A striped zebra grazing on the savanna."))
        store.commit_image("comp.jpg", synthetic_graph(3))
        store.commit_image("up.jpg", small_graph("../secret.png", "Escaping upwards."))
        store.commit_image("abs.jpg", small_graph(str(outside), "Escaping by absolute path."))
        store.commit_image("sym.jpg", small_graph("link.png", "Escaping by a symbolic link."))
        store.commit_image("enc.jpg", small_graph("%2e%2e/secret.png", "Escaping encoded."))
        store.mark_failed("broken.jpg", "image file is truncated", error_type="ImageDecodeError")
    return {"store": store_path, "images": images, "tmp": tmp_path}


def open_client(world):
    app = create_app(world["store"], images_root=world["images"], catalog_path=world["tmp"] / "cat.sqlite", background=False,
                     stats_plot=False)
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared by the tests that only read (the viewer writes nothing to it: test_read_only checks)."""
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def client(world):
    with open_client(world) as c:
        yield c


@pytest.fixture()
def own_world(tmp_path):
    """A world of its own, for tests that change the store."""
    return make_world(tmp_path)


def all_keys(store_path):
    with GraphStore(store_path) as s:
        return sorted(set(s.keys()) | {k for k, _ in s.statuses()})


# ---------------------------------------------------------------------------- paging
def test_paging_walks_every_key_once_both_ways_without_listing_the_store(world, client, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the list must page by cursor, not list the store")

    monkeypatch.setattr(GraphStore, "keys", refuse)
    monkeypatch.setattr(GraphStore, "items", refuse)
    seen, after = [], None
    while True:
        body = client.get("/api/list", params={"limit": 3, **({"after": after} if after else {})}).json()
        seen += [item["key"] for item in body["items"]]
        if not body["has_next"]:
            break
        after = body["items"][-1]["key"]
    monkeypatch.undo()
    assert seen == all_keys(world["store"])
    back, before = [], seen[-1]
    back.insert(0, before)
    while True:
        body = client.get("/api/list", params={"limit": 4, "before": before}).json()
        back[:0] = [item["key"] for item in body["items"]]
        if not body["has_previous"]:
            break
        before = body["items"][0]["key"]
    assert back == seen


def test_failed_image_is_listed_with_its_reason(client):
    body = client.get("/api/list", params={"limit": 200}).json()
    failed = [item for item in body["items"] if item["status"] == "failed"]
    assert failed == [{"key": "broken.jpg", "status": "failed", "reason": "image file is truncated",
                       "error_type": "ImageDecodeError", "n_vertices": None, "n_captions": None}]
    graph = client.get("/api/graph", params={"key": "broken.jpg"}).json()
    assert graph["graph"] is None and graph["entry"]["reason"] == "image file is truncated"


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_open_with_their_neighbours(client, world, key):
    response = client.get("/api/graph", params={"key": key})
    assert response.status_code == 200
    body = response.json()
    keys = all_keys(world["store"])
    i = keys.index(key)
    assert body["entry"]["key"] == key
    assert body["prev"] == (keys[i - 1] if i else None)
    assert body["next"] == (keys[i + 1] if i + 1 < len(keys) else None)
    assert [v["id"] for v in body["graph"]["vertices"]] == ["", "dog"]
    assert client.get("/api/image", params={"key": key}).status_code == 200


def test_unknown_key_is_404(client):
    assert client.get("/api/graph", params={"key": "nope.jpg"}).status_code == 404
    assert client.get("/api/raw", params={"key": "nope.jpg"}).status_code == 404
    assert client.get("/api/graph").status_code == 404


def test_graph_payload_links_edge_phrases_to_children(client):
    body = client.get("/api/graph", params={"key": "zebra.jpg"}).json()
    root = body["graph"]["vertices"][0]
    assert root["descs"][0]["segments"] == [{"text": "A striped zebra grazing on the savanna."}]
    body = client.get("/api/graph", params={"key": "with space.jpg"}).json()
    root = body["graph"]["vertices"][0]
    linked = [s for s in root["descs"][0]["segments"] if "target" in s]
    assert linked == [{"text": "dog", "target": "dog"}]
    assert "".join(s["text"] for s in root["descs"][0]["segments"]) == "A picture number 0 with a dog."
    assert root["descs"][0]["clip"] == {"clip": 0.1}
    assert body["graph"]["vertices"][1]["confidence"] == 0.8 and body["graph"]["vertices"][1]["depth"] == 1


def test_composition_members_listed(client):
    body = client.get("/api/graph", params={"key": "comp.jpg"}).json()
    comps = [v for v in body["graph"]["vertices"] if v["label"] == "composition"]
    rels = [v for v in body["graph"]["vertices"] if v["label"] == "relation"]
    assert comps and all(len(v["members"]) == 3 for v in comps)
    assert rels and all(v["members"] == sorted(v["id"][1:-1].split("|")) for v in rels)


# ---------------------------------------------------------------------------- search
def search(client, **params):
    response = client.get("/api/search", params=params)
    assert response.status_code == 200
    return response.json()


def test_search_words_phrase_prefix_and_key(client):
    assert [i["key"] for i in search(client, q="zebra")["items"]] == ["zebra.jpg"]
    assert [i["key"] for i in search(client, q='"striped zebra"')["items"]] == ["zebra.jpg"]
    assert search(client, q='"zebra striped"')["items"] == []
    assert [i["key"] for i in search(client, q="savan*")["items"]] == ["zebra.jpg"]
    assert [i["key"] for i in search(client, q="escaping symbolic")["items"]] == ["sym.jpg"]
    assert [i["key"] for i in search(client, q="hash")["items"]] == ["hash#tag.jpg"]  # key words
    assert search(client, q="what?.jpg")["exact"] == "what?.jpg"
    assert search(client, q="picture")["count"] == 5


def test_search_results_carry_a_snippet_of_the_matching_caption(client):
    item = search(client, q="grazing zebra")["items"][0]
    assert item["snippet"]["vertex"] == "" and item["snippet"]["label"] == "short"
    assert item["snippet"]["segments"] == [{"text": "A striped "}, {"text": "zebra", "hit": True}, {"text": " "},
                                           {"text": "grazing", "hit": True}, {"text": " on the savanna."}]
    detail = search(client, q="brown", caption_label="detail")["items"][0]["snippet"]
    assert detail["label"] == "detail" and detail["vertex"] == "dog"


def test_search_pages_through_matches(client):
    first = search(client, q="picture", limit=3)
    assert len(first["items"]) == 3 and first["has_next"] and not first["has_previous"]
    second = search(client, q="picture", limit=3, after=first["items"][-1]["id"])
    assert len(second["items"]) == 2 and not second["has_next"] and second["has_previous"]
    back = search(client, q="picture", limit=3, before=second["items"][0]["id"])
    assert [i["key"] for i in back["items"]] == [i["key"] for i in first["items"]]


def test_filters(client):
    assert [i["key"] for i in search(client, status="failed")["items"]] == ["broken.jpg"]
    assert [i["key"] for i in search(client, vertex_label="composition")["items"]] == ["comp.jpg"]
    assert [i["key"] for i in search(client, caption_label="hardcode")["items"]] == ["comp.jpg"]
    # a caption label restricts the words to captions of that label
    assert search(client, q="brown", caption_label="short")["items"] == []
    assert search(client, q="brown", caption_label="detail")["count"] == 11
    scored = search(client, clip_min="0.25", clip_max="0.45")
    assert sorted(i["key"] for i in scored["items"]) == sorted(ODD_KEYS[2:4])
    assert search(client, q="dog", status="failed")["items"] == []


@pytest.mark.parametrize("q", ['dog" OR "zebra', "zebra NOT dog", "'; DROP TABLE graphs; --", "NEAR(", "*", '"', "{short}: dog",
                               "dog)) OR ((1"])
def test_search_text_is_never_syntax(client, q):
    body = search(client, q=q)
    assert isinstance(body["items"], list)
    assert search(client, q="zebra")["count"] == 1  # the catalog is intact


def test_filter_values_outside_their_lists_are_ignored(client):
    everything = search(client)["count"]
    assert search(client, status="done' OR 1=1 --")["count"] == everything
    assert search(client, vertex_label="x); DROP TABLE graphs")["count"] == everything
    assert search(client, clip_min="nan")["count"] == everything


def test_fts_query_quotes_every_word():
    assert fts_query('red "big dog" ca*') == '"red" "big dog" "ca" *'
    assert fts_query('say "hi') == '"say" "hi"'
    assert fts_query("-- ; ()") == ""


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("key", ["up.jpg", "abs.jpg", "sym.jpg", "enc.jpg", "broken.jpg", "missing.jpg"])
def test_images_outside_the_root_are_404(client, key):
    assert client.get("/api/image", params={"key": key}).status_code == 404
    assert client.get("/api/image", params={"key": key, "thumb": "1"}).status_code == 404


def test_thumbnail_and_image(client):
    full = client.get("/api/image", params={"key": "zebra.jpg"})
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    thumb = client.get("/api/image", params={"key": "zebra.jpg", "thumb": "1"})
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/%2e%2e%2fapp.py",
                                  "/static/..%2fcatalog.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd"])
def test_static_traversal_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"import" not in response.content and b"root:" not in response.content


def test_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and b'<script src="/static/app.js"' in page.content
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# ---------------------------------------------------------------------------- safety
def test_xss_payloads_come_back_escaped(client):
    raw = client.get("/api/graph", params={"key": "xss.jpg"})
    assert b"<img" not in raw.content and b"<b>" not in raw.content
    assert raw.headers["content-type"].startswith("application/json")
    body = raw.json()
    texts = "".join(s["text"] for s in body["graph"]["vertices"][0]["descs"][0]["segments"])
    assert XSS in texts and body["graph"]["vertices"][1]["id"] == "ca<b>t"
    for path in ("/api/raw", "/api/search"):
        response = client.get(path, params={"key": "xss.jpg", "q": "caption"})
        assert response.status_code == 200 and b"<" not in response.content


def test_csp_forbids_inline_script(client):
    for path in ("/", "/api/info", "/static/app.js"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_static_page_has_no_inline_script_or_remote_resource():
    static = Path(__file__).resolve().parents[2] / "gbc" / "view" / "static"
    html = (static / "index.html").read_text()
    assert "<script>" not in html and "onclick" not in html and "http" not in html.replace("http-equiv", "")
    script = (static / "app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_read_only(client, world, method):
    with GraphStore(world["store"]) as s:
        before = s.last_txn
    for path in ("/", "/api/list", "/api/graph", "/api/raw", "/api/provenance", "/api/image", "/api/search",
                 "/api/stats", "/api/info", "/static/app.js"):
        response = getattr(client, method)(path, params={"key": "zebra.jpg"})
        assert response.status_code == 405, (method, path)
    with GraphStore(world["store"]) as s:
        assert s.last_txn == before and "zebra.jpg" in s


def test_other_hosts_are_refused(client):
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/info", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/info", headers={"host": "[::2]:8000"}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host


def test_stats(client):
    body = client.get("/api/stats").json()
    assert body["stats"]["graphs"] == 12 and body["stats"]["failed"] == 1


def test_provenance(own_world, tmp_path):
    with GraphStore(own_world["store"], readonly=False) as s:
        s.commit_image("prov.jpg", small_graph("good.png", "x"), provenance={"answers": [XSS]})
    app = create_app(own_world["store"], catalog_path=tmp_path / "c.sqlite", background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        body = c.get("/api/provenance", params={"key": "prov.jpg"})
        assert body.json()["provenance"] == {"answers": [XSS]} and b"<img" not in body.content


# ---------------------------------------------------------------------------- the catalog follows the store
def test_index_is_rebuilt_when_the_store_changes(own_world, monkeypatch):
    monkeypatch.setattr(indexing, "CHECK_INTERVAL", 0.0)
    world = own_world
    with open_client(world) as client:
        check_rebuild(world, client)


def check_rebuild(world, client):
    assert search(client, q="giraffe")["items"] == []
    # another process writes (as an annotation run would while the page is open)
    graph_json = small_graph("good.png", "A tall giraffe.").to_json().decode()
    code = ("import sys; from gbc.store import GraphStore; from gbc.schemas import GbcGraph\n"
            "with GraphStore(sys.argv[1], readonly=False) as s: s.commit_image('giraffe.jpg', GbcGraph.from_json(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(world["store"]), graph_json], check=True)
    assert [i["key"] for i in search(client, q="giraffe")["items"]] == ["giraffe.jpg"]
    assert client.get("/api/stats").json()["stats"]["graphs"] == 13


def test_catalog_beside_the_store_by_default_with_a_stats_plot(own_world):
    world = own_world
    app = create_app(world["store"], background=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/search", params={"q": "zebra"}).json()["count"] == 1
        assert c.get("/api/stats").json()["plot"] is True
        plot = c.get("/api/stats.png")
        assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert (world["tmp"] / "run.lmdb.view.sqlite").is_file()
    assert not any(p.name.endswith(".sqlite") for p in world["store"].iterdir())


# ---------------------------------------------------------------------------- graph files
def test_graph_file_source(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "g.jsonl"
    graphs = [small_graph("a.png", "One cat."), small_graph("b.png", "Two owls."), small_graph("a.png", "Again a.")]
    path.write_text("".join(json.dumps(g.to_dict()) + "\n" for g in graphs))
    app = create_app(path, background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        keys = [i["key"] for i in c.get("/api/list").json()["items"]]
        assert keys == ["a.png", "b.png", "a.png #2"]
        assert [i["key"] for i in search(c, q="owls")["items"]] == ["b.png"]
        body = c.get("/api/graph", params={"key": "a.png #2"}).json()
        assert body["prev"] == "b.png" and body["next"] is None
        assert body["graph"]["vertices"][0]["descs"][0]["segments"][0]["text"] == "Again a."
    assert list((tmp_path / "cache" / "gbc" / "view").glob("g.jsonl-*.sqlite"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "g.jsonl"]


def test_store_shards_read_as_one(tmp_path):
    shards = tmp_path / "out"
    for i in range(2):
        with GraphStore(shards / f"s{i}.lmdb", readonly=False) as s:
            for j in range(3):
                s.commit_image(f"k{j * 2 + i}", small_graph("a.png", f"shard {i} graph {j}"))
    app = create_app(shards, catalog_path=tmp_path / "c.sqlite", background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert [i["key"] for i in c.get("/api/list", params={"limit": 4}).json()["items"]] == ["k0", "k1", "k2", "k3"]
        assert search(c, q="shard")["count"] == 6


def test_images_found_under_the_roots_the_store_recorded(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 6)).save(photos / "cat.png")
    store_path = tmp_path / "elsewhere" / "run.lmdb"
    with GraphStore(store_path, readonly=False) as s:
        s.commit_image("cat.png", small_graph("cat.png", "A cat."))
        s.update_meta({"image_roots": [str(photos)]})
    app = create_app(store_path, catalog_path=tmp_path / "c.sqlite", background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/image", params={"key": "cat.png"}).status_code == 200
    # --images-root wins over what the store recorded
    app = create_app(store_path, images_root=tmp_path / "elsewhere", catalog_path=tmp_path / "c.sqlite",
                     background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/image", params={"key": "cat.png"}).status_code == 404


def test_repeated_keys_of_a_file_stay_apart_across_batches(tmp_path, monkeypatch):
    from gbc.view import catalog

    monkeypatch.setattr(catalog, "FIRST_BATCH", 1)
    monkeypatch.setattr(catalog, "BUILD_BATCH", 2)
    path = tmp_path / "g.jsonl"
    graphs = [small_graph(name, f"graph {i}") for i, name in enumerate(["a.png", "b.png", "a.png", "a.png", "b.png"])]
    path.write_text("".join(json.dumps(g.to_dict()) + "\n" for g in graphs))
    app = create_app(path, catalog_path=tmp_path / "c.sqlite", background=False, stats_plot=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        keys = [i["key"] for i in c.get("/api/list").json()["items"]]
        assert keys == ["a.png", "b.png", "a.png #2", "a.png #3", "b.png #4"]
        assert c.get("/api/graph", params={"key": "a.png #3"}).json()["graph"]["vertices"][0]["descs"][0]["segments"][0]["text"] == "graph 3"
