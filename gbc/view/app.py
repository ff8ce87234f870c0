"""The viewer's ASGI app (Starlette): a JSON API over one source and the static page.

Read-only by construction: every route answers GET (and HEAD) only, and nothing in the API
writes to the source. Model output is untrusted: JSON is sent with ``<``, ``>`` and ``&`` as
``\\u`` escapes, the page renders text as text, and a Content-Security-Policy forbids inline
script. Requests whose Host is not the address the server was started on are refused (a web
page cannot reach the viewer by rebinding a DNS name to 127.0.0.1).

>>> app = create_app("graphs.jsonl", images_root="images/")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gbc.schemas.description import DESC_LABELS
from gbc.schemas.graph import VERTEX_LABELS
from gbc.view.catalog import Filters, default_catalog_path
from gbc.view.images import ThumbnailCache, image_response_body, image_roots, resolve_image
from gbc.view.indexing import CatalogManager
from gbc.view.payload import entry_payload, graph_payload, search_words, snippet
from gbc.view.source import Entry, describe_source, open_source

STATIC = Path(__file__).parent / "static"
#: Rows per page of the list and of search results (the page may ask for fewer).
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1"]


class SafeJSONResponse(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` escaped: a body read as HTML by mistake still runs nothing."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_finite)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("utf-8")


def _finite(value):
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value):
    """NaN / infinite scores become null (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _json(content: Any, status_code: int = 200) -> SafeJSONResponse:
    return SafeJSONResponse(_clean(content), status_code=status_code, headers={"cache-control": "no-store"})


def _not_found(what: str) -> SafeJSONResponse:
    return _json({"error": what}, status_code=404)


class SecurityHeaders:
    """Adds the CSP and the other protective headers to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in {k for k, _ in SECURITY_HEADERS}]
                message["headers"] = headers + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def request_host(headers) -> str:
    """The host name of a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    host = headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.split(":", 1)[0]


class HostCheck:
    """Answers 400 to requests whose Host is not one of ``allowed`` (``*``: any)."""

    def __init__(self, app, allowed: Sequence[str]):
        self.app = app
        self.allowed = {h.strip("[]").lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "*" not in self.allowed:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if request_host(headers) not in self.allowed:
                response = Response("Invalid host header", status_code=400, media_type="text/plain")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class Viewer:
    """The state behind the routes: the source, its catalog and its image roots."""

    def __init__(self, src: Path, images_root: Optional[Path], catalog_path: Optional[Path], background: bool,
                 stats_plot: bool = True):
        self.src = Path(src)
        kind, paths = describe_source(self.src)
        self.source = open_source(kind, paths)
        self.kind = kind
        self.roots = image_roots(images_root, self.source.remembered_image_roots(), self.src)
        path = catalog_path or default_catalog_path(kind, self.src)
        self.index = CatalogManager(self.source, path, background=background, plot=stats_plot)
        self.thumbs = ThumbnailCache()

    def close(self) -> None:
        self.index.close()
        self.source.close()

    # ------------------------------------------------------------------ lookups
    def entry(self, key: str) -> Optional[Entry]:
        if self.kind == "store":
            return self.source.entry(key)
        catalog = self.index.catalog()
        row = catalog.row(key) if catalog is not None else None
        return Entry(key, row["status"], row["reason"], row["error_type"]) if row else None

    def graph(self, key: str):
        if self.kind == "store":
            return self.source.graph(key)
        catalog = self.index.catalog()
        return catalog.body(key) if catalog is not None else None

    def page(self, after: Optional[str], before: Optional[str], limit: int):
        """``(entries, has_more_in_that_direction)``."""
        if self.kind == "store":
            found = self.source.page(after=after, before=before, limit=limit + 1)
            more = len(found) > limit
            found = found[1:] if (more and before is not None) else found[:limit]
            return found, more
        catalog = self.index.catalog()
        if catalog is None:
            return [], False
        rows = catalog.page(after=after, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[1:] if (more and before is not None) else rows[:limit]
        return [Entry(r["key"], r["status"], r["reason"], r["error_type"]) for r in rows], more

    def neighbours(self, key: str):
        before, _ = self.page(None, key, 1)
        after, _ = self.page(key, None, 1)
        return (before[0].key if before else None), (after[0].key if after else None)

    def image_path(self, key: str) -> Optional[Path]:
        graph = self.graph(key)
        if graph is None:
            return None
        return resolve_image(graph.img_path, self.roots)


def _closing_lifespan(viewer: "Viewer"):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Start the index build and walk the code of a first page before the first visitor
        # comes, so that the first page is as quick as the next ones.
        viewer.index.refresh(force=True)
        viewer.page(None, None, 1)
        try:
            yield
        finally:
            viewer.close()

    return lifespan


def _key(request: Request) -> Optional[str]:
    key = request.query_params.get("key")
    return key if key else None


def _limit(request: Request) -> int:
    try:
        return max(1, min(MAX_PAGE_SIZE, int(request.query_params.get("limit", PAGE_SIZE))))
    except ValueError:
        return PAGE_SIZE


def _float(request: Request, name: str) -> Optional[float]:
    value = request.query_params.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int(request: Request, name: str) -> Optional[int]:
    value = request.query_params.get(name, "").strip()
    return int(value) if value.isdigit() else None


def create_app(src, images_root=None, catalog_path=None, background: bool = True,
               allowed_hosts: Optional[Sequence[str]] = None, stats_plot: bool = True) -> Starlette:
    """The viewer of ``src`` (a store, a folder of store shards or a graph file).

    ``images_root`` overrides where images are looked for; ``catalog_path`` where the search
    catalog is kept; ``background=False`` builds the catalog synchronously on first use;
    ``allowed_hosts`` are the Host names accepted (default: the loopback names); ``stats_plot``
    draws the ``gbc stats`` picture with each catalog build.
    """
    viewer = Viewer(Path(src), Path(images_root) if images_root else None,
                    Path(catalog_path) if catalog_path else None, background, stats_plot)

    def index_page(request: Request):
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-store"})

    def info(request: Request):
        count = viewer.source.count() if viewer.kind == "store" else None
        return _json({"source": viewer.src.name, "kind": viewer.kind, "graphs": count,
                      "index": viewer.index.state(), "vertex_labels": list(VERTEX_LABELS),
                      "caption_labels": list(DESC_LABELS), "page_size": PAGE_SIZE})

    def listing(request: Request):
        after = request.query_params.get("after") or None
        before = request.query_params.get("before") or None
        limit = _limit(request)
        entries, more = viewer.page(after, before, limit)
        # a store's rows get their counts from the last complete catalog, if any (never wait for a build)
        catalog = viewer.index.catalog() if viewer.kind == "file" else viewer.index.complete()
        rows = catalog.rows([e.key for e in entries]) if catalog is not None else {}
        items = [entry_payload(e, rows.get(e.key)) for e in entries]
        if before is not None:
            has_previous, has_next = more, True
        else:
            has_previous, has_next = after is not None, more
        indexing = viewer.kind == "file" and not items and viewer.index.state()["state"] in ("building", "missing")
        return _json({"items": items, "has_previous": has_previous and bool(items), "has_next": has_next and bool(items),
                      "indexing": indexing})

    def graph(request: Request):
        key = _key(request)
        entry = viewer.entry(key) if key else None
        if entry is None:
            return _not_found("no such graph")
        prev_key, next_key = viewer.neighbours(key)
        out: Dict[str, Any] = {"entry": entry_payload(entry), "prev": prev_key, "next": next_key, "graph": None}
        if entry.status == "done":
            g = viewer.graph(key)
            if g is not None:
                out["graph"] = graph_payload(key, g)
                out["image"] = resolve_image(g.img_path, viewer.roots) is not None
        return _json(out)

    def raw(request: Request):
        key = _key(request)
        g = viewer.graph(key) if key else None
        if g is None:
            return _not_found("no such graph")
        return _json(g.to_dict())

    def provenance(request: Request):
        key = _key(request)
        if not key or viewer.entry(key) is None:
            return _not_found("no such graph")
        found = viewer.source.provenance(key) if viewer.kind == "store" else None
        return _json({"key": key, "provenance": found})

    def image(request: Request):
        key = _key(request)
        path = viewer.image_path(key) if key else None
        if path is None:
            return _not_found("no image")
        try:
            if request.query_params.get("thumb"):
                return Response(viewer.thumbs.get(path), media_type="image/jpeg", headers={"cache-control": "max-age=300"})
            body, media = image_response_body(path)
        except (OSError, ValueError):
            return _not_found("image cannot be read")
        return Response(body, media_type=media, headers={"cache-control": "max-age=300"})

    def search(request: Request):
        q = request.query_params
        filters = Filters(text=q.get("q", "")[:500], status=q.get("status") or None,
                          vertex_label=q.get("vertex_label") or None, caption_label=q.get("caption_label") or None,
                          clip_min=_float(request, "clip_min"), clip_max=_float(request, "clip_max"),
                          tox_min=_float(request, "tox_min"), tox_max=_float(request, "tox_max"))
        catalog = viewer.index.catalog()
        state = viewer.index.state()
        exact = None
        text = filters.text.strip()
        if text and viewer.entry(text) is not None:
            exact = text  # a whole key: the page may open it directly
        if catalog is None:
            return _json({"index": state, "items": [], "count": 0, "exact": exact})
        page = catalog.search(filters, after_id=_int(request, "after"), before_id=_int(request, "before"),
                              limit=_limit(request))
        words = search_words(filters.text)
        items = []
        for r in page.rows:
            item = dict(entry_payload(Entry(r["key"], r["status"], r["reason"], r["error_type"]), r),
                        id=r["id"], clip_min=r["clip_min"], tox_max=r["tox_max"])
            found = viewer.graph(r["key"]) if words and r["status"] == "done" else None
            item["snippet"] = snippet(found, words, filters.caption_label) if found is not None else None
            items.append(item)
        return _json({"index": state, "items": items, "count": page.count, "count_capped": page.count_capped,
                      "has_next": page.has_more, "has_previous": page.has_previous, "exact": exact})

    def stats(request: Request):
        state = viewer.index.state()
        catalog = viewer.index.catalog()
        meta = catalog.meta() if catalog is not None and state["state"] in ("ready", "refreshing") else {}
        return _json({"index": state, "stats": meta.get("stats"), "plot": bool(meta.get("stats"))})

    def stats_png(request: Request):
        catalog = viewer.index.catalog()
        data = catalog.stats_png() if catalog is not None and viewer.index.state()["state"] in ("ready", "refreshing") else None
        if not data:
            return _not_found("no plot")
        return Response(data, media_type="image/png", headers={"cache-control": "no-store"})

    get = ["GET"]
    routes = [
        Route("/", index_page, methods=get),
        Route("/api/info", info, methods=get),
        Route("/api/list", listing, methods=get),
        Route("/api/graph", graph, methods=get),
        Route("/api/raw", raw, methods=get),
        Route("/api/provenance", provenance, methods=get),
        Route("/api/image", image, methods=get),
        Route("/api/search", search, methods=get),
        Route("/api/stats", stats, methods=get),
        Route("/api/stats.png", stats_png, methods=get),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts else LOCAL_HOSTS
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders), Middleware(HostCheck, allowed=hosts)],
                    lifespan=_closing_lifespan(viewer))
    app.state.viewer = viewer
    return app
