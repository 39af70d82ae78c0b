"""The outbox (pending pass updates for the delivery worker) and the notification budget.

The dispatcher's statements (claim with a lease, acknowledge, fail with back-off, park dead,
list, retry dead) are at the end; docs/push.md ("The dispatcher") describes the guarantees.
Every write that adds rows wakes the workers: an in-process signal (:func:`on_outbox_write`) and,
on PostgreSQL, ``pg_notify`` inside the write transaction (delivered at commit; a rollback sends
nothing) for the workers of other processes (:func:`listen_outbox`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from . import changes
from .campaigns import count_delivered
from .cards import template_cards_where
from .schema import card_platforms, cards, devices, notifications, outbox, registrations

if TYPE_CHECKING:  # an annotation only: the asyncio extension imports the ORM (start-up cost)
    from sqlalchemy.ext.asyncio import AsyncEngine


def outbox_row(
    serial: str, platform: str, reason: str, silent: bool, tag: int, now: datetime
) -> dict[str, Any]:
    return {
        "serial": serial,
        "platform": platform,
        "reason": reason[:32],
        "silent": silent,
        "change_tag": tag,
        "created_at": now,
        "attempts": 0,
    }


def insert_outbox(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(outbox.insert(), list(rows))
        wake_workers(conn)


def notifications_since(conn: Connection, serial: str, since: datetime) -> int:
    count = conn.scalar(
        sa.select(sa.func.count())
        .select_from(notifications)
        .where(notifications.c.serial == serial, notifications.c.at > since)
    )
    return int(count or 0)


def spend_notification(conn: Connection, serial: str, now: datetime, reason: str) -> None:
    conn.execute(notifications.insert().values(serial=serial, at=now, reason=reason))


def notifications_by_card(
    conn: Connection, serials: Sequence[str], since: datetime
) -> dict[str, int]:
    """Notifications spent by each of the cards since ``since`` (cards with none left out)."""
    if not serials:
        return {}
    rows = conn.execute(
        sa.select(notifications.c.serial, sa.func.count())
        .where(notifications.c.serial.in_(list(serials)), notifications.c.at > since)
        .group_by(notifications.c.serial)
    )
    return {serial: int(n) for serial, n in rows}


def spend_notifications(
    conn: Connection, serials: Sequence[str], now: datetime, reason: str
) -> None:
    """One notification spent by each of the cards (a broadcast's batch)."""
    if serials:
        conn.execute(
            notifications.insert(),
            [{"serial": s, "at": now, "reason": reason[:32]} for s in serials],
        )


def prune_notifications(conn: Connection, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` spent notifications older than ``before`` (out of every budget
    window), oldest first; how many. Ids grow with time, so the scan stops at the first young
    row it needs."""
    old = (
        sa.select(notifications.c.id)
        .where(notifications.c.at <= before)
        .order_by(notifications.c.id)
        .limit(limit)
    )
    result = conn.execute(notifications.delete().where(notifications.c.id.in_(old)))
    return int(result.rowcount or 0)


def queue_template_updates(
    conn: Connection,
    template_id: str,
    version: int,
    wallets: Sequence[str],
    *,
    reason: str,
    change_tag: int,
    now: datetime,
) -> None:
    """One silent update per wallet of every live card of one template version (one statement:
    INSERT ... SELECT)."""
    source = (
        sa.select(
            card_platforms.c.serial,
            card_platforms.c.platform,
            sa.literal(reason),
            sa.true(),
            sa.literal(change_tag, sa.BigInteger),
            sa.literal(now, sa.DateTime(timezone=True)),
            sa.literal(0),
        )
        .join(cards, cards.c.serial == card_platforms.c.serial)
        .where(
            *template_cards_where(template_id, version),
            card_platforms.c.platform.in_(wallets),
            # A voided card's void was its final update: nothing more goes to its devices.
            cards.c.state != "voided",
        )
    )
    conn.execute(
        outbox.insert().from_select(
            ["serial", "platform", "reason", "silent", "change_tag", "created_at", "attempts"],
            source,
        )
    )
    wake_workers(conn)


def pending(conn: Connection, platform: str | None, limit: int) -> list[Mapping[Any, Any]]:
    """The oldest outbox rows (of one platform when given)."""
    query = sa.select(outbox).order_by(outbox.c.id).limit(limit)
    if platform is not None:
        query = query.where(outbox.c.platform == platform)
    return list(conn.execute(query).mappings())


def complete(conn: Connection, ids: Sequence[int]) -> int:
    """Remove delivered rows; how many were removed."""
    result = conn.execute(outbox.delete().where(outbox.c.id.in_(list(ids))))
    return int(result.rowcount or 0)


# -- the dispatcher ------------------------------------------------------------------------------

#: The PostgreSQL channel an outbox write notifies (``pg_notify`` at commit).
NOTIFY_CHANNEL = "passkit_stamps_outbox"

#: In-process wake-ups (see :func:`on_outbox_write`): called from the writing thread.
_write_listeners: list[Callable[[], None]] = []


def on_outbox_write(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` whenever a transaction of this process writes outbox rows; returns the
    function that unregisters it. Called inside the write transaction (on SQLite in the store's
    writer thread, so ``callback`` must be thread-safe): a worker that wakes claims through the
    same single writer (SQLite) and so sees the rows once committed; on PostgreSQL the NOTIFY
    that commit sends wakes it again should its claim run first."""
    _write_listeners.append(callback)

    def remove() -> None:
        if callback in _write_listeners:
            _write_listeners.remove(callback)

    return remove


def wake_workers(conn: Connection) -> None:
    """Tell the workers rows were added: NOTIFY (PostgreSQL, sent at commit) and in-process."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    for callback in tuple(_write_listeners):
        callback()


@asynccontextmanager
async def listen_outbox(engine: AsyncEngine, callback: Callable[[], None]) -> AsyncIterator[bool]:
    """PostgreSQL: LISTEN on :data:`NOTIFY_CHANNEL` on a connection of its own for the block and
    call ``callback`` on each notification; yields True. SQLite has no notifications: yields
    False (the worker polls for other processes' writes)."""
    if engine.dialect.name != "postgresql":
        yield False
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection

        def on_notify(*_args: Any) -> None:
            callback()

        await driver.add_listener(NOTIFY_CHANNEL, on_notify)
        try:
            yield True
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await driver.remove_listener(NOTIFY_CHANNEL, on_notify)


#: The seed of the hash of serial and platform that keys a claim's advisory lock on a card
#: (PostgreSQL): two claims never take rows of one card at once.
CLAIM_LOCK_SEED = 727_301


def _due(table: Any, now: Any) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.dead_at.is_(None),
        sa.or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        sa.or_(table.c.lease_until.is_(None), table.c.lease_until <= now),
    )


def _in_flight(table: Any, now: Any) -> sa.Exists:
    """Some row of the same card and platform as ``table``'s row holds a live lease: the card's
    delivery is in flight (in another worker, or another lane of this one)."""
    other = outbox.alias("in_flight")
    return sa.exists().where(
        other.c.serial == table.c.serial,
        other.c.platform == table.c.platform,
        other.c.dead_at.is_(None),
        other.c.lease_until > now,
    )


def _list(name: str, item: Any, dialect: str) -> sa.BindParameter[Any]:
    """A parameter holding a list: on PostgreSQL one array (``= ANY($1)``, one prepared
    statement whatever the length; an expanding IN renders and prepares a new one for every
    length), elsewhere an expanding IN."""
    if dialect == "postgresql":
        return sa.bindparam(name, type_=ARRAY(item))
    return sa.bindparam(name, expanding=True)


def _in(column: sa.ColumnElement[Any], values: sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
    if values.expanding:
        return column.in_(values)
    return column == sa.any_(values)


#: The dispatcher's statements, built once per (dialect, variant): building SQLAlchemy Core
#: objects costs more client time than running these statements.
_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _statement(key: tuple[str, ...], build: Callable[[], Any]) -> Any:
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = build()
    return found


_NOW = sa.bindparam("now", type_=outbox.c.lease_until.type)
_LEASE = {
    "lease_owner": sa.bindparam("owner", type_=sa.String),
    "lease_until": sa.bindparam("lease_until", type_=outbox.c.lease_until.type),
    "attempts": outbox.c.attempts + 1,
}


def _cards_of(dialect: str, platforms: bool) -> sa.Subquery:
    """The cards (serial, platform) of the oldest ``window`` due rows (below the horizon on
    PostgreSQL) that are not in flight, oldest first. The in-flight test runs on those rows
    only, after the LIMIT: the planner keeps it out of the scan, which stays a top-N of due
    rows whatever the table's statistics say (a design update adds 100,000 rows at once)."""
    first = outbox.alias("first")
    scan = sa.select(first.c.id, first.c.serial, first.c.platform).where(_due(first, _NOW))
    if platforms:
        scan = scan.where(_in(first.c.platform, _list("platforms", sa.String, dialect)))
    horizon = changes.visible_below(first.c.change_tag, dialect)
    if horizon is not None:
        scan = scan.where(horizon)
    window = sa.bindparam("window", type_=sa.Integer)
    oldest = scan.order_by(first.c.id).limit(window).subquery("oldest")
    return (
        sa.select(oldest.c.serial, oldest.c.platform, sa.func.min(oldest.c.id).label("first_id"))
        .where(~_in_flight(oldest, _NOW))
        .group_by(oldest.c.serial, oldest.c.platform)
        .order_by(sa.func.min(oldest.c.id))
        .subquery("cards_of")
    )


def _unnest(name: str, **columns: Any) -> Any:
    """``unnest($1[, $2]) AS name(columns)``: a join from a list parameter, so the planner
    reaches outbox rows through an index from the list (a nested loop), whatever it believes
    about the table's size."""
    arrays = [sa.bindparam(f"{name}_{c}", type_=ARRAY(t)) for c, t in columns.items()]
    return (
        sa.func.unnest(*arrays)
        .table_valued(*(sa.column(c, t) for c, t in columns.items()))
        .render_derived(name=name)
    )


def _pg_lock_cards(platforms: bool) -> Any:
    # The cards, oldest first, each locked for this transaction; a card another claim holds is
    # skipped. The lock is volatile, so PostgreSQL evaluates it here, on the ordered cards
    # until ``limit`` are locked, not inside the subqueries.
    cards_of = _cards_of("postgresql", platforms)
    key = sa.func.hashtextextended(cards_of.c.serial + "/" + cards_of.c.platform, CLAIM_LOCK_SEED)
    return (
        sa.select(cards_of.c.serial, cards_of.c.platform, changes.PG_HORIZON.label("horizon"))
        .where(sa.func.pg_try_advisory_xact_lock(key))
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


def _pg_lease_cards() -> Any:
    # ``serial = ANY($1)`` on one platform: the index on (serial, platform) when the planner
    # knows the table, a hashed filter over a scan when its statistics are stale (a design
    # update just added 100,000 rows): linear either way, never a loop over the table per card.
    return (
        outbox.update()
        .where(
            outbox.c.serial == sa.any_(sa.bindparam("card_serial", type_=ARRAY(sa.String))),
            outbox.c.platform == sa.bindparam("card_platform", type_=sa.String),
            _due(outbox, _NOW),
            ~_in_flight(outbox, _NOW),
            outbox.c.change_tag < sa.bindparam("horizon", type_=sa.BigInteger),
        )
        .values(**_LEASE)
        .returning(*outbox.c)
    )


def _lease_oldest_cards(dialect: str, platforms: bool) -> Any:
    cards_of = _cards_of(dialect, platforms)
    return (
        outbox.update()
        .where(
            sa.tuple_(outbox.c.serial, outbox.c.platform).in_(
                sa.select(cards_of.c.serial, cards_of.c.platform)
            ),
            _due(outbox, _NOW),
            ~_in_flight(outbox, _NOW),
        )
        .values(**_LEASE)
        .returning(*outbox.c)
    )


_INDEX_PATHS = sa.text("SELECT set_config('enable_seqscan', 'off', true)")


def _index_paths(conn: Connection) -> None:
    """PostgreSQL, for the rest of this transaction: prefer index paths. The outbox's
    statistics lag behind its size (a design update adds 100,000 rows; ANALYZE runs a minute
    later), and a planner that believes the table is nearly empty scans all of it, and sorts,
    for each claim of 500 cards; the claim and acknowledgement only ever need the oldest due
    rows (primary key order) and the rows of given cards (the (serial, platform) index)."""
    conn.execute(_INDEX_PATHS)


def claim(
    conn: Connection,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    platforms: Sequence[str] | None = None,
) -> list[Mapping[Any, Any]]:
    """Lease to ``owner`` until ``lease_until`` every due row of up to ``limit`` cards (those
    of the oldest due rows), and count the attempt; the rows as they are now, oldest first.

    Claims go per card and platform: a card whose delivery is in flight (a row of it holds a
    live lease) is skipped, so all due rows of a card go to one worker and a change committed
    while a push is on its way waits for that push's acknowledgement (which takes it along
    when the push covered it, :func:`acknowledge`) instead of being pushed again by another
    worker at once. PostgreSQL: concurrent claims lock their cards with a transaction-level
    advisory lock and skip cards another claim holds (SKIP LOCKED per card), then lease in a
    second statement whose snapshot sees every lease committed before the lock was taken;
    only changes below the visible horizon are claimed (store/changes.py). SQLite: the single
    writer serialises claims. A row leased to a worker that died is due again once its lease
    runs out."""
    dialect = conn.dialect.name
    variant = "platforms" if platforms is not None else "all"
    params: dict[str, Any] = {"now": now, "owner": owner, "lease_until": lease_until}
    if platforms is not None:
        params["platforms"] = list(platforms)
    if dialect == "postgresql":
        _index_paths(conn)
        # Twice as deep: cards a concurrent claim holds are skipped, the next ones taken.
        lock = _statement(("lock", variant), lambda: _pg_lock_cards(platforms is not None))
        locked = conn.execute(lock, {**params, "window": limit * 2, "limit": limit}).all()
        if not locked:
            return []
        # Statement 2, a new snapshot: every lease committed by a claim that held one of these
        # cards before us is seen here (the in-flight test), so no card is leased twice. The
        # horizon as statement 1 read it (read once per transaction, store/changes.py).
        lease = _statement(("lease",), _pg_lease_cards)
        by_platform: dict[str, list[str]] = {}
        for card in locked:
            by_platform.setdefault(card.platform, []).append(card.serial)
        params["horizon"] = int(locked[0].horizon)
        rows = [
            row
            for platform, serials in sorted(by_platform.items())
            for row in conn.execute(
                lease, {**params, "card_platform": platform, "card_serial": serials}
            ).mappings()
        ]
    else:
        lease = _statement(
            (dialect, "lease", variant),
            lambda: _lease_oldest_cards(dialect, platforms is not None),
        )
        rows = list(conn.execute(lease, {**params, "window": limit}).mappings())
    return sorted(rows, key=lambda row: int(row["id"]))


def _acknowledge(dialect: str, covered: bool) -> Any:
    condition = _in(outbox.c.id, _list("ids", sa.BigInteger, dialect))
    if covered:
        # Every claimed id is a row of the delivered cards on that platform.
        condition = sa.and_(
            _in(outbox.c.serial, _list("card_serial", sa.String, dialect)),
            outbox.c.platform == sa.bindparam("platform", type_=sa.String),
            sa.or_(condition, _covered()),
        )
    return outbox.delete().where(condition).returning(outbox.c.campaign_id, outbox.c.platform)


def _covered() -> sa.ColumnElement[bool]:
    return sa.and_(
        outbox.c.change_tag < sa.bindparam("below", type_=sa.BigInteger),
        sa.or_(
            outbox.c.lease_until.is_(None),
            outbox.c.lease_until <= _NOW,
            outbox.c.lease_owner == sa.bindparam("owner", type_=sa.String),
        ),
    )


def acknowledge(
    conn: Connection,
    ids: Sequence[int],
    *,
    covered: tuple[str, Sequence[str], int, str] | None = None,
    now: datetime | None = None,
) -> int:
    """Delivered: remove the rows; how many were removed. A broadcast's rows count as
    delivered in its report (store/campaigns.py).

    ``covered`` = (platform, serials, below, owner): the delivery brought these cards' state as
    it was once every change tagged below ``below`` had committed (the tag bound read just
    before sending, :func:`apple_targets`), so their rows on that platform with a smaller tag
    are done too, claimed or not (a change committed while the push was in flight), unless
    another worker holds them under a live lease. A row tagged ``below`` or above stays: it
    may have committed after the state went out, and is delivered again."""
    dialect = conn.dialect.name
    params: dict[str, Any] = {"ids": list(ids)}
    if covered is not None:
        platform, serials, below, owner = covered
        params.update(
            platform=platform, card_serial=list(serials), below=below, owner=owner, now=now
        )
    statement = _statement(
        (dialect, "acknowledge", str(covered is not None)),
        lambda: _acknowledge(dialect, covered is not None),
    )
    if dialect == "postgresql":
        _index_paths(conn)
    removed = list(conn.execute(statement, params).mappings())
    count_delivered(conn, removed)
    return len(removed)


def reschedule(conn: Connection, updates: Sequence[Mapping[str, Any]]) -> None:
    """Failed attempts: each update names ``row_id``, ``next_attempt_at``, ``last_error`` and
    ``dead_at`` (set: parked dead); the lease is dropped."""
    if not updates:
        return
    conn.execute(
        outbox.update()
        .where(outbox.c.id == sa.bindparam("row_id"))
        .values(
            next_attempt_at=sa.bindparam("next_attempt_at"),
            last_error=sa.bindparam("last_error"),
            dead_at=sa.bindparam("dead_at"),
            lease_owner=None,
            lease_until=None,
        ),
        [dict(u) for u in updates],
    )


def release(conn: Connection, ids: Sequence[int], *, owner: str, note: str | None) -> int:
    """Give leased rows back unsent (a paused platform, a worker stopping): the attempt does not
    count. ``note`` (why) goes to ``last_error`` when given."""
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_until": None,
        "attempts": sa.case((outbox.c.attempts > 0, outbox.c.attempts - 1), else_=0),
    }
    if note is not None:
        values["last_error"] = note[:500]
    result = conn.execute(
        outbox.update()
        .where(outbox.c.id.in_(list(ids)), outbox.c.lease_owner == owner)
        .values(**values)
    )
    return int(result.rowcount or 0)


def stats(conn: Connection) -> list[Mapping[Any, Any]]:
    """Per platform: ``pending`` (never failed), ``retrying`` (failed, due again later),
    ``dead`` (parked) and ``oldest`` (created_at of the oldest row not dead). One statement."""
    live = outbox.c.dead_at.is_(None)

    def count(condition: sa.ColumnElement[bool]) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    query = (
        sa.select(
            outbox.c.platform,
            count(sa.and_(live, outbox.c.last_error.is_(None))).label("pending"),
            count(sa.and_(live, outbox.c.last_error.is_not(None))).label("retrying"),
            count(outbox.c.dead_at.is_not(None)).label("dead"),
            sa.func.min(sa.case((live, outbox.c.created_at), else_=None)).label("oldest"),
        )
        .group_by(outbox.c.platform)
        .order_by(outbox.c.platform)
    )
    return list(conn.execute(query).mappings())


def dead_rows(conn: Connection, platform: str | None, limit: int) -> list[Mapping[Any, Any]]:
    """Parked rows, oldest first (of one platform when given)."""
    query = sa.select(outbox).where(outbox.c.dead_at.is_not(None)).order_by(outbox.c.id)
    if platform is not None:
        query = query.where(outbox.c.platform == platform)
    return list(conn.execute(query.limit(limit)).mappings())


def retry_dead(conn: Connection, platform: str | None, now: datetime) -> int:
    """Re-queue parked rows (attempts from 0, due now); how many."""
    query = outbox.update().where(outbox.c.dead_at.is_not(None))
    if platform is not None:
        query = query.where(outbox.c.platform == platform)
    result = conn.execute(
        query.values(
            dead_at=None, attempts=0, next_attempt_at=now, lease_owner=None, lease_until=None
        )
    )
    count = int(result.rowcount or 0)
    if count:
        wake_workers(conn)
    return count


def _apple_targets(dialect: str) -> Any:
    bound = sa.select(changes.committed_below(dialect).label("below")).subquery("bound")
    targets = sa.select(
        registrations.c.serial, registrations.c.pass_type_id, devices.c.push_token
    ).join(devices, devices.c.device_library_id == registrations.c.device_library_id)
    if dialect == "postgresql":
        card = _unnest("card", serial=sa.String)
        targets = targets.where(registrations.c.serial == card.c.serial)
    else:
        targets = targets.where(
            registrations.c.serial.in_(sa.bindparam("card_serial", expanding=True))
        )
    found = targets.subquery("targets")
    return sa.select(
        bound.c.below, found.c.serial, found.c.pass_type_id, found.c.push_token
    ).select_from(bound.outerjoin(found, sa.true()))


def apple_targets(
    conn: Connection, serials: Sequence[str]
) -> tuple[list[tuple[str, str, str]], int]:
    """(serial, pass type, push token) of every device registered for the cards: what the Apple
    sender pushes to; and, read in the same statement (one snapshot), the bound below which
    every change tag has committed (:func:`changes.committed_below`): a push sent after this
    read covers every such change of these cards. One statement for a whole batch."""
    dialect = conn.dialect.name
    statement = _statement((dialect, "targets"), lambda: _apple_targets(dialect))
    rows = conn.execute(statement, {"card_serial": list(serials)}).all()
    below = int(rows[0].below)
    return [(r.serial, r.pass_type_id, r.push_token) for r in rows if r.serial is not None], below


def token_registrations(conn: Connection, push_token: str) -> list[Mapping[Any, Any]]:
    """The registrations of the devices holding ``push_token``, with when each was made and
    when the device last registered (``device_updated_at``): dead-token pruning."""
    rows = conn.execute(
        sa.select(
            registrations.c.device_library_id,
            registrations.c.pass_type_id,
            registrations.c.serial,
            registrations.c.created_at,
            devices.c.updated_at.label("device_updated_at"),
        )
        .join(devices, devices.c.device_library_id == registrations.c.device_library_id)
        .where(devices.c.push_token == push_token)
        .order_by(registrations.c.serial)
    )
    return list(rows.mappings())
