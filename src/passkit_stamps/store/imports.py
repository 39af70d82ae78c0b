"""What an import batch asks the store: which row keys and serials are already there."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import cards, idempotency


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
