"""Google Wallet objects: which object and class a card has, its state and last sync."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import google_objects


def save_google_object(
    conn: Connection,
    serial: str,
    *,
    object_id: str,
    class_id: str,
    state: str,
    last_synced: datetime | None,
) -> None:
    values = {
        "object_id": object_id,
        "class_id": class_id,
        "state": state,
        "last_synced": last_synced,
    }
    updated = conn.execute(
        google_objects.update().where(google_objects.c.serial == serial).values(**values)
    )
    if not updated.rowcount:
        conn.execute(google_objects.insert().values(serial=serial, **values))


def google_object(conn: Connection, serial: str) -> Any:
    """The card's row (``serial``, ``object_id``, ``class_id``, ``state``, ``last_synced``)."""
    query = sa.select(google_objects).where(google_objects.c.serial == serial)
    return conn.execute(query).first()
