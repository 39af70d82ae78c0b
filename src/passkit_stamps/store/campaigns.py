"""Broadcasts (campaigns) and messages on cards: the SQL of storing a campaign, selecting the
next batch of its cards in serial order (keyset), writing the message on a batch of cards, and
the campaign's figures.

A campaign's enqueue runs in batches, one transaction each (the service's
``broadcast``/``resume_campaign``): lock the campaign row, read its ``cursor`` (the last serial
enqueued), lock the next cards after it, write them, move the cursor. A batch commits whole or
not at all, so a crash between batches resumes after the cursor and no card is enqueued twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .cards import select_cards
from .schema import (
    campaign_stats,
    campaigns,
    card_platforms,
    cards,
    devices,
    notifications,
    outbox,
    registrations,
    templates,
    utc,
)
from .search import CardFilter
from .search import _where as filter_where

#: Cards a broadcast can reach: live, active or completed, not past their expiry time.
_REACHABLE = ("active", "completed")
#: A new version of a card is at least this much after the previous one (its Last-Modified).
_CHANGE_STEP = timedelta(seconds=1)


def _reachable(now: datetime) -> list[sa.ColumnElement[bool]]:
    return [
        cards.c.deleted_at.is_(None),
        cards.c.state.in_(_REACHABLE),
        sa.or_(cards.c.expires_at.is_(None), cards.c.expires_at > now),
    ]


def insert_campaign(
    conn: Connection, *, message: str, filters: str, actor: str | None, now: datetime
) -> int:
    result = conn.execute(
        campaigns.insert()
        .values(
            message=message,
            filters=filters,
            state="sending",
            cursor=None,
            cards=0,
            notified=0,
            silent=0,
            actor=actor,
            created_at=now,
        )
        .returning(campaigns.c.id)
    )
    return int(result.scalar_one())


def campaign(conn: Connection, campaign_id: int, *, for_update: bool = False) -> Any:
    """The campaign row (None when there is none), locked on PostgreSQL when ``for_update``:
    two processes resuming one campaign take its batches in turn."""
    query = sa.select(campaigns).where(campaigns.c.id == campaign_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def list_campaigns(conn: Connection, limit: int) -> list[Mapping[Any, Any]]:
    query = sa.select(campaigns).order_by(campaigns.c.id.desc()).limit(limit)
    return list(conn.execute(query).mappings())


def next_cards(
    conn: Connection,
    f: CardFilter,
    *,
    after: str,
    created_before: datetime,
    now: datetime,
    limit: int,
) -> list[Mapping[Any, Any]]:
    """The next ``limit`` reachable cards matching ``f`` after serial ``after`` (keyset order),
    issued before the campaign, with what their journal rows need; locked on PostgreSQL (in
    serial order, so two batches never deadlock)."""
    query = (
        select_cards(
            cards.c.serial,
            cards.c.template_id,
            cards.c.template_version,
            cards.c.stamps,
            templates.c.stamps_required,
            cards.c.updated_at,
        )
        .where(
            *filter_where(f),
            *_reachable(now),
            cards.c.created_at <= created_before,
            cards.c.serial > after,
        )
        .order_by(cards.c.serial)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=cards)
    return list(conn.execute(query).mappings())


def write_message(
    conn: Connection,
    serials: Sequence[str],
    notified: Sequence[str],
    *,
    message: str,
    message_id: str,
    change_tag: int,
    changed_at: datetime,
) -> None:
    """Put the message on the cards (locked by the caller) as their new version: ``notified``
    ones alert the holder, the others update silently."""
    loud = set(notified)
    groups = (
        ([s for s in serials if s in loud], True),
        ([s for s in serials if s not in loud], False),
    )
    for group, flag in groups:
        if group:
            conn.execute(
                cards.update()
                .where(cards.c.serial.in_(group))
                .values(
                    message=message,
                    message_id=message_id,
                    notified=flag,
                    change_tag=change_tag,
                    updated_at=changed_at,
                    # A notified one's time (store/cards.py update_card): silent ones keep theirs.
                    **({"notified_at": changed_at} if flag else {}),
                )
            )


def change_time(rows: Sequence[Mapping[Any, Any]], now: datetime) -> datetime:
    """One ``updated_at`` for a batch of cards: ``now``, or a step after the latest of theirs
    (a device's If-Modified-Since must see every new version as newer)."""
    times = [t for t in (utc(r["updated_at"]) for r in rows) if t is not None]
    return max([now, *(t + _CHANGE_STEP for t in times)])


def set_message_id(conn: Connection, serial: str, message_id: str | None) -> None:
    conn.execute(cards.update().where(cards.c.serial == serial).values(message_id=message_id))


def advance(
    conn: Connection,
    campaign_id: int,
    *,
    cursor: str,
    cards_count: int,
    notified: int,
    silent: int,
    per_platform: Mapping[str, tuple[int, int, int]],
) -> None:
    """Move the campaign's cursor and add a batch's figures (per platform: targeted, notified,
    silent)."""
    conn.execute(
        campaigns.update()
        .where(campaigns.c.id == campaign_id)
        .values(
            cursor=cursor,
            cards=campaigns.c.cards + cards_count,
            notified=campaigns.c.notified + notified,
            silent=campaigns.c.silent + silent,
        )
    )
    for platform, (targeted, loud, quiet) in sorted(per_platform.items()):
        updated = conn.execute(
            campaign_stats.update()
            .where(
                campaign_stats.c.campaign_id == campaign_id,
                campaign_stats.c.platform == platform,
            )
            .values(
                targeted=campaign_stats.c.targeted + targeted,
                notified=campaign_stats.c.notified + loud,
                silent=campaign_stats.c.silent + quiet,
            )
        )
        if not updated.rowcount:
            conn.execute(
                campaign_stats.insert().values(
                    campaign_id=campaign_id,
                    platform=platform,
                    targeted=targeted,
                    notified=loud,
                    silent=quiet,
                    delivered=0,
                )
            )


def finish(conn: Connection, campaign_id: int, now: datetime) -> None:
    conn.execute(
        campaigns.update()
        .where(campaigns.c.id == campaign_id)
        .values(state="sent", finished_at=now)
    )


def count_delivered(conn: Connection, delivered: Sequence[Mapping[Any, Any]]) -> None:
    """Count acknowledged outbox rows (``campaign_id``, ``platform``) to their campaigns."""
    counts: dict[tuple[int, str], int] = {}
    for row in delivered:
        if row["campaign_id"] is not None:
            key = (int(row["campaign_id"]), str(row["platform"]))
            counts[key] = counts.get(key, 0) + 1
    for (campaign_id, platform), n in sorted(counts.items()):
        conn.execute(
            campaign_stats.update()
            .where(
                campaign_stats.c.campaign_id == campaign_id,
                campaign_stats.c.platform == platform,
            )
            .values(delivered=campaign_stats.c.delivered + n)
        )


def stats(conn: Connection, campaign_id: int) -> list[Mapping[Any, Any]]:
    """Per platform: targeted, notified, silent, delivered, and from the outbox rows still
    there: pending (not dead) and failed (parked dead)."""
    live = (
        sa.select(
            outbox.c.platform,
            sa.func.sum(sa.case((outbox.c.dead_at.is_(None), 1), else_=0)).label("pending"),
            sa.func.sum(sa.case((outbox.c.dead_at.is_not(None), 1), else_=0)).label("failed"),
        )
        .where(outbox.c.campaign_id == campaign_id)
        .group_by(outbox.c.platform)
    )
    waiting = {r.platform: (int(r.pending or 0), int(r.failed or 0)) for r in conn.execute(live)}
    rows = conn.execute(
        sa.select(campaign_stats)
        .where(campaign_stats.c.campaign_id == campaign_id)
        .order_by(campaign_stats.c.platform)
    ).mappings()
    out: list[Mapping[Any, Any]] = []
    for r in rows:
        pending, failed = waiting.get(r["platform"], (0, 0))
        out.append({**r, "pending": pending, "failed": failed})
    return out


def reach(
    conn: Connection, f: CardFilter, *, now: datetime, since: datetime, budget: int
) -> Mapping[str, int]:
    """What a broadcast to the cards matching ``f`` would reach, now: ``cards``, Apple
    ``devices`` (registrations), ``google`` objects (cards saved in Google Wallet), and of the
    cards saved in a wallet how many would be ``notified`` and how many updated ``silent``
    (their budget of ``budget`` per window since ``since`` spent). A few aggregate statements."""
    matching = select_cards(cards.c.serial).where(*filter_where(f), *_reachable(now)).subquery("m")
    total = conn.scalar(sa.select(sa.func.count()).select_from(matching)) or 0
    device_count = (
        conn.scalar(
            sa.select(sa.func.count())
            .select_from(registrations)
            .join(devices, devices.c.device_library_id == registrations.c.device_library_id)
            .where(registrations.c.serial.in_(sa.select(matching.c.serial)))
        )
        or 0
    )
    google = (
        conn.scalar(
            sa.select(sa.func.count())
            .select_from(card_platforms)
            .where(
                card_platforms.c.platform == "google",
                card_platforms.c.serial.in_(sa.select(matching.c.serial)),
            )
        )
        or 0
    )
    in_wallet = sa.exists().where(
        card_platforms.c.serial == matching.c.serial,
        card_platforms.c.platform.in_(["apple", "google"]),
    )
    wallet_cards = conn.scalar(sa.select(sa.func.count()).select_from(matching).where(in_wallet))
    wallet_cards = wallet_cards or 0
    if budget <= 0:
        spent_out = wallet_cards
    else:
        spent = (
            sa.select(sa.func.count())
            .where(notifications.c.serial == matching.c.serial, notifications.c.at > since)
            .scalar_subquery()
        )
        over = sa.select(sa.func.count()).select_from(matching).where(in_wallet, spent >= budget)
        spent_out = conn.scalar(over) or 0
    return {
        "cards": int(total),
        "devices": int(device_count),
        "google": int(google),
        "notified": int(wallet_cards) - int(spent_out),
        "silent": int(spent_out),
        "no_wallet": int(total) - int(wallet_cards),
    }


def due_to_expire(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Serials of up to ``limit`` live active or completed cards whose expiry time has come,
    earliest first (the partial index ``ix_cards_expiring``). PostgreSQL skips cards another
    sweep or writer holds (they are done by it, or by the next sweep)."""
    query = (
        sa.select(cards.c.serial)
        .where(
            cards.c.state.in_(_REACHABLE),
            cards.c.expires_at <= now,
            cards.c.deleted_at.is_(None),
        )
        .order_by(cards.c.expires_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.scalars(query))
