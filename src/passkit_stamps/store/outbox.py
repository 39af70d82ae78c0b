"""The outbox (pending pass updates for the push worker) and the notification budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .cards import template_cards_where
from .schema import card_platforms, cards, notifications, outbox


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


def notifications_since(conn: Connection, serial: str, since: datetime) -> int:
    count = conn.scalar(
        sa.select(sa.func.count())
        .select_from(notifications)
        .where(notifications.c.serial == serial, notifications.c.at > since)
    )
    return int(count or 0)


def spend_notification(conn: Connection, serial: str, now: datetime, reason: str) -> None:
    conn.execute(notifications.insert().values(serial=serial, at=now, reason=reason))


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
        .where(*template_cards_where(template_id, version), card_platforms.c.platform.in_(wallets))
    )
    conn.execute(
        outbox.insert().from_select(
            ["serial", "platform", "reason", "silent", "change_tag", "created_at", "attempts"],
            source,
        )
    )


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
