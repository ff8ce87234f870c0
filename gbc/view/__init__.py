"""The local web viewer: a read-only ASGI app over a store or graph file, and its static page.

- ``gbc.view.app``: ``create_app(src, images_root=None)``, the Starlette app (JSON API + page).
- ``gbc.view.source``: paging a store by cursor, or reading a graph file through the catalog.
- ``gbc.view.catalog``: the SQLite catalog (a row per image, an FTS5 index of keys and captions).
- ``gbc.view.indexing``: building the catalog in the background and rebuilding it when the source changes.
- ``gbc.view.payload``: a graph as the page draws it; ``gbc.view.images``: images confined to their roots.
- ``static/``: the page (HTML, CSS, JS; no build step, nothing loaded from elsewhere).

Starlette and uvicorn come with the ``view`` extra; nothing here is imported by ``import gbc``.
"""
