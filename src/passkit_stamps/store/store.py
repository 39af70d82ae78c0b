"""The Store: SQLAlchemy on SQLite (embedded default) or PostgreSQL (asyncpg).

Writers are serialised per card: on PostgreSQL with ``SELECT ... FOR UPDATE`` inside the
transaction (:func:`.cards.load_card`); on SQLite, which has one writer at a time anyway, with an
in-process asyncio lock around ``BEGIN IMMEDIATE`` (the write lock is taken at the start, so a
read-then-write transaction never fails halfway with "database is locked"), plus ``busy_timeout``
for other processes.

The service runs each transaction as ONE synchronous function (:meth:`Store.run_write`,
:meth:`Store.run_read`). On SQLite the whole function runs in a worker thread on a plain sqlite3
connection: one thread hand-off per transaction instead of three or four per statement through
aiosqlite, which was most of an operation's time. On PostgreSQL the function runs through
``AsyncConnection.run_sync`` (each statement still awaits asyncpg). :meth:`Store.write` and
:meth:`Store.read` give an async connection for everything else.

On SQLite the async engine (aiosqlite) is made on first use of :attr:`Store.engine`: opening the
store and the service's transactions need only the plain sqlite3 engine, so a command line call
never imports SQLAlchemy's asyncio extension, which imports the ORM (most of a command's start-up;
docs/architecture.md, "Start-up cost").
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from ..errors import StoreError, StoreNotFoundError
from . import changes, schema

if TYPE_CHECKING:  # imported where an async engine is made (see the module documentation)
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

#: How long a SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: SQLite ``synchronous`` levels accepted by :meth:`Store.open`.
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Threads that run SQLite read transactions side by side (WAL readers do not block).
SQLITE_READ_THREADS = 4


def normalize_url(url: str) -> str:
    """Map the accepted URL forms to async drivers.

    ``sqlite:///path/file.db`` -> ``sqlite+aiosqlite:///path/file.db``;
    ``postgresql://user@host:port/db`` (or ``postgres://``) -> ``postgresql+asyncpg://...``.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError("store URL is empty: use sqlite:///path/file.db or postgresql://...")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"not a store URL: {url!r:.80} (use sqlite:///file.db or postgresql://)")
    mapping = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
    driver = mapping.get(scheme.lower())
    if driver is None:
        raise StoreError(
            f"unsupported store URL scheme {scheme!r}: use sqlite:///file.db or postgresql://"
        )
    return f"{driver}://{rest}"


class Store:
    """An open database. Use :meth:`open`; close with :meth:`close` (or ``async with``)."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        url: str,
        connect_args: Mapping[str, Any] | None = None,
        *,
        sync_engine: sa.Engine | None = None,
        make_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        some = engine or sync_engine
        if some is None or (engine is None and make_engine is None):
            raise StoreError("a store needs an async engine, or a sync engine and make_engine")
        self._engine = engine
        #: Makes the async engine on first use of :attr:`engine` (SQLite).
        self._make_engine = make_engine
        self.url = url
        #: As given to :meth:`open` (to open the same database again).
        self.connect_args: dict[str, Any] = dict(connect_args or {})
        self.is_sqlite = some.dialect.name == "sqlite"
        self.is_postgres = some.dialect.name == "postgresql"
        #: SQLite: whether the FTS5 trigram search table exists (set by :meth:`open`).
        self.has_search_index = False
        self._write_lock = asyncio.Lock()
        #: SQLite: the plain sqlite3 engine that :meth:`run_write` / :meth:`run_read` use, the one
        #: writer thread (keeps its connection warm) and the reader threads.
        self._sync_engine = sync_engine
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        if sync_engine is not None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="pks-sqlite-write")
            self._readers = ThreadPoolExecutor(
                SQLITE_READ_THREADS, thread_name_prefix="pks-sqlite-read"
            )

    @property
    def engine(self) -> AsyncEngine:
        """The async engine, for :meth:`write`, :meth:`read` and callers that need one. On SQLite
        it is made on first use (nothing else needs it; see the module documentation)."""
        engine = self._engine
        if engine is None:
            assert self._make_engine is not None
            engine = self._engine = self._make_engine()
        return engine

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        connect_args: Mapping[str, Any] | None = None,
        pool_size: int = 10,
        sqlite_synchronous: str = "NORMAL",
        create: bool = True,
    ) -> Store:
        """Open the database at ``url``, creating or upgrading its schema.

        ``create=False`` opens for reading: a SQLite file that does not exist, a PostgreSQL
        database that does not exist, or a database without the store's tables raises
        StoreNotFoundError and nothing is created (a mistyped URL must not leave an empty store
        behind). An existing store of an older version is still upgraded.

        ``connect_args`` go to the driver (e.g. ``{"server_settings": {"search_path": "x"}}``
        for asyncpg). ``sqlite_synchronous``: SQLite's ``PRAGMA synchronous`` (NORMAL: in WAL
        mode safe against application and OS crashes, a power cut may lose the last commits;
        FULL: also durable against power loss, each commit waits for an fsync). Raises
        StoreError for a bad URL or setting, an unreachable server or a database with a newer
        schema version.
        """
        async_url = normalize_url(url)
        parsed = make_url(async_url)
        kwargs: dict[str, Any] = {"connect_args": dict(connect_args or {})}
        synchronous = str(sqlite_synchronous).upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise StoreError(
                f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                f"got {sqlite_synchronous!r:.40}"
            )
        backend = parsed.get_backend_name()
        if backend == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        else:
            if parsed.database in (None, "", ":memory:"):
                raise StoreError("SQLite needs a file: sqlite:///path/file.db (not :memory:)")
            kwargs["connect_args"].setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
            if create:
                _create_sqlite_file(url, parsed.database)
            elif not _sqlite_has_store(parsed.database):
                raise _not_found(url)
        try:
            if backend == "sqlite":
                if importlib.util.find_spec("aiosqlite") is None:  # made on first use: check now
                    raise ImportError("No module named 'aiosqlite'")
                sync_args = {**kwargs["connect_args"], "check_same_thread": False}
                sync_engine = sa.create_engine(
                    parsed.set(drivername="sqlite+pysqlite"),
                    connect_args=sync_args,
                    pool_size=SQLITE_READ_THREADS + 1,
                    max_overflow=SQLITE_READ_THREADS,
                )
                _configure_sqlite(sync_engine, synchronous)

                def make_engine() -> AsyncEngine:
                    from sqlalchemy.ext.asyncio import create_async_engine

                    engine = create_async_engine(async_url, **kwargs)
                    _configure_sqlite(engine.sync_engine, synchronous)
                    return engine

                store = cls(
                    None, url, connect_args, sync_engine=sync_engine, make_engine=make_engine
                )
            else:
                from sqlalchemy.ext.asyncio import create_async_engine

                store = cls(create_async_engine(async_url, **kwargs), url, connect_args)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"cannot use store URL {_safe(url)}: {exc}") from None

        def prepare(conn: sa.Connection) -> bool:
            """Check, create or upgrade the schema; whether the search index exists (SQLite)."""
            if not create and schema.current_version(conn) == 0:
                raise _not_found(url)
            schema.upgrade(conn)
            changes.rebase_offset(conn)  # new tags above every stored one
            return store.is_sqlite and schema.has_search_index(conn)

        try:
            store.has_search_index = await store.run_write(prepare)
        except StoreError:
            await store.close()
            raise
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            await store.close()
            if _is_missing_database(exc):
                raise _not_found(url) from None
            raise StoreError(f"cannot open store {_safe(url)}: {_first_line(exc)}") from None
        return store

    async def close(self) -> None:
        """Close every pooled connection (and, on SQLite, the worker threads)."""
        for pool in (self._writer, self._readers):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._engine is not None:
            await self._engine.dispose()

    async def run_write(self, body: Callable[[sa.Connection], T]) -> T:
        """Run ``body`` as one write transaction and return its result: committed when it
        returns, rolled back when it raises. ``body`` is synchronous and must not touch the
        event loop (on SQLite it runs in the store's writer thread)."""
        if self._sync_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(body)
        engine = self._sync_engine

        def transaction() -> T:
            with engine.connect() as conn:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                with conn.begin():
                    return body(conn)

        async with self._write_lock:
            return await asyncio.get_running_loop().run_in_executor(self._writer, transaction)

    async def run_read(self, body: Callable[[sa.Connection], T]) -> T:
        """Run ``body`` as one read transaction (a consistent snapshot) and return its result."""
        if self._sync_engine is None:
            async with self.engine.connect() as conn, conn.begin():
                return await conn.run_sync(body)
        engine = self._sync_engine

        def transaction() -> T:
            with engine.connect() as conn, conn.begin():
                return body(conn)

        return await asyncio.get_running_loop().run_in_executor(self._readers, transaction)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back on an exception."""
        if self.is_sqlite:
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                async with conn.begin():
                    yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot on SQLite WAL)."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return await self.run_read(schema.current_version)


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    """WAL, synchronous, busy_timeout, foreign keys; and let us issue BEGIN ourselves
    (pysqlite's own transaction handling would start transactions late and never IMMEDIATE)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL (the default) is safe with WAL: no corruption, and an application or OS crash
        # loses nothing; only a power cut may lose the last commits. FULL fsyncs every commit.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def _create_sqlite_file(url: str, path: str) -> None:
    """Create a new SQLite database file 0600 whatever the umask: it holds every authentication
    token and the holders' personal data. SQLite gives its -wal and -shm files the database
    file's mode (tested), so they follow. An existing file keeps its mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create store {_safe(url)}: {exc.strerror}") from None
    try:
        # The umask may have taken bits away but never adds any; fchmod makes it exact anyway.
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _sqlite_has_store(path: str) -> bool:
    """Whether ``path`` is a SQLite database with the store's tables, looked at read-only (no
    file, WAL or table is created by looking)."""
    import sqlite3

    if not os.path.isfile(path):
        return False
    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
    except sqlite3.Error:
        # Not a database at all (or unreadable): let the normal open report it.
        return True
    return found is not None


def _not_found(url: str) -> StoreNotFoundError:
    return StoreNotFoundError(
        f"no store at {_safe(url)} (nothing created): check --db / PASSKIT_STAMPS_DB, or create "
        "the store with `passkit-stamps templates publish FOLDER --db URL`"
    )


def _is_missing_database(exc: BaseException) -> bool:
    """PostgreSQL's "database does not exist" (SQLSTATE 3D000): the server cannot create it."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "3D000" or getattr(orig, "pgcode", None) == "3D000"


def _safe(url: str) -> str:
    """A URL for messages: without the password."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except (StoreError, sa.exc.ArgumentError):
        return "(unparsable URL)"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
