"""The pass web service's two hottest reads, one statement each and no transaction around it.

The service answers ``pass_state`` and ``serials_updated_since`` through these; the web app asks
the service (it has no database access of its own).

Devices ask "has my pass changed?" (the 304 path) and "which of my passes changed?" (the serials
list) far more often than anything changes. Through the store's ``read()`` each of these costs a
pool checkout, ``BEGIN``, the query and ``ROLLBACK``: on SQLite four hops to aiosqlite's thread,
on PostgreSQL three round trips. A single ``SELECT`` is its own consistent snapshot, so here it
runs alone:

* SQLite: on a read-only (``query_only``) :mod:`sqlite3` connection of this process, directly on
  the event loop. The queries are indexed lookups of a few rows (tens of microseconds, less than
  one hop to another thread); in WAL mode a reader never waits for a writer. Should SQLite still
  say busy or locked (e.g. while another process recovers the WAL), the query goes through the
  store instead.
* PostgreSQL (asyncpg): on a connection from the store's own pool (same settings, e.g. a
  ``search_path``), with asyncpg's prepared statement and no transaction: one round trip.
* Anything else: through ``store.read()``.

The statements are SQLAlchemy Core, compiled once for the store's dialect, so the column types
(e.g. SQLite's text timestamps) are converted exactly as the store converts them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.util import greenlet_spawn

from . import changes
from .devices import REGISTERED_SERIALS, REGISTERED_SERIALS_SINCE
from .schema import cards, utc

if TYPE_CHECKING:
    from .store import Store

#: How long a SQLite read may wait for a lock before it goes through the store instead (it runs
#: on the event loop, so it must not wait long; in WAL mode it practically never waits).
SQLITE_READ_TIMEOUT_S = 0.05
#: PostgreSQL: how long the serials read waits for a committed change to fall below the visible
#: horizon (see :meth:`HotReads.registered_serials`); longer-running transactions delay it more.
SERIALS_SETTLE_WAIT_S = 2.0

# Deleted cards are included: their pass is still served (voided) so devices learn of it, as
# StampService.card_for_pass does; ``updated_at`` is its Last-Modified too.
#
# No existence oracle: the card at or after the serial in key order, the serial clamped to the
# last card's (``SELECT max(serial)``, one seek to the end of the index), so a known and an
# unknown serial, wherever it sorts, cost the same: two index seeks and ONE row read and
# converted. The caller tells them apart by the serial it gets back, after comparing the token.
# (Without the clamp a serial sorting after every card would read no row: timing would tell
# "sorts last", and bisecting on that finds the last card's serial.)
_STATE_COLUMNS = (cards.c.serial, cards.c.authentication_token, cards.c.updated_at)


def _pass_state_query(dialect: str) -> sa.Select[Any]:
    last = sa.select(sa.func.max(cards.c.serial)).scalar_subquery()
    given = sa.bindparam("serial", type_=cards.c.serial.type)
    if dialect == "postgresql":
        probe: sa.ColumnElement[Any] = sa.func.least(given, last)  # skips NULL: no cards, no row
    else:
        # SQLite's scalar min(). Through substr(..., 1) the seek key is a fresh text either way:
        # seeking with the value min() took from the subquery measured ~50 ns slower than with
        # the one it took from the parameter (bench_oracle's "last" row), for the same card.
        probe = sa.func.substr(sa.func.min(given, last), 1)
    return (
        sa.select(*_STATE_COLUMNS).where(cards.c.serial >= probe).order_by(cards.c.serial).limit(1)
    )


Row = Sequence[Any]


class _Compiled:
    """One statement as the driver takes it: SQL text, parameter order, column converters."""

    def __init__(self, statement: sa.Select[Any], dialect: sa.Dialect) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Parameters the statement binds itself (e.g. SQLite's LIMIT/OFFSET values).
        self.defaults: dict[str, Any] = dict(compiled.params)
        converters: list[Callable[[Any], Any] | None] = []
        for column in statement.selected_columns:
            converters.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
        self.converters = converters

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.defaults[name] for name in self.names]

    def convert(self, row: Row) -> tuple[Any, ...]:
        return tuple(
            value if convert is None else convert(value)
            for convert, value in zip(self.converters, row, strict=True)
        )


class HotReads:
    """The pass state and the registered serials of a device, read as cheaply as the store
    allows (see the module documentation). ``direct=False``: always through ``store.read()``."""

    def __init__(self, store: Store, *, direct: bool = True) -> None:
        self.store = store
        dialect = store.engine.dialect
        self._kind = "store"
        if direct and dialect.name == "sqlite" and store.engine.url.database:
            self._kind = "sqlite"
        elif direct and dialect.name == "postgresql" and dialect.driver == "asyncpg":
            self._kind = "postgresql"
        self._sqlite_path = store.engine.url.database
        self._sqlite: sqlite3.Connection | None = None
        self._pass_state = _Compiled(_pass_state_query(dialect.name), dialect)
        # Whether each tag is below the visible horizon, read in the same statement (one
        # snapshot): only those are listed, so a change not yet visible has a tag above every
        # listed one (store/changes.py).
        final = changes.visible_below(cards.c.change_tag, dialect.name)
        serials, since = REGISTERED_SERIALS, REGISTERED_SERIALS_SINCE
        if final is not None:
            serials = serials.add_columns(final.label("final"))
            since = since.add_columns(final.label("final"))
        self._serials = _Compiled(serials, dialect)
        self._serials_since = _Compiled(since, dialect)

    async def pass_state(self, serial: str) -> tuple[str, datetime] | None:
        """(authentication token, last change) of a card's pass; None when there is no card."""
        found = await self.pass_state_or_stand_in(serial)
        if found is None or not found[0]:
            return None
        return found[1], found[2]

    async def pass_state_or_stand_in(self, serial: str) -> tuple[bool, str, datetime] | None:
        """(known, token, last change): the card's pass state, or (False, ...) with another
        card's as a stand-in read at the same cost (see ``_pass_state_query``), so a caller can
        do the same work for an unknown serial. None only when the store has no cards."""
        rows = await self._fetch(self._pass_state, {"serial": serial})
        if not rows:  # no cards at all
            return None
        found, token, updated_at = rows[0]
        last_modified = utc(updated_at)
        assert last_modified is not None  # the column is NOT NULL
        return found == serial, token, last_modified

    async def registered_serials(
        self, device: str, pass_type: str, since: int | None
    ) -> list[tuple[str, int]]:
        """(serial, change tag) of the device's registered passes of ``pass_type``, by serial;
        only those changed after ``since`` when given.

        On PostgreSQL only tags below the visible horizon are listed (so the largest listed
        tag is a safe ``lastUpdated``). A change that is committed but not yet below it (an
        older transaction anywhere on the server is still running) is waited for, up to
        :data:`SERIALS_SETTLE_WAIT_S`, so a device asking right after a change finds it; past
        that it is left for the device's next request (its tag is above the ``lastUpdated``
        handed out, so it is never lost)."""
        params: dict[str, Any] = {"device": device, "pass_type": pass_type}
        if since is None:
            query = self._serials
        else:
            query, params["since"] = self._serials_since, since
        if self.store.engine.dialect.name != "postgresql":
            return await self._fetch(query, params)
        waited, pause = 0.0, 0.005
        while True:
            rows = await self._fetch(query, params)
            if all(final for _, _, final in rows) or waited >= SERIALS_SETTLE_WAIT_S:
                return [(serial, tag) for serial, tag, final in rows if final]
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.1)

    @property
    def path(self) -> str:
        """How the reads are made: ``sqlite``, ``postgresql`` (direct) or ``store``."""
        return self._kind

    def close(self) -> None:
        """Close the SQLite connection, if one was opened (the store's pool is the store's)."""
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    # -- by backend ---------------------------------------------------------------------------

    async def _fetch(self, query: _Compiled, params: dict[str, Any]) -> list[Any]:
        if self._kind == "sqlite":
            try:
                rows = self._sqlite_connection().execute(query.sql, query.args(params)).fetchall()
            except sqlite3.OperationalError:  # busy or locked: let the store's path wait
                return await self._via_store(query, params)
            return [query.convert(row) for row in rows]
        if self._kind == "postgresql":
            return await self._via_asyncpg(query, params)
        return await self._via_store(query, params)

    def _sqlite_connection(self) -> sqlite3.Connection:
        if self._sqlite is None:
            assert self._sqlite_path is not None
            conn = sqlite3.connect(
                self._sqlite_path,
                timeout=SQLITE_READ_TIMEOUT_S,
                isolation_level=None,  # autocommit: each SELECT is its own snapshot
                check_same_thread=False,  # used from whichever thread runs the event loop
            )
            conn.execute("PRAGMA query_only=ON")
            # The app has no shutdown hook of its own: close the connection with this object.
            weakref.finalize(self, conn.close)
            self._sqlite = conn
        return self._sqlite

    async def _via_asyncpg(self, query: _Compiled, params: dict[str, Any]) -> list[Any]:
        pooled = await self.store.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None
            # No transaction was begun on this connection, so returning it costs no ROLLBACK.
            rows = await driver.fetch(query.sql, *query.args(params))
        except BaseException:
            pooled.invalidate()  # its state is unknown (e.g. cancelled mid-query)
            raise
        finally:
            await greenlet_spawn(pooled.close)
        return [query.convert(tuple(row)) for row in rows]

    async def _via_store(self, query: _Compiled, params: dict[str, Any]) -> list[Any]:
        async with self.store.read() as conn:
            result = await conn.execute(query.statement, params)
            return [tuple(row) for row in result]
