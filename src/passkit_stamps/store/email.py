"""E-mail rows of the outbox (platform ``email``) and the enrolment page's card-by-e-mail lookup.

An e-mail row needs no payload column: ``serial`` names the card (its holder's address and
language at sending time), and ``reason`` says what to send: ``card_issued`` (the card link after
an enrolment), ``existing_card`` (someone enrolled again with this address) or
``message_sent:<journal event id>`` (the message text is the journal event's data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .outbox import insert_outbox, outbox_row
from .schema import cards, holders, outbox

EMAIL = "email"


def queue_email(conn: Connection, serial: str, reason: str, now: datetime) -> None:
    """One e-mail to the holder of ``serial`` (in the caller's transaction). Change tag 0: no
    device waits for an e-mail, so the dispatcher's wait for a pass change to become visible
    (PostgreSQL's horizon, store/changes.py) must not hold it back."""
    insert_outbox(conn, [outbox_row(serial, EMAIL, reason, False, 0, now)])


def card_by_email(conn: Connection, template_id: str, email: str) -> str | None:
    """The serial of a live card of the template whose holder has this address
    (compared case-insensitively), the oldest first. On PostgreSQL the (template, address) pair
    is locked until the transaction ends, so two enrolments of one address at once make one card
    (SQLite's single writer serialises them anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 13))"),
            {"k": f"enrol:{template_id}:{email.lower()}"},  # ids have no ":"
        )
    row = conn.execute(
        sa.select(cards.c.serial)
        .join(holders, holders.c.id == cards.c.holder_id)
        .where(
            cards.c.template_id == template_id,
            cards.c.deleted_at.is_(None),
            cards.c.state != "voided",
            sa.func.lower(holders.c.email) == email.lower(),
        )
        .order_by(cards.c.created_at, cards.c.serial)
        .limit(1)
    ).first()
    return None if row is None else str(row.serial)


def pending_email(conn: Connection, limit: int) -> list[Mapping[Any, Any]]:
    """The oldest e-mail rows."""
    query = sa.select(outbox).where(outbox.c.platform == EMAIL).order_by(outbox.c.id)
    return list(conn.execute(query.limit(limit)).mappings())


def email_done(conn: Connection, ids: Sequence[int]) -> int:
    """Sent (or dropped for good): remove the rows."""
    if not ids:
        return 0
    result = conn.execute(
        outbox.delete().where(outbox.c.id.in_(list(ids)), outbox.c.platform == EMAIL)
    )
    return int(result.rowcount or 0)


def email_attempted(conn: Connection, ids: Sequence[int]) -> None:
    """A failed attempt: the rows stay, their attempt count goes up."""
    if ids:
        conn.execute(
            outbox.update()
            .where(outbox.c.id.in_(list(ids)), outbox.c.platform == EMAIL)
            .values(attempts=outbox.c.attempts + 1)
        )
