"""One LMDB store directory: opening or creating it, checking it, its meta, and transactions.

``LmdbBase`` is what ``GraphStore`` is built on: it opens this process's shared environment
(``gbc.store.lmdb_env``) lazily again after a fork, creates the sub-databases and the first
meta of a new store in one transaction, refuses files that are not a complete store, runs
read transactions that follow a map grown by another process and write transactions that
grow the map when it is full, and keeps the store's value codec and its zstd dictionaries
(``gbc.store.dictionaries``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import msgspec

from gbc.store import health as _health
from gbc.store import lmdb_env as _envs
from gbc.store.codec import ValueCodec
from gbc.store.dictionaries import DICT_TRAIN_SAMPLES, StoreDictionaries, dict_key
from gbc.store.lmdb_env import SUBDBS as _SUBDBS
from gbc.store.lmdb_env import StoreCorruptError, StoreError

#: Layout version of the store as a whole (sub-databases and meta keys).
STORE_FORMAT_VERSION = 1
#: Initial map size of a new store. The file grows only as pages are used; the map doubles
#: whenever a write does not fit.
DEFAULT_MAP_SIZE = 1 << 30
#: Largest map a store grows to before giving up (1 TiB).
MAX_MAP_SIZE = 1 << 40
#: Reader slots of the environment (LMDB's default is 126).
MAX_READERS = 256
#: LMDB keys are limited to 511 bytes.
MAX_KEY_BYTES = 511


def encode_key(key: Union[str, bytes]) -> bytes:
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not data:
        raise StoreError("image keys must not be empty")
    if len(data) > MAX_KEY_BYTES:
        raise StoreError(f"image key is {len(data)} bytes long; LMDB keys are limited to {MAX_KEY_BYTES} bytes")
    return data


class AppendingPuts:
    """Puts into one table inside one write transaction, appending while keys come after every
    key the table holds: LMDB then fills pages completely instead of splitting them in half,
    which halves the file of a store written in key order. Other keys are put as usual."""

    __slots__ = ("_txn", "_db", "_last")

    def __init__(self, txn, db):
        self._txn, self._db = txn, db
        cur = txn.cursor(db=db)
        self._last: Optional[bytes] = bytes(cur.key()) if cur.last() else None

    def put(self, key: bytes, value: bytes) -> None:
        if self._last is None or key > self._last:
            self._txn.put(key, value, db=self._db, append=True)
            self._last = key
        else:
            self._txn.put(key, value, db=self._db)


def decode_key(data: bytes) -> str:
    return bytes(data).decode("utf-8")


#: Meta entry of a store in which every graph has a status record and every ``done`` record a
#: graph (each written in the same transaction). Stores created before every write recorded a
#: status lack it: their graphs without a record are found by walking the graphs table too.
STATUSES_COMPLETE = "statuses_complete"


def first_meta() -> Dict[str, Any]:
    """The meta entries a new store starts with."""
    from gbc._version import __version__

    now = time.time()
    return {"format_version": STORE_FORMAT_VERSION, "created": now,
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "gbc_version": __version__,
            STATUSES_COMPLETE: True}


class LmdbBase:
    """Environment, sub-databases, meta and transactions of one store (see the module doc)."""

    def __init__(
        self,
        path: Union[str, os.PathLike],
        readonly: bool = True,
        map_size: Optional[int] = None,
        *,
        compression_level: int = 3,
        dict_train_samples: int = DICT_TRAIN_SAMPLES,
        max_readers: int = MAX_READERS,
        readahead: bool = False,
    ):
        self.path = Path(path)
        self.readonly = readonly
        # The kernel reads ahead of each page a miss brings in: what a walk of the whole store
        # (a merge's sources) wants, and what random lookups of a store larger than RAM do not.
        self._readahead = readahead
        self._key = os.path.realpath(self.path)
        self._map_size = int(map_size) if map_size else DEFAULT_MAP_SIZE
        self._max_readers = max_readers
        self._codec = ValueCodec(compression_level, load_dictionary=self._load_dictionary)
        self._dictionaries = StoreDictionaries(self._codec, dict_train_samples)
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
        self._shared = _envs.acquire_env(self._key, self.readonly, self._map_size, self._max_readers,
                                         readahead=self._readahead)
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
        handles = {}
        with shared.env.begin(write=True) as txn:
            for name in _SUBDBS:
                handles[name] = shared.env.open_db(name, txn=txn, create=True)
            if txn.stat(handles[b"meta"])["entries"] == 0:
                for k, v in first_meta().items():
                    txn.put(encode_key(k), msgspec.json.encode(v), db=handles[b"meta"])
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
        # A new store's first meta is written with its sub-databases (``_create_subdbs``);
        # a store without it is damaged.
        meta = self._read_meta()
        version = meta.get("format_version")
        if version is None:
            raise StoreCorruptError(f"graph store {str(self.path)!r} is damaged: its meta has no format_version")
        if not isinstance(version, int) or version < 1 or version > STORE_FORMAT_VERSION:
            raise StoreCorruptError(
                f"graph store {str(self.path)!r} has format version {version!r}; this gbc reads versions 1..{STORE_FORMAT_VERSION}"
            )
        self.statuses_complete = meta.get(STATUSES_COMPLETE) is True

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
                    # A dictionary trained in an attempt that was rolled back: write it again.
                    self._dictionaries.rewrite_pending(txn, shared.dbs[b"dicts"])
                    result = fn(txn)
                self._dictionaries.committed()
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
                    out[decode_key(k)] = msgspec.json.decode(v)
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
        encoded = [(encode_key(k), msgspec.json.encode(v)) for k, v in values.items()]

        def write(txn):
            for k, v in encoded:
                txn.put(k, v, db=self._db(b"meta"))

        self._write(write)

    def _load_dictionary(self, dict_id: int) -> Optional[bytes]:
        return self._read(lambda txn: txn.get(dict_key(dict_id), db=self._db(b"dicts")))

    def _load_writer_dictionary(self) -> None:
        """A writer compresses new values with the store's latest dictionary."""
        if self.readonly:
            return

        def latest(txn):
            cur = txn.cursor(db=self._db(b"dicts"))
            return (bytes(cur.key()), bytes(cur.value())) if cur.last() else None

        found = self._read(latest)
        if found is not None:
            self._dictionaries.use(int(found[0]), found[1])

    @property
    def last_txn(self) -> int:
        """Id of the last committed write transaction (of any process): changes whenever the store does."""
        with _envs.GATE:
            return int(self._env().info()["last_txnid"])

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

    def __enter__(self):
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
        return f"{type(self).__name__}({str(self.path)!r}, {mode})"
