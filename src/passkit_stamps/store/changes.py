"""Pass change ordering: change tags, the visible horizon, and change times.

Devices learn of changes in two ways (docs/storage.md, "Change ordering"):

* the serials endpoint lists the cards whose change tag is above the device's ``lastUpdated``
  and hands out a new ``lastUpdated``: every change committed later must get a larger tag;
* the pass endpoint answers ``If-Modified-Since`` from the card's ``updated_at``: every new
  version of a card must have a later whole second than any Last-Modified a device was told.

**Tags.** SQLite has one writer at a time (``BEGIN IMMEDIATE``), so the ``change_tag`` counter
incremented inside the write transaction commits in tag order, and costs no contention.
PostgreSQL has concurrent writers, so the tag is the writing transaction's own id,
``pg_current_xact_id()`` (64 bits, never wraps), plus the ``change_tag_offset`` counter (stored
by schema step 6 so new tags are above every tag the old counter handed out, raised again by
:func:`rebase_offset` if a restore into a new cluster ever restarts the ids). No row is locked.

**Horizon (PostgreSQL).** The oldest transaction of THIS database still running when the
statement's snapshot was taken (the snapshot's running ids less those that backends of other
databases hold; the snapshot's ``xmax`` when none is left): every lower id of this database has
ended, and every transaction here that has not yet committed, now or later, has an id at or
above it. A reader lists only tags below the horizon (read in the same statement, so the same
snapshot): a change it cannot see yet always has a tag above everything it lists, so the largest
listed tag is a safe ``lastUpdated``. Transactions of other databases on the server (a bulk load,
a ``pg_dump``) never write a change here, so they no longer hold the horizon back (they did while
it was the cluster-wide ``pg_snapshot_xmin``). On SQLite the horizon is unbounded (a snapshot
never misses an earlier tag).

**Change times.** A card's new ``updated_at`` is ``max(now, previous updated_at + 1 s)``,
computed under the card's row lock: its whole second (rounded up) is always later than the
previous version's, whatever the clocks and however long the commit waited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import cards, counters, utc

#: The counters row holding the PostgreSQL tag offset (schema step 6).
OFFSET_COUNTER = "change_tag_offset"

#: The step between two versions of one card's ``updated_at`` (see :func:`next_change_time`).
CHANGE_STEP = timedelta(seconds=1)

_OFFSET = sa.select(counters.c.value).where(counters.c.name == OFFSET_COUNTER).scalar_subquery()

#: PostgreSQL: this transaction's tag (assigns the transaction id if it has none yet).
PG_TAG: sa.ColumnElement[Any] = (
    sa.literal_column("pg_current_xact_id()::text::bigint", sa.BigInteger) + _OFFSET
)
#: PostgreSQL: the oldest transaction id, in the statement's snapshot, that may still commit a
#: change here: the snapshot's running ids (``xip``, top-level ids of every database) less those
#: a backend of ANOTHER database holds (such a transaction can never write this store's tables;
#: a backend never changes database, so that reading is final however late it is made), or,
#: when none is left, the snapshot's ``xmax`` (every lower id has ended). An id not found among
#: the backends (ended meanwhile, a prepared transaction) counts: the bound only errs low.
_PG_WRITERS_XMIN = """COALESCE((
    SELECT min(running::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS running
    WHERE (running::text::bigint & 4294967295) NOT IN (
        SELECT other.backend_xid::text::bigint FROM pg_stat_get_activity(NULL) AS other
        WHERE other.backend_xid IS NOT NULL
        AND other.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))
), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"""

#: PostgreSQL: tags below this are final in the statement's snapshot (see the module docs).
#: Read it ONCE per transaction (or alone): PostgreSQL keeps the backends'
#: activity it reads for the rest of the transaction, and a later snapshot must not be judged
#: by an earlier reading.
PG_HORIZON: sa.ColumnElement[Any] = sa.literal_column(_PG_WRITERS_XMIN, sa.BigInteger) + _OFFSET

_NEXT_COUNTER = (
    counters.update()
    .where(counters.c.name == "change_tag")
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)
_PG_NEXT = sa.select(PG_TAG)


def next_change_tag(conn: Connection) -> int:
    """This transaction's pass change tag (the same value when asked again on PostgreSQL).

    SQLite: the next counter value (the single writer commits tags in order). PostgreSQL: the
    transaction id plus the offset: no lock, concurrent writers do not wait for each other."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(_PG_NEXT).scalar_one())
    return int(conn.execute(_NEXT_COUNTER).scalar_one())


def visible_below(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[bool] | None:
    """The condition "``column`` (a change tag) is below the visible horizon", or None where
    every committed tag is final (SQLite)."""
    if dialect == "postgresql":
        return column < PG_HORIZON
    return None


def committed_below(dialect: str) -> sa.ColumnElement[Any]:
    """A tag bound read in a statement: every change tagged below it has committed (or rolled
    back) by the statement's snapshot, and every change committed later gets a tag at or above
    it. PostgreSQL: the visible horizon. SQLite: one above the counter's committed value (the
    writer under way, if any, holds the next value, uncommitted)."""
    if dialect == "postgresql":
        return PG_HORIZON
    return sa.select(counters.c.value + 1).where(counters.c.name == "change_tag").scalar_subquery()


def next_change_time(previous: datetime, now: datetime) -> datetime:
    """A card's next ``updated_at``: ``now``, or one step after the previous version when the
    clock has not moved past it (a burst of changes, a clock behind another server's)."""
    return max(now, previous + CHANGE_STEP)


def next_template_change_time(conn: Connection, where: Any, now: datetime) -> datetime:
    """One ``updated_at`` for many cards (a template design update): after every one of them."""
    latest = conn.scalar(sa.select(sa.func.max(cards.c.updated_at)).where(*where))
    previous = utc(latest)
    return now if previous is None else next_change_time(previous, now)


def rebase_offset(conn: Connection) -> None:
    """PostgreSQL: keep new tags above every stored tag (a restore into a new cluster restarts
    transaction ids). A no-op write when the offset is already high enough."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        sa.text(
            "UPDATE counters SET value = GREATEST(value, "
            "(SELECT COALESCE(max(change_tag), 0) FROM cards) "
            "- pg_current_xact_id()::text::bigint + 1) "
            "WHERE name = :name AND value < "
            "(SELECT COALESCE(max(change_tag), 0) FROM cards) "
            "- pg_current_xact_id()::text::bigint + 1"
        ),
        {"name": OFFSET_COUNTER},
    )
