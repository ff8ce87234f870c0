"""The viewer's catalog: one SQLite file per source with a row per image and an FTS5 text index.

Built in one streaming pass over the source (``build_catalog``), kept beside a store
(``<store>.view.sqlite``) or, for graph files and read-only folders, in the user's cache folder,
and rebuilt when the source changes (its version: the stores' last write transactions, or the
file's size and time). A build writes ``<catalog>.building`` and replaces the catalog when it is
complete, so searches keep answering from the previous catalog meanwhile; the first build is read
while it grows (rows are committed in batches).

Every query is parameterised: user text reaches SQLite only as bound values, and search words
reach FTS5 only as quoted strings (``fts_query``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gbc.schemas.description import DESC_LABELS
from gbc.schemas.graph import VERTEX_LABELS, GbcGraph

#: Rows written per transaction while building (also how often progress is visible).
BUILD_BATCH = 2000
#: Rows in the first transaction.
FIRST_BATCH = 100
#: Layout version of the catalog; a catalog of another version is rebuilt.
CATALOG_VERSION = 1
#: Matches counted at most for a search (the count is shown as "10000+" beyond).
COUNT_CAP = 10000

VERTEX_BITS = {label: 1 << i for i, label in enumerate(VERTEX_LABELS)}
CAPTION_BITS = {label: 1 << i for i, label in enumerate(DESC_LABELS)}

_SCHEMA = f"""
CREATE TABLE meta(name TEXT PRIMARY KEY, value);
CREATE TABLE graphs(
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    reason TEXT,
    error_type TEXT,
    n_vertices INTEGER,
    n_captions INTEGER,
    vertex_labels INTEGER NOT NULL DEFAULT 0,
    caption_labels INTEGER NOT NULL DEFAULT 0,
    clip_min REAL,
    tox_max REAL,
    body BLOB
);
CREATE INDEX graphs_status ON graphs(status, id);
CREATE VIRTUAL TABLE captions USING fts5(key, {", ".join(DESC_LABELS)}, content='', tokenize='unicode61 remove_diacritics 2');
"""


def default_catalog_path(kind: str, source_path: Path) -> Path:
    """``<store>.view.sqlite`` beside a store whose folder is writable; otherwise (graph files,
    read-only folders) a file in the user's cache folder named after the source's real path."""
    source_path = Path(source_path)
    if kind == "store" and os.access(source_path.resolve().parent, os.W_OK):
        return source_path.resolve().parent / (source_path.name + ".view.sqlite")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gbc" / "view"
    digest = hashlib.sha256(str(source_path.resolve()).encode("utf-8")).hexdigest()[:16]
    return cache / f"{source_path.name}-{digest}.sqlite"


# ---------------------------------------------------------------------------- building
def _scores(graph: GbcGraph) -> Tuple[Optional[float], Optional[float]]:
    """Lowest CLIP score and highest toxicity score over the graph's captions (None when absent)."""
    clip_min = tox_max = None
    for v in graph.vertices:
        for d in v.descs:
            if d.clip_scores is not None and d.clip_scores.scores:
                low = min(d.clip_scores.scores.values())
                clip_min = low if clip_min is None else min(clip_min, low)
            if d.toxicity_scores:
                high = max(d.toxicity_scores.values())
                tox_max = high if tox_max is None else max(tox_max, high)
    return clip_min, tox_max


def _texts_by_label(graph: GbcGraph) -> Dict[str, List[str]]:
    texts: Dict[str, List[str]] = {label: [] for label in DESC_LABELS}
    for v in graph.vertices:
        for d in v.descs:
            texts.setdefault(d.label, []).append(d.text)
    return texts


def build_catalog(kind: str, paths: Sequence[str], target: str, keep_bodies: Optional[bool] = None,
                  plot: bool = True) -> None:
    """Write the catalog of the source ``(kind, paths)`` to ``target`` (replaced when complete).

    Runs in a process of its own in the server (``CatalogManager``): the pass over the source
    decodes every graph, which would otherwise hold the GIL for the page's requests. Graph files
    keep each graph's record (``body``) since they cannot be read by key.
    """
    from gbc.stats import GraphStats
    from gbc.view.source import open_source, unique_key

    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    building = target_path.with_name(target_path.name + ".building")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(building) + suffix).unlink(missing_ok=True)
    source = open_source(kind, paths)
    keep = kind == "file" if keep_bodies is None else keep_bodies
    conn = sqlite3.connect(building)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        started = time.time()
        total = source.count() if hasattr(source, "count") else None
        version = source.version()
        meta = {"catalog_version": CATALOG_VERSION, "source_version": version, "complete": 0, "indexed": 0,
                "total": total, "started": started}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        conn.commit()
        stats = GraphStats()
        n_failed = 0
        rows: List[tuple] = []
        fts_rows: List[tuple] = []
        indexed = 0
        batch_keys: set = set()
        for row_id, (key, record, graph) in enumerate(source.records(), start=1):
            if kind == "file":
                # a file may name two graphs alike; looked up in the catalog itself so memory
                # does not grow with the file
                if key in batch_keys or conn.execute("SELECT 1 FROM graphs WHERE key = ?", (key,)).fetchone():
                    key = unique_key(key, row_id - 1)
                batch_keys.add(key)
            if graph is None:
                n_failed += 1
                rows.append((row_id, key, "failed", getattr(record, "reason", None), getattr(record, "error_type", None),
                             None, None, 0, 0, None, None, None))
                fts_rows.append((row_id, key) + ("",) * len(DESC_LABELS))
            else:
                stats.add(graph)
                texts = _texts_by_label(graph)
                vbits = 0
                cbits = 0
                for v in graph.vertices:
                    vbits |= VERTEX_BITS.get(v.label, 0)
                    for d in v.descs:
                        cbits |= CAPTION_BITS.get(d.label, 0)
                clip_min, tox_max = _scores(graph)
                body = zlib.compress(graph.to_json(), 1) if keep else None
                rows.append((row_id, key, "done", None, None, graph.n_vertices, graph.n_captions, vbits, cbits,
                             clip_min, tox_max, body))
                fts_rows.append((row_id, key) + tuple("\n".join(texts.get(label, ())) for label in DESC_LABELS))
            indexed = row_id
            # a small first batch: a graph file's first page shows while the rest is indexed
            if len(rows) >= (FIRST_BATCH if indexed <= FIRST_BATCH else BUILD_BATCH):
                _flush(conn, rows, fts_rows, indexed)
                batch_keys.clear()
        _flush(conn, rows, fts_rows, indexed)
        stats.n_failed = n_failed if kind == "store" else None
        done_meta = {"complete": 1, "indexed": indexed, "total": indexed, "failed": n_failed,
                     "stats": stats.to_dict(), "seconds": round(time.time() - started, 3)}
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in done_meta.items()])
        picture = _stats_plot(stats, Path(paths[0]).name) if plot else None
        if picture is not None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('stats_png', ?)", (picture,))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _leave_wal(conn)
    finally:
        conn.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
    os.replace(building, target_path)
    for suffix in ("-wal", "-shm"):
        Path(str(building) + suffix).unlink(missing_ok=True)


def _flush(conn: sqlite3.Connection, rows: List[tuple], fts_rows: List[tuple], indexed: int) -> None:
    if rows:
        conn.executemany("INSERT INTO graphs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        marks = ", ".join("?" * (2 + len(DESC_LABELS)))
        conn.executemany(f"INSERT INTO captions(rowid, key, {', '.join(DESC_LABELS)}) VALUES ({marks})", fts_rows)
    conn.execute("UPDATE meta SET value = ? WHERE name = 'indexed'", (json.dumps(indexed),))
    conn.commit()
    rows.clear()
    fts_rows.clear()


def _leave_wal(conn: sqlite3.Connection) -> None:
    """Back to a rollback journal so the finished file is one self-contained file; a reader of the
    growing file may hold it a moment, so retry briefly."""
    for _ in range(50):
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            return
        except sqlite3.OperationalError:
            time.sleep(0.05)


def _stats_plot(stats, name: str) -> Optional[bytes]:
    """The ``gbc stats --plot`` picture as PNG bytes (None without matplotlib or graphs)."""
    if not stats.n_graphs:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    import tempfile

    from gbc.viz.stats_plot import plot_stats

    with tempfile.TemporaryDirectory() as tmp:
        out = plot_stats(stats, Path(tmp) / "stats.png", title=f"{name}: {stats.n_graphs} graphs")
        return out.read_bytes()


# ---------------------------------------------------------------------------- querying
@dataclass
class Filters:
    """What a search asks for; every field is optional."""

    text: str = ""
    status: Optional[str] = None
    vertex_label: Optional[str] = None
    caption_label: Optional[str] = None
    clip_min: Optional[float] = None
    clip_max: Optional[float] = None
    tox_min: Optional[float] = None
    tox_max: Optional[float] = None


def fts_query(text: str) -> str:
    """An FTS5 expression for what a person typed: each word, and each ``"quoted phrase"``, as a
    quoted string (all must occur); a word ending in ``*`` matches as a prefix. Nothing the user
    types is read as FTS5 syntax. Empty when nothing searchable is left."""
    parts: List[str] = []
    pieces = text.split('"')
    for i, piece in enumerate(pieces):
        in_quotes = i % 2 == 1 and i < len(pieces) - 1
        words = [piece] if in_quotes else piece.split()
        for word in words:
            prefix = not in_quotes and word.endswith("*")
            word = word.strip().rstrip("*") if not in_quotes else word.strip()
            if not any(ch.isalnum() for ch in word):
                continue
            parts.append('"' + word.replace('"', '""') + '"' + (" *" if prefix else ""))
    return " ".join(parts)


@dataclass
class SearchPage:
    rows: List[Dict[str, Any]] = field(default_factory=list)
    has_more: bool = False
    has_previous: bool = False
    count: int = 0
    count_capped: bool = False


_ROW_FIELDS = "g.id, g.key, g.status, g.reason, g.error_type, g.n_vertices, g.n_captions, g.clip_min, g.tox_max"


def _row_dict(row) -> Dict[str, Any]:
    names = ("id", "key", "status", "reason", "error_type", "n_vertices", "n_captions", "clip_min", "tox_max")
    return dict(zip(names, row))


class Catalog:
    """Read access to one catalog file (a connection per call: requests run on several threads)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        return conn

    def meta(self) -> Dict[str, Any]:
        with self._closing() as conn:
            return {name: json.loads(value) for name, value in conn.execute("SELECT name, value FROM meta WHERE name != 'stats_png'")}

    def stats_png(self) -> Optional[bytes]:
        with self._closing() as conn:
            row = conn.execute("SELECT value FROM meta WHERE name = 'stats_png'").fetchone()
        return row[0] if row else None

    def _closing(self):
        import contextlib

        return contextlib.closing(self._connect())

    # ------------------------------------------------------------------ by position (graph files)
    def page(self, after: Optional[str] = None, before: Optional[str] = None, limit: int = 50) -> List[Dict[str, Any]]:
        """Rows in source order after/before the row of key ``after``/``before``."""
        with self._closing() as conn:
            if before is not None:
                sql = (f"SELECT {_ROW_FIELDS} FROM graphs g WHERE g.id < (SELECT id FROM graphs WHERE key = ?) "
                       "ORDER BY g.id DESC LIMIT ?")
                return [_row_dict(r) for r in reversed(conn.execute(sql, (before, limit)).fetchall())]
            if after is not None:
                sql = (f"SELECT {_ROW_FIELDS} FROM graphs g WHERE g.id > (SELECT id FROM graphs WHERE key = ?) "
                       "ORDER BY g.id LIMIT ?")
                return [_row_dict(r) for r in conn.execute(sql, (after, limit))]
            return [_row_dict(r) for r in conn.execute(f"SELECT {_ROW_FIELDS} FROM graphs g ORDER BY g.id LIMIT ?", (limit,))]

    def row(self, key: str) -> Optional[Dict[str, Any]]:
        with self._closing() as conn:
            found = conn.execute(f"SELECT {_ROW_FIELDS} FROM graphs g WHERE g.key = ?", (key,)).fetchone()
        return _row_dict(found) if found else None

    def rows(self, keys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """``key -> row`` for those of ``keys`` in the catalog (one query)."""
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        with self._closing() as conn:
            found = conn.execute(f"SELECT {_ROW_FIELDS} FROM graphs g WHERE g.key IN ({marks})", list(keys)).fetchall()
        return {row["key"]: row for row in map(_row_dict, found)}

    def body(self, key: str) -> Optional[GbcGraph]:
        """The graph recorded for ``key`` (graph files only)."""
        with self._closing() as conn:
            found = conn.execute("SELECT body FROM graphs WHERE key = ?", (key,)).fetchone()
        if not found or found[0] is None:
            return None
        return GbcGraph.from_json(zlib.decompress(found[0]))

    # ------------------------------------------------------------------ search
    def search(self, filters: Filters, after_id: Optional[int] = None, before_id: Optional[int] = None,
               limit: int = 50) -> SearchPage:
        """A page of rows matching ``filters`` in source order (``after_id`` / ``before_id`` page)."""
        where: List[str] = []
        params: List[Any] = []
        match = fts_query(filters.text)
        if match and filters.caption_label in DESC_LABELS:
            # a column filter: only captions of that label; the name comes from the fixed list
            match = "{" + filters.caption_label + "} : (" + match + ")"
        if filters.status in ("done", "failed"):
            where.append("g.status = ?")
            params.append(filters.status)
        if filters.vertex_label in VERTEX_BITS:
            where.append("(g.vertex_labels & ?) != 0")
            params.append(VERTEX_BITS[filters.vertex_label])
        if filters.caption_label in CAPTION_BITS:
            where.append("(g.caption_labels & ?) != 0")
            params.append(CAPTION_BITS[filters.caption_label])
        for column, op, value in (("clip_min", ">=", filters.clip_min), ("clip_min", "<=", filters.clip_max),
                                  ("tox_max", ">=", filters.tox_min), ("tox_max", "<=", filters.tox_max)):
            if value is not None:
                where.append(f"g.{column} {op} ?")
                params.append(float(value))
        if match:
            base = "FROM captions c JOIN graphs g ON g.id = c.rowid"
            where.insert(0, "captions MATCH ?")
            params.insert(0, match)
            id_col = "c.rowid"
        elif filters.text.strip():
            return SearchPage()  # only punctuation: nothing can match
        else:
            base = "FROM graphs g"
            id_col = "g.id"
        cond = " AND ".join(where) if where else "1"
        page = SearchPage()
        with self._closing() as conn:
            if before_id is not None:
                sql = f"SELECT {_ROW_FIELDS} {base} WHERE {cond} AND {id_col} < ? ORDER BY {id_col} DESC LIMIT ?"
                found = conn.execute(sql, params + [before_id, limit + 1]).fetchall()
                page.has_previous = len(found) > limit
                page.rows = [_row_dict(r) for r in reversed(found[:limit])]
                page.has_more = True
            else:
                extra = f" AND {id_col} > ?" if after_id is not None else ""
                sql = f"SELECT {_ROW_FIELDS} {base} WHERE {cond}{extra} ORDER BY {id_col} LIMIT ?"
                found = conn.execute(sql, params + ([after_id] if after_id is not None else []) + [limit + 1]).fetchall()
                page.has_more = len(found) > limit
                page.rows = [_row_dict(r) for r in found[:limit]]
                page.has_previous = after_id is not None
            count_sql = f"SELECT count(*) FROM (SELECT 1 {base} WHERE {cond} LIMIT ?)"
            page.count = conn.execute(count_sql, params + [COUNT_CAP + 1]).fetchone()[0]
            page.count_capped = page.count > COUNT_CAP
            page.count = min(page.count, COUNT_CAP)
        return page


def read_meta(path: Path) -> Optional[Dict[str, Any]]:
    """The meta of the catalog at ``path``, or None when there is none or it cannot be read."""
    if not Path(path).is_file():
        return None
    try:
        return Catalog(path).meta()
    except sqlite3.Error:
        return None

