"""What an import batch asks the store: which row keys and serials are already there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import Card, Holder
from . import codec
from .cards import holder_values
from .journal import insert_events
from .schema import cards, holders, idempotency


def known_keys(conn: Connection, keys: Sequence[str]) -> set[str]:
    """The idempotency keys among ``keys`` that are stored (one statement)."""
    if not keys:
        return set()
    query = sa.select(idempotency.c.key).where(idempotency.c.key.in_(list(keys)))
    return set(conn.scalars(query))


def taken_serials(conn: Connection, serials: Sequence[str]) -> set[str]:
    """The serials among ``serials`` that name a card (deleted ones included)."""
    if not serials:
        return set()
    return set(conn.scalars(sa.select(cards.c.serial).where(cards.c.serial.in_(list(serials)))))


def save_keys(conn: Connection, rows: Sequence[dict[str, object]]) -> None:
    if rows:
        conn.execute(idempotency.insert(), list(rows))


def insert_imported(
    conn: Connection,
    items: Sequence[tuple[Holder, Card, Sequence[Mapping[str, Any]]]],
    *,
    change_tag: int,
    now: datetime,
) -> None:
    """A batch of new cards (no vouchers, no platforms) with their holders and journal rows:
    three statements for the whole batch (executemany), not three per card."""
    if not items:
        return
    ids = conn.execute(
        holders.insert().returning(holders.c.id, sort_by_parameter_order=True),
        [holder_values(h) | {"created_at": now} for h, _, _ in items],
    ).scalars()
    rows = [
        codec.card_row(card, int(holder_id)) | {"change_tag": change_tag, "updated_at": now}
        for (_, card, _), holder_id in zip(items, ids, strict=True)
    ]
    conn.execute(cards.insert(), rows)
    insert_events(conn, [row for _, _, evs in items for row in evs])
