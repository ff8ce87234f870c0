"""The LMDB graph store: graphs, per-image status, run metadata and provenance in one file.

One LMDB environment (a directory, by convention ``*.lmdb``) with named sub-databases:

- ``graphs``: image key -> compact graph value (``gbc.store.codec``)
- ``status``: image key -> ``StatusRecord`` (done | failed, reason, error type, attempts, ...);
  every key that holds a graph is ``done`` (origin ``imported`` when ``put``/``put_many`` stored
  it rather than an annotation run; a graph of an older store without a record reads the same)
- ``meta``: name -> JSON value (format version, creation time, gbc version, run metadata)
- ``provenance``: image key -> dict (raw model answers, backend specs, prompt version)
- ``dicts``: id -> zstd dictionary trained on this store's first graphs

Read it like a mapping::

    import gbc
    with gbc.open_store("run.lmdb") as store:
        print(len(store), store.count("failed"))
        for key, graph in store.items():
            ...

``commit_image`` writes a graph, its ``done`` status and its provenance in one transaction,
so a run that is killed and started again skips exactly the images that were committed.
The store may be read by other processes while one process writes it, and it is safe to
use across ``fork()``: every process opens the environment for itself, lazily.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Tuple, Union

import msgspec
from pydantic import BaseModel

from gbc.schemas.graph import GbcGraph
from gbc.store import health as _health
from gbc.store import lmdb_env as _envs
from gbc.store.codec import ValueCodec, ValueDecodeError
from gbc.store.lmdb_env import SUBDBS as _SUBDBS
from gbc.store.lmdb_env import StoreCorruptError, StoreError

#: Layout version of the store as a whole (sub-databases and meta keys).
STORE_FORMAT_VERSION = 1
#: Initial map size of a new store. The file grows only as pages are used; the map doubles
#: whenever a write does not fit.
DEFAULT_MAP_SIZE = 1 << 30
#: Largest map a store grows to before giving up (1 TiB).
MAX_MAP_SIZE = 1 << 40
#: Graphs written per transaction by ``put_many``.
DEFAULT_BATCH_SIZE = 1000
#: Values read per read transaction while iterating; short transactions let a writer
#: in another process reuse pages and let readers follow a growing map.
ITER_CHUNK = 256
#: Graph values collected before a zstd dictionary is trained for the store (0: never).
DICT_TRAIN_SAMPLES = 1000
#: Size of that dictionary in bytes.
DICT_SIZE = 32 * 1024
#: Reader slots of the environment (LMDB's default is 126).
MAX_READERS = 256
#: LMDB keys are limited to 511 bytes.
MAX_KEY_BYTES = 511

_STATUS_CODES = {"done": b"D", "failed": b"F"}

StatusName = Literal["done", "failed"]


#: ``StatusRecord.origin`` of graphs stored by ``put``/``put_many`` (conversions, imports)
#: rather than committed by an annotation run.
IMPORTED = "imported"


class StatusRecord(BaseModel):
    """What happened to one image: ``done`` (its graph is stored) or ``failed`` (with a reason).

    ``origin`` is ``None`` for a graph an annotation run committed and ``"imported"`` for one
    stored as it was given (``put``, ``put_many``, ``gbc convert``); such records have
    ``attempts=0``.
    """

    status: StatusName
    reason: Optional[str] = None
    error_type: Optional[str] = None
    attempts: int = 1
    time: float = 0.0
    counts: Optional[Dict[str, int]] = None
    #: ``imported``, or where the image came from (input and position, e.g. ``00003.tar:17``) when
    #: the input said; None for images from folders.
    origin: Optional[str] = None


def _imported_record(when: float) -> StatusRecord:
    return StatusRecord(status="done", attempts=0, time=when, origin=IMPORTED)


def _imported_value() -> bytes:
    # Fields left at None are not written (they read back as their defaults): one small
    # record per imported graph.
    return _STATUS_CODES["done"] + _imported_record(time.time()).model_dump_json(exclude_none=True).encode()


#: The status of a graph stored without a status record (stores written before ``put`` and
#: ``put_many`` recorded one): it has a graph, so it is ``done``, and it was imported.
_LEGACY_DONE = _imported_record(0.0)


class _StatusLite(msgspec.Struct):
    status: str
    origin: Optional[str] = None


_STATUS_LITE = msgspec.json.Decoder(_StatusLite).decode


def _encode_key(key: Union[str, bytes]) -> bytes:
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not data:
        raise StoreError("image keys must not be empty")
    if len(data) > MAX_KEY_BYTES:
        raise StoreError(f"image key is {len(data)} bytes long; LMDB keys are limited to {MAX_KEY_BYTES} bytes")
    return data


def _decode_key(data: bytes) -> str:
    return bytes(data).decode("utf-8")


class GraphStore:
    """A mapping ``image key -> GbcGraph`` backed by LMDB, with per-image status and provenance.

    ``GraphStore(path)`` opens an existing store read-only; ``readonly=False`` creates it if
    needed and allows writing. ``map_size`` is the initial map (default ``DEFAULT_MAP_SIZE``);
    it grows by itself. Iteration is in key order (UTF-8 byte order).

    >>> with GraphStore("demo.lmdb", readonly=False) as store:  # doctest: +SKIP
    ...     store.commit_image("dog.jpg", graph, provenance={"backend": "replay"})
    ...     store["dog.jpg"].short_caption
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        readonly: bool = True,
        map_size: Optional[int] = None,
        *,
        compression_level: int = 3,
        dict_train_samples: int = DICT_TRAIN_SAMPLES,
        max_readers: int = MAX_READERS,
    ):
        self.path = Path(path)
        self.readonly = readonly
        self._key = os.path.realpath(self.path)
        self._map_size = int(map_size) if map_size else DEFAULT_MAP_SIZE
        self._max_readers = max_readers
        self._dict_train_samples = dict_train_samples
        self._samples: List[Tuple[bytes, bytes, int, bytes]] = []  # (key, payload, in-edge mode, value)
        self._pending_dict: Optional[Tuple[int, bytes]] = None
        self._codec = ValueCodec(compression_level, load_dictionary=self._load_dictionary)
        self._shared: Optional[_envs.SharedEnv] = None
        self._pid = -1
        self._closed = False
        if readonly:
            self._check_is_store()
        elif self.path.exists() and not self.path.is_dir():
            raise StoreError(f"cannot create a graph store at {str(self.path)!r}: a file of that name exists")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "data.mdb").is_file() or not (self.path / "lock.mdb").is_file():
            _health.check_room_to_create(self.path)  # LMDB would die by SIGBUS on a full disk
        if (self.path / "data.mdb").is_file():
            _health.check_before_open(self.path)  # LMDB would die by a signal on some damage
        self._generation = _envs.GENERATION
        with _envs.GATE:
            self._open()

    # ------------------------------------------------------------------ opening
    def _check_is_store(self) -> None:
        if not self.path.exists():
            raise StoreError(f"no graph store at {str(self.path)!r}: the directory does not exist")
        if not self.path.is_dir():
            raise StoreError(f"{str(self.path)!r} is not a graph store (a store is a directory holding data.mdb)")
        if not (self.path / "data.mdb").is_file():
            raise StoreError(f"{str(self.path)!r} is not a graph store: it has no data.mdb")

    def _open(self) -> None:
        """Open (or re-open after fork) this process's environment and check the store."""
        self._shared = _envs.acquire_env(self._key, self.readonly, self._map_size, self._max_readers)
        self._pid = os.getpid()
        self._generation = _envs.GENERATION
        shared = self._shared
        try:
            self._check_not_truncated(shared.env)
            if not shared.dbs:
                if self.readonly:
                    # Which sub-databases exist is read from ONE snapshot of the main database:
                    # opening them one by one (each in its own read transaction) could straddle
                    # the creating writer's commit and see a half-made store that is not one.
                    missing = self._retry_resized(lambda: self._missing_subdbs(shared.env))
                    if not missing:
                        for name in _SUBDBS:
                            # Without an explicit txn: handles opened in a read txn die with it.
                            shared.dbs[name] = self._retry_resized(lambda n=name: shared.env.open_db(n, create=False))
                    if len(missing) == len(_SUBDBS):
                        # Sub-databases are created in one transaction: none yet is a store
                        # being created (or an empty LMDB), not a damaged one.
                        shared.dbs.clear()
                        raise StoreError(f"no graph store at {str(self.path)!r} yet: it holds no sub-database (being created?)")
                    if missing:
                        shared.dbs.clear()
                        raise StoreCorruptError(
                            f"{str(self.path)!r} is not a complete graph store: sub-database {missing[0].decode()!r} is missing"
                        )
                else:
                    with shared.write_lock:
                        self._with_growth(lambda: self._create_subdbs(shared))
            self._check_meta()
        except BaseException:
            _envs.release_env(self._key, shared)
            self._shared = None
            raise
        self._load_writer_dictionary()

    @staticmethod
    def _missing_subdbs(env) -> list:
        with env.begin() as txn:
            return [name for name in _SUBDBS if txn.get(name) is None]

    def _create_subdbs(self, shared) -> None:
        """Open (creating when missing) every sub-database, and write the meta of a new store,
        in ONE write transaction: a reader in another process sees no store or a complete one."""
        import msgspec as _msgspec

        from gbc._version import __version__

        handles = {}
        with shared.env.begin(write=True) as txn:
            for name in _SUBDBS:
                handles[name] = shared.env.open_db(name, txn=txn, create=True)
            if txn.stat(handles[b"meta"])["entries"] == 0:
                now = time.time()
                first = {"format_version": STORE_FORMAT_VERSION, "created": now,
                         "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                         "gbc_version": __version__}
                for k, v in first.items():
                    txn.put(_encode_key(k), _msgspec.json.encode(v), db=handles[b"meta"])
        shared.dbs.update(handles)  # handles opened in a committed write txn stay valid

    def _check_not_truncated(self, env) -> None:
        # Reading a page past the end of a truncated file would kill the process (SIGBUS).
        info, stat = env.info(), env.stat()
        needed = (info["last_pgno"] + 1) * stat["psize"]
        size = (self.path / "data.mdb").stat().st_size
        if size < needed:
            raise StoreCorruptError(
                f"graph store {str(self.path)!r} is damaged: data.mdb has {size} bytes but its pages need {needed}"
            )

    def _check_meta(self) -> None:
        meta = self._read_meta()
        if not meta and not self.readonly:
            from gbc._version import __version__

            now = time.time()
            self.update_meta(
                {
                    "format_version": STORE_FORMAT_VERSION,
                    "created": now,
                    "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "gbc_version": __version__,
                }
            )
            return
        version = meta.get("format_version")
        if version is None:
            raise StoreCorruptError(f"graph store {str(self.path)!r} is damaged: its meta has no format_version")
        if not isinstance(version, int) or version < 1 or version > STORE_FORMAT_VERSION:
            raise StoreCorruptError(
                f"graph store {str(self.path)!r} has format version {version!r}; this gbc reads versions 1..{STORE_FORMAT_VERSION}"
            )

    def _env(self):
        """This process's environment, reopened lazily after a fork (in the parent and the child).

        Call it inside ``_envs.GATE`` so that no fork can close the environment while it is used.
        """
        if self._closed:
            raise StoreError(f"graph store {str(self.path)!r} is closed")
        if self._pid != os.getpid() or self._generation != _envs.GENERATION:
            # The old environment was closed before the fork (or belongs to the parent): drop it
            # without releasing it.
            self._shared = None
            self._open()
        return self._shared.env

    def _db(self, name: bytes):
        """A sub-database handle; valid only inside the transaction that asked for it."""
        return self._shared.dbs[name]

    # ------------------------------------------------------------------ transactions
    def _retry_resized(self, fn: Callable[[], Any]) -> Any:
        import lmdb

        try:
            return fn()
        except lmdb.MapResizedError:
            self._shared.env.set_mapsize(0)
            return fn()

    def _read_txn(self):
        import lmdb

        env = self._shared.env
        try:
            return env.begin(buffers=False)
        except lmdb.MapResizedError:
            # Another process grew the map: adopt its size and try again.
            env.set_mapsize(0)
            return env.begin(buffers=False)

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        import lmdb

        with _envs.GATE:
            self._env()
            try:
                with self._read_txn() as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._shared.env.set_mapsize(0)
                with self._read_txn() as txn:
                    return fn(txn)
            except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadValsizeError) as exc:
                raise StoreCorruptError(f"graph store {str(self.path)!r} is damaged ({exc})") from None

    def _with_growth(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (which opens its own write txn); on MapFullError grow the map and retry."""
        import lmdb

        env = self._shared.env
        while True:
            try:
                return fn()
            except lmdb.MapFullError:
                # The failed txn is aborted and no txn is open now: growing is safe.
                current = env.info()["map_size"]
                if current >= MAX_MAP_SIZE:
                    raise StoreError(f"graph store {str(self.path)!r} reached its largest map size ({MAX_MAP_SIZE} bytes)") from None
                env.set_mapsize(min(current * 2, MAX_MAP_SIZE))
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.Error as exc:  # the txn was aborted: what was committed before stays
                raise _health.write_failed(self.path, exc) from None

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        if self.readonly:
            raise StoreError(f"graph store {str(self.path)!r} is open read-only; open it with readonly=False to write")
        with _envs.GATE:
            env = self._env()
            shared = self._shared

            def attempt():
                with env.begin(write=True) as txn:
                    if self._pending_dict is not None:
                        # A dictionary trained in an attempt that was rolled back: write it again.
                        txn.put(b"%08d" % self._pending_dict[0], self._pending_dict[1], db=shared.dbs[b"dicts"])
                    result = fn(txn)
                self._pending_dict = None
                return result

            with shared.write_lock:
                result = self._with_growth(attempt)
                shared.trimmer.after_write(env)
                return result

    # ------------------------------------------------------------------ meta and dictionaries
    def _read_meta(self) -> Dict[str, Any]:
        def read(txn):
            out = {}
            for k, v in txn.cursor(db=self._db(b"meta")):
                try:
                    out[_decode_key(k)] = msgspec.json.decode(v)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    raise StoreCorruptError(f"graph store {str(self.path)!r} is damaged: meta entry {bytes(k)!r} cannot be decoded") from None
            return out

        return self._read(read)

    @property
    def meta(self) -> Dict[str, Any]:
        """Store metadata: format version, creation time, gbc version, and what runs recorded."""
        return self._read_meta()

    def update_meta(self, values: Dict[str, Any]) -> None:
        """Set (replace) top-level meta entries; values must be JSON-serialisable."""
        encoded = [(_encode_key(k), msgspec.json.encode(v)) for k, v in values.items()]

        def write(txn):
            for k, v in encoded:
                txn.put(k, v, db=self._db(b"meta"))

        self._write(write)

    def _load_dictionary(self, dict_id: int) -> Optional[bytes]:
        return self._read(lambda txn: txn.get(b"%08d" % dict_id, db=self._db(b"dicts")))

    def _load_writer_dictionary(self) -> None:
        if self.readonly:
            return
        def latest(txn):
            cur = txn.cursor(db=self._db(b"dicts"))
            return (bytes(cur.key()), bytes(cur.value())) if cur.last() else None

        found = self._read(latest)
        if found is not None:
            dict_id = int(found[0])
            self._codec.add_dictionary(dict_id, found[1])
            self._codec.use_dictionary(dict_id)

    def _pack_graph(self, key: bytes, payload: bytes, mode: int, txn) -> bytes:
        """The stored value of a graph payload. Early payloads are also kept as samples; once
        there are enough, a zstd dictionary is trained for the store and the graphs written
        before it are re-compressed (so they are as small as later ones)."""
        value = self._codec.pack(payload, mode)
        if self._codec.dictionary_id is not None or self._dict_train_samples <= 0:
            return value
        self._samples.append((key, payload, mode, value))
        if len(self._samples) < self._dict_train_samples:
            return value
        try:
            data = self._codec.train_dictionary([p for _, p, _, _ in self._samples], DICT_SIZE)
        except Exception:  # zstd refuses too few or too uniform samples: keep plain zstd
            self._samples = []
            self._dict_train_samples = 0
            return value
        db = self._db(b"dicts")
        cur = txn.cursor(db=db)
        dict_id = int(bytes(cur.key())) + 1 if cur.last() else 1
        txn.put(b"%08d" % dict_id, data, db=db)
        # Until this txn commits, every retry must write the dictionary again (see _write).
        self._pending_dict = (dict_id, data)
        self._codec.add_dictionary(dict_id, data)
        self._codec.use_dictionary(dict_id)
        graphs = self._db(b"graphs")
        for old_key, old_payload, old_mode, old_value in self._samples[:-1]:
            # Only values that are still what this session wrote (not replaced or deleted since).
            if txn.get(old_key, db=graphs) == old_value:
                txn.put(old_key, self._codec.pack(old_payload, old_mode), db=graphs)
        self._samples = []
        return self._codec.pack(payload, mode)

    # ------------------------------------------------------------------ reading
    def _decode_graph(self, key: str, value: bytes) -> GbcGraph:
        try:
            return self._codec.decode_graph(value)
        except ValueDecodeError as exc:
            raise StoreCorruptError(f"graph {key!r} in store {str(self.path)!r} cannot be decoded: {exc}") from None

    def _get_raw(self, dbname: bytes, key: bytes) -> Optional[bytes]:
        value = self._read(lambda txn: txn.get(key, db=self._db(dbname)))
        if value is not None:
            self._shared.trimmer.add(len(value))
        return value

    def __len__(self) -> int:
        return self._read(lambda txn: txn.stat(self._db(b"graphs"))["entries"])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._get_raw(b"graphs", _encode_key(key)) is not None

    def __getitem__(self, key: str) -> GbcGraph:
        value = self._get_raw(b"graphs", _encode_key(key))
        if value is None:
            raise KeyError(key)
        return self._decode_graph(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def _scan_chunks(self, dbname: bytes, keys_only: bool = False) -> Iterator[List[Tuple[bytes, Optional[bytes]]]]:
        """Raw ``(key bytes, value)`` rows in key order, one list per short read transaction
        of ITER_CHUNK rows."""
        after: Optional[bytes] = None
        while True:

            def chunk(txn, after=after):
                cur = txn.cursor(db=self._db(dbname))
                ok = cur.set_range(after) if after is not None else cur.first()
                if ok and after is not None and cur.key() == after:
                    ok = cur.next()
                rows = []
                while ok and len(rows) < ITER_CHUNK:
                    rows.append((cur.key(), None if keys_only else cur.value()))
                    ok = cur.next()
                return rows

            rows = self._read(chunk)
            if not rows:
                return
            if not keys_only:
                self._shared.trimmer.add(sum(len(v) for _, v in rows))
            yield rows
            after = rows[-1][0]

    def _scan(self, dbname: bytes, keys_only: bool = False) -> Iterator[Tuple[str, bytes]]:
        """Raw ``(key, value)`` pairs in key order, read in short transactions of ITER_CHUNK."""
        for rows in self._scan_chunks(dbname, keys_only):
            for k, v in rows:
                yield _decode_key(k), v

    def _graph_items(self, on_damaged: Optional[Callable[[str, str], None]] = None) -> Iterator[Tuple[str, GbcGraph]]:
        """``(key, graph)`` in key order. Each chunk of values is decompressed before its graphs
        are parsed: one loop of zstd then one of pydantic keeps each one's tables and code in
        the CPU caches (measured: decompression costs a third less than interleaved)."""
        unpack, decode = self._codec.unpack, self._codec.decode_payload
        for rows in self._scan_chunks(b"graphs"):
            unpacked: List[Any] = []
            for _, value in rows:
                try:
                    unpacked.append(unpack(value))
                except ValueDecodeError as exc:  # reported when iteration reaches this key
                    unpacked.append(exc)
            for (k, _), item in zip(rows, unpacked):
                key = _decode_key(k)
                try:
                    if isinstance(item, ValueDecodeError):
                        raise item
                    graph = decode(*item)
                except ValueDecodeError as exc:
                    message = f"graph {key!r} in store {str(self.path)!r} cannot be decoded: {exc}"
                    if on_damaged is None:
                        raise StoreCorruptError(message) from None
                    on_damaged(key, message)  # listed by the caller; iteration goes on
                    continue
                yield key, graph

    def key_page(self, table: Literal["graphs", "status"] = "graphs", after: Optional[str] = None,
                 before: Optional[str] = None, limit: int = 50) -> List[str]:
        """Up to ``limit`` keys of ``table`` in key order: the first ones strictly after ``after``
        (from the start when None), or with ``before`` the last ones strictly before it. One
        cursor walk of ``limit`` rows: paging a store of millions never lists every key."""
        dbname = {"graphs": b"graphs", "status": b"status"}[table]

        def walk(txn):
            cur = txn.cursor(db=self._db(dbname))
            keys: List[bytes] = []
            if before is not None:
                # set_range lands on the first key >= before; the one before it is the start.
                ok = cur.prev() if cur.set_range(_encode_key(before)) else cur.last()
                while ok and len(keys) < limit:
                    keys.append(cur.key())
                    ok = cur.prev()
                keys.reverse()
                return keys
            ok = cur.set_range(_encode_key(after)) if after is not None else cur.first()
            if ok and after is not None and cur.key() == _encode_key(after):
                ok = cur.next()
            while ok and len(keys) < limit:
                keys.append(cur.key())
                ok = cur.next()
            return keys

        return [_decode_key(k) for k in self._read(walk)]

    @property
    def last_txn(self) -> int:
        """Id of the last committed write transaction (of any process): changes whenever the store does."""
        with _envs.GATE:
            return int(self._env().info()["last_txnid"])

    def _status_rows(self) -> Iterator[Tuple[bytes, Optional[bytes]]]:
        """``(key bytes, status value)`` for every key with a status record or a graph, in key
        order; the value is ``None`` for a graph stored without a record (older stores)."""
        statuses = (row for rows in self._scan_chunks(b"status") for row in rows)
        graphs = (k for rows in self._scan_chunks(b"graphs", keys_only=True) for k, _ in rows)
        status, graph = next(statuses, None), next(graphs, None)
        while status is not None or graph is not None:
            if graph is None or (status is not None and status[0] <= graph):
                if graph is not None and status[0] == graph:
                    graph = next(graphs, None)
                yield status
                status = next(statuses, None)
            else:
                yield graph, None
                graph = next(graphs, None)

    def _keys_with_status(self, status: str) -> Iterator[str]:
        code = _status_code(status)
        done = code == _STATUS_CODES["done"]
        for k, v in self._status_rows():
            if (v is None and done) or (v is not None and v[:1] == code):
                yield _decode_key(k)

    def keys(self, status: Optional[StatusName] = None) -> Iterator[str]:
        """Image keys in order: of stored graphs, or of images whose status is ``status``
        (``done``: every key holding a graph, whatever wrote it)."""
        if status is None:
            return (k for k, _ in self._scan(b"graphs", keys_only=True))
        return self._keys_with_status(status)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def values(self) -> Iterator[GbcGraph]:
        """Graphs in key order (read in short transactions: writes made meanwhile may show up)."""
        return (graph for _, graph in self._graph_items())

    def items(self, on_damaged: Optional[Callable[[str, str], None]] = None) -> Iterator[Tuple[str, GbcGraph]]:
        """``(key, graph)`` in key order. A value that cannot be decoded raises
        ``StoreCorruptError``, or with ``on_damaged`` is passed to it as ``(key, message)`` and
        skipped, so that every damaged graph can be listed."""
        return self._graph_items(on_damaged)

    def raw_items(self) -> Iterator[Tuple[str, bytes]]:
        """``(key, stored value)`` pairs in this store's own encoding (values may refer to this
        store's compression dictionary: to move graphs to another store use ``copy_from``)."""
        return self._scan(b"graphs")

    def status(self, key: str) -> Optional[StatusRecord]:
        """The status record of ``key`` (a graph stored without one reads as ``done``,
        origin ``imported``), or ``None`` for a key the store knows nothing of."""
        k = _encode_key(key)

        def read(txn):
            value = txn.get(k, db=self._db(b"status"))
            if value is None and txn.get(k, db=self._db(b"graphs")) is not None:
                return _LEGACY_DONE.model_copy()
            return value

        value = self._read(read)
        if value is None or isinstance(value, StatusRecord):
            return value
        return self._decode_status(key, value)

    def status_origins(self, keys: Iterable[str]) -> List[Optional[Tuple[str, Optional[str]]]]:
        """``(status, origin)`` of each key, or None for a key without a status, read in one
        transaction and decoded partly (what resuming a run over millions of inputs asks)."""
        encoded = [_encode_key(k) for k in keys]

        def read(txn):
            db, graphs = self._db(b"status"), self._db(b"graphs")
            # a graph stored without a status record (older stores) is done and imported
            return [txn.get(k, db=db) or (_LEGACY_DONE if txn.get(k, db=graphs) is not None else None)
                    for k in encoded]

        out: List[Optional[Tuple[str, Optional[str]]]] = []
        for key, value in zip(encoded, self._read(read)):
            if value is None:
                out.append(None)
                continue
            if value is _LEGACY_DONE:
                out.append(("done", IMPORTED))
                continue
            try:
                lite = _STATUS_LITE(value[1:])
            except msgspec.DecodeError as exc:
                raise StoreCorruptError(f"status of {_decode_key(key)!r} in store {str(self.path)!r} cannot be "
                                        f"decoded: {exc}") from None
            out.append((lite.status, lite.origin))
        return out

    def statuses(self) -> Iterator[Tuple[str, StatusRecord]]:
        """``(key, StatusRecord)`` for every image with a status or a graph, in key order."""
        for k, v in self._status_rows():
            key = _decode_key(k)
            yield key, (_LEGACY_DONE.model_copy() if v is None else self._decode_status(key, v))

    def count(self, status: Optional[StatusName] = None) -> int:
        """Number of graphs (``status=None``) or of images with that status (a scan of the
        status records and the graph keys; ``count("done")`` equals ``len(store)``)."""
        if status is None:
            return len(self)
        return sum(1 for _ in self._keys_with_status(status))

    def _decode_status(self, key: str, value: bytes) -> StatusRecord:
        try:
            return StatusRecord.model_validate_json(value[1:])
        except ValueError as exc:
            raise StoreCorruptError(f"status of {key!r} in store {str(self.path)!r} cannot be decoded: {exc}") from None

    def get_provenance(self, key: str) -> Optional[Dict[str, Any]]:
        """The provenance dict recorded for ``key`` (raw model answers, backend specs, ...), or None."""
        value = self._get_raw(b"provenance", _encode_key(key))
        if value is None:
            return None
        try:
            return self._codec.decode_json(value)
        except ValueDecodeError as exc:
            raise StoreCorruptError(f"provenance of {key!r} in store {str(self.path)!r} cannot be decoded: {exc}") from None

    # ------------------------------------------------------------------ writing
    def _graph_value(self, graph: GbcGraph, txn, key: bytes) -> bytes:
        _check_graph(graph)
        payload, mode = self._codec.graph_payload(graph)
        return self._pack_graph(key, payload, mode, txn)

    def _put_in(self, txn, key: bytes, graph: GbcGraph, provenance: Optional[Dict[str, Any]]) -> None:
        _put_sorted(txn, self._db(b"graphs"), key, self._graph_value(graph, txn, key))
        if provenance is not None:
            txn.put(key, self._codec.encode_json(provenance), db=self._db(b"provenance"))

    def put(self, key: str, graph: GbcGraph, provenance: Optional[Dict[str, Any]] = None) -> None:
        """Store ``graph`` under ``key`` as given: its status becomes ``done`` with origin
        ``imported`` (an annotation run commits with ``commit_image`` instead)."""
        k = _encode_key(key)
        record = _imported_value()

        def write(txn):
            self._put_in(txn, k, graph, provenance)
            txn.put(k, record, db=self._db(b"status"))

        self._write(write)

    def put_many(self, items: Iterable[Tuple], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Store ``(key, graph)`` or ``(key, graph, provenance)`` items, ``batch_size`` per transaction.

        Like ``put``, each key's status becomes ``done`` with origin ``imported`` (in the same
        transaction as its graph), so a run resuming into this store never annotates it again.

        Each graph is serialised as soon as it arrives (while its objects are still in the CPU
        caches, and so that the batch holds bytes rather than thousands of live objects); a
        batch is compressed and written in one transaction, in key order. Every transaction is
        committed durably, like ``put``: items of a batch that was not committed yet when an
        error is raised are not written.
        """
        total = 0
        batch: List[Tuple[bytes, bytes, int, Optional[bytes]]] = []
        codec = self._codec
        for item in items:
            key, graph = _encode_key(item[0]), item[1]
            _check_graph(graph)
            payload, mode = codec.graph_payload(graph)
            provenance = item[2] if len(item) > 2 else None
            batch.append((key, payload, mode, None if provenance is None else codec.encode_json(provenance)))
            if len(batch) >= batch_size:
                total += self._put_batch(batch)
                batch = []
        if batch:
            total += self._put_batch(batch)
        return total

    def _put_batch(self, batch: List[Tuple[bytes, bytes, int, Optional[bytes]]]) -> int:
        # Key order lets LMDB append to full pages instead of splitting them (stable: the
        # last of equal keys still wins).
        batch.sort(key=_first)

        record = _imported_value()

        def write(txn):
            graphs, provenances, statuses = self._db(b"graphs"), self._db(b"provenance"), self._db(b"status")
            cur = txn.cursor(db=graphs)
            last = bytes(cur.key()) if cur.last() else None
            cur = txn.cursor(db=statuses)
            last_status = bytes(cur.key()) if cur.last() else None
            for key, payload, mode, provenance in batch:
                value = self._pack_graph(key, payload, mode, txn)
                if last is None or key > last:
                    txn.put(key, value, db=graphs, append=True)
                    last = key
                else:
                    txn.put(key, value, db=graphs)
                if last_status is None or key > last_status:
                    txn.put(key, record, db=statuses, append=True)
                    last_status = key
                else:
                    txn.put(key, record, db=statuses)
                if provenance is not None:
                    txn.put(key, provenance, db=provenances)
            return len(batch)

        return self._write(write)

    def commit_image(self, key: str, graph: GbcGraph, provenance: Optional[Dict[str, Any]] = None, attempts: int = 1,
                     origin: Optional[str] = None) -> None:
        """Write the graph, a ``done`` status and the provenance of one image in ONE transaction."""
        k = _encode_key(key)
        _check_graph(graph)
        record = StatusRecord(
            status="done",
            attempts=attempts,
            time=time.time(),
            counts={"vertices": graph.n_vertices, "edges": graph.n_edges, "captions": graph.n_captions},
            origin=origin,
        )

        def write(txn):
            self._put_in(txn, k, graph, provenance)
            txn.put(k, _STATUS_CODES["done"] + record.model_dump_json().encode(), db=self._db(b"status"))

        self._write(write)

    def commit_images(self, items: Iterable[Tuple], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """``commit_image`` for many ``(key, graph)``, ``(key, graph, provenance)`` or
        ``(key, graph, provenance, origin)`` items:
        each batch of ``batch_size`` images (graph, ``done`` status, provenance) is ONE
        transaction, so an image is either wholly committed or not at all. Returns the count."""
        total = 0
        batch: List[Tuple] = []

        def write(txn):
            for key, graph, provenance, origin in batch:
                self._put_in(txn, key, graph, provenance)
                record = StatusRecord(status="done", attempts=1, time=time.time(), counts={
                    "vertices": graph.n_vertices, "edges": graph.n_edges, "captions": graph.n_captions},
                    origin=origin)
                txn.put(key, _STATUS_CODES["done"] + record.model_dump_json().encode(), db=self._db(b"status"))

        for item in items:
            _check_graph(item[1])
            batch.append((_encode_key(item[0]), item[1], item[2] if len(item) > 2 else None,
                          item[3] if len(item) > 3 else None))
            if len(batch) >= batch_size:
                self._write(write)
                total += len(batch)
                batch = []
        if batch:
            self._write(write)
            total += len(batch)
        return total

    def write_records(self, records: Iterable[Tuple[str, Optional[GbcGraph], Optional[Dict[str, Any]], StatusRecord]]) -> int:
        """Write ``(key, graph or None, provenance or None, status record)`` as given, all in ONE
        transaction (``gbc salvage`` rebuilding a store). A ``done`` record needs its graph."""
        encoded = []
        for key, graph, provenance, record in records:
            if record.status == "done" and graph is None:
                raise StoreError(f"the done record of {key!r} has no graph")
            if graph is not None:
                _check_graph(graph)
            encoded.append((_encode_key(key), graph, provenance,
                            _STATUS_CODES[record.status] + record.model_dump_json().encode()))

        def write(txn):
            for k, graph, provenance, status in encoded:
                if graph is not None:
                    self._put_in(txn, k, graph, provenance)
                elif provenance is not None:
                    txn.put(k, self._codec.encode_json(provenance), db=self._db(b"provenance"))
                txn.put(k, status, db=self._db(b"status"))
            return len(encoded)

        return self._write(write)

    def mark_failed(
        self,
        key: str,
        reason: str,
        error_type: Optional[str] = None,
        attempts: int = 1,
        provenance: Optional[Dict[str, Any]] = None,
        origin: Optional[str] = None,
    ) -> None:
        """Record that ``key`` failed (one transaction). Any graph stored under ``key`` is removed,
        so a key's graph and its status never disagree."""
        k = _encode_key(key)
        record = StatusRecord(status="failed", reason=reason, error_type=error_type, attempts=attempts, time=time.time(),
                              origin=origin)

        def write(txn):
            txn.delete(k, db=self._db(b"graphs"))
            txn.put(k, _STATUS_CODES["failed"] + record.model_dump_json().encode(), db=self._db(b"status"))
            if provenance is not None:
                txn.put(k, self._codec.encode_json(provenance), db=self._db(b"provenance"))

        self._write(write)

    def delete(self, key: str) -> bool:
        """Remove the graph, status and provenance of ``key``; True if anything was removed."""
        k = _encode_key(key)

        def write(txn):
            return any([txn.delete(k, db=self._db(name)) for name in (b"graphs", b"status", b"provenance")])

        return self._write(write)

    def copy_from(self, other: "GraphStore", overwrite: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Copy every graph, status and provenance of ``other`` into this store (merging shards).

        Values are re-compressed for this store without being parsed into graphs, so a merge
        runs at LMDB speed. With ``overwrite=False`` keys already here are kept. Returns the
        number of graphs copied.
        """
        copied = 0
        for dbname in (b"graphs", b"status", b"provenance"):
            batch: List[Tuple[bytes, bytes]] = []
            for key, value in other._scan(dbname):
                batch.append((_encode_key(key), value))
                if len(batch) >= batch_size:
                    copied += self._copy_batch(other, dbname, batch, overwrite)
                    batch = []
            if batch:
                copied += self._copy_batch(other, dbname, batch, overwrite)
        return copied

    def _copy_batch(self, other: "GraphStore", dbname: bytes, batch: List[Tuple[bytes, bytes]], overwrite: bool) -> int:
        """Write values of ``other``'s ``dbname`` here; returns how many graphs were written."""
        unpacked = []
        for key, value in batch:
            if dbname == b"status":  # status records are not compressed
                unpacked.append((key, value, None))
                continue
            try:
                unpacked.append((key, *other._codec.unpack(value)))
            except ValueDecodeError as exc:
                raise StoreCorruptError(
                    f"{dbname.decode()} of {_decode_key(key)!r} in store {str(other.path)!r} cannot be decoded: {exc}"
                ) from None

        def write(txn):
            db = self._db(dbname)
            written = 0
            for key, payload, mode in unpacked:
                if not overwrite and txn.get(key, db=db) is not None:
                    continue
                if dbname == b"graphs":
                    _put_sorted(txn, db, key, self._pack_graph(key, payload, mode, txn))
                    written += 1
                else:
                    txn.put(key, payload if mode is None else self._codec.pack(payload, mode), db=db)
            return written

        return self._write(write)

    def sync(self) -> None:
        """Flush to disk (commits are already durable; this matters only for custom LMDB flags)."""
        with _envs.GATE:
            self._env().sync(True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _envs.GATE:
            # An environment closed for a fork, or inherited from the parent, is not ours to release.
            if self._shared is not None and self._pid == os.getpid() and self._generation == _envs.GENERATION:
                _envs.release_env(self._key, self._shared)
            self._shared = None

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the registry may already be gone
            pass

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        return f"GraphStore({str(self.path)!r}, {mode})"


def _put_sorted(txn, db, key: bytes, value: bytes) -> None:
    """Put, appending when ``key`` sorts after every key: LMDB then fills pages completely
    instead of splitting them in half, which halves the file of a store written in key order."""
    cur = txn.cursor(db=db)
    if not cur.last() or key > cur.key():
        txn.put(key, value, db=db, append=True)
    else:
        txn.put(key, value, db=db)


def _first(item: Tuple) -> Any:
    return item[0]


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, GbcGraph):
        raise TypeError(f"expected a GbcGraph, got {type(graph).__name__}")


def _status_code(status: str) -> bytes:
    try:
        return _STATUS_CODES[status]
    except KeyError:
        raise StoreError(f"unknown status {status!r}; expected 'done' or 'failed'") from None
