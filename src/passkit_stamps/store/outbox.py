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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from . import changes
from .campaigns import count_delivered
from .cards import template_cards_where
from .schema import card_platforms, cards, devices, notifications, outbox, registrations


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


#: At most this many rows of the claimed cards come along with a claim (beyond its limit).
SIBLINGS = 1000


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        outbox.c.dead_at.is_(None),
        sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
        sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
    )


def claim(
    conn: Connection,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    platforms: Sequence[str] | None = None,
) -> list[Mapping[Any, Any]]:
    """Lease up to ``limit`` due rows (oldest first) to ``owner`` until ``lease_until`` and count
    the attempt; the rows as they are now. PostgreSQL skips rows another worker's claim holds
    (``FOR UPDATE SKIP LOCKED``); on SQLite the single writer serialises claims. A row leased to
    a worker that died is due again once its lease runs out."""
    query = sa.select(outbox.c.id, outbox.c.serial).where(_due(now)).order_by(outbox.c.id)
    if platforms is not None:
        query = query.where(outbox.c.platform.in_(list(platforms)))
    if conn.dialect.name == "postgresql":
        # Only changes the serials endpoint already lists (tag below the visible horizon,
        # store/changes.py): a device woken by the push then finds its pass in the list.
        query = query.where(outbox.c.change_tag < changes.PG_HORIZON)
        query = query.with_for_update(skip_locked=True)
    first = conn.execute(query.limit(limit)).all()
    if not first:
        return []
    ids = [row.id for row in first]
    # The other due rows of the same cards come along (beyond ``limit``): one delivery covers
    # them, and another worker cannot send the same card again a moment later.
    serials = sorted({row.serial for row in first})
    ids += conn.scalars(
        query.with_only_columns(outbox.c.id)
        .where(outbox.c.serial.in_(serials), outbox.c.id.not_in(ids))
        .limit(max(limit, SIBLINGS))
    )
    # One statement leases and returns the rows (UPDATE ... RETURNING: SQLite 3.35+, PostgreSQL).
    rows = conn.execute(
        outbox.update()
        .where(outbox.c.id.in_(ids))
        .values(lease_owner=owner, lease_until=lease_until, attempts=outbox.c.attempts + 1)
        .returning(*outbox.c)
    ).mappings()
    return sorted(rows, key=lambda row: int(row["id"]))


def acknowledge(conn: Connection, ids: Sequence[int]) -> int:
    """Delivered: remove the rows; how many were removed. A broadcast's rows count as
    delivered in its report (store/campaigns.py)."""
    result = conn.execute(
        outbox.delete()
        .where(outbox.c.id.in_(list(ids)))
        .returning(outbox.c.campaign_id, outbox.c.platform)
    )
    removed = list(result.mappings())
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


def apple_targets(conn: Connection, serials: Sequence[str]) -> list[tuple[str, str, str]]:
    """(serial, pass type, push token) of every device registered for the cards: what the Apple
    sender pushes to (one statement for a whole batch)."""
    rows = conn.execute(
        sa.select(registrations.c.serial, registrations.c.pass_type_id, devices.c.push_token)
        .join(devices, devices.c.device_library_id == registrations.c.device_library_id)
        .where(registrations.c.serial.in_(list(serials)))
    )
    return [(r.serial, r.pass_type_id, r.push_token) for r in rows]


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
