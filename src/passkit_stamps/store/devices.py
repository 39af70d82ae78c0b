"""Apple devices and their registrations for passes (the pass web service's state)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import cards, devices, registrations

#: (serial, change tag) of a device's registered passes of one pass type, by serial: the
#: registrations primary key (device_library_id, pass_type_id, serial) serves the lookup, the
#: cards primary key the join. Read by :func:`registered_serials` and :mod:`.hotreads`.
REGISTERED_SERIALS = (
    sa.select(cards.c.serial, cards.c.change_tag)
    .join(registrations, registrations.c.serial == cards.c.serial)
    .where(
        registrations.c.device_library_id == sa.bindparam("device"),
        registrations.c.pass_type_id == sa.bindparam("pass_type"),
    )
    .order_by(cards.c.serial)
)
#: The same, only those changed after the change tag ``since``.
REGISTERED_SERIALS_SINCE = REGISTERED_SERIALS.where(cards.c.change_tag > sa.bindparam("since"))


def registered_serials(
    conn: Connection, device: str, pass_type: str, since: int | None
) -> list[tuple[str, int]]:
    if since is None:
        rows = conn.execute(REGISTERED_SERIALS, {"device": device, "pass_type": pass_type})
    else:
        params = {"device": device, "pass_type": pass_type, "since": since}
        rows = conn.execute(REGISTERED_SERIALS_SINCE, params)
    return [(r.serial, r.change_tag) for r in rows]


def upsert_device(conn: Connection, device_id: str, push_token: str, now: datetime) -> None:
    """Remember a device and its (possibly changed) push token."""
    current = conn.scalar(
        sa.select(devices.c.push_token).where(devices.c.device_library_id == device_id)
    )
    if current is None:
        conn.execute(
            devices.insert().values(
                device_library_id=device_id,
                push_token=push_token,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        # updated_at moves on every registration, the token changed or not: dead-token pruning
        # keeps a device that registered again after APNs' 410 timestamp (store/outbox.py).
        conn.execute(
            devices.update()
            .where(devices.c.device_library_id == device_id)
            .values(push_token=push_token, updated_at=now)
        )


def add_registration(
    conn: Connection, device_id: str, pass_type: str, serial: str, now: datetime
) -> bool:
    """Register the device for the pass; False when it already was."""
    exists = conn.scalar(
        sa.select(sa.literal(1)).where(
            registrations.c.device_library_id == device_id,
            registrations.c.pass_type_id == pass_type,
            registrations.c.serial == serial,
        )
    )
    if exists:
        return False
    conn.execute(
        registrations.insert().values(
            device_library_id=device_id,
            pass_type_id=pass_type,
            serial=serial,
            created_at=now,
        )
    )
    return True


def remove_registration(conn: Connection, device_id: str, pass_type: str, serial: str) -> bool:
    """Remove the registration (False when there was none) and forget a device left with none."""
    result = conn.execute(
        registrations.delete().where(
            registrations.c.device_library_id == device_id,
            registrations.c.pass_type_id == pass_type,
            registrations.c.serial == serial,
        )
    )
    if not result.rowcount:
        return False
    left = conn.scalar(
        sa.select(sa.func.count())
        .select_from(registrations)
        .where(registrations.c.device_library_id == device_id)
    )
    if not left:
        conn.execute(devices.delete().where(devices.c.device_library_id == device_id))
    return True


def registration_count(conn: Connection, serial: str) -> int:
    """How many devices are registered for the card."""
    found: Any = conn.scalar(
        sa.select(sa.func.count())
        .select_from(registrations)
        .where(registrations.c.serial == serial)
    )
    return int(found or 0)


def push_tokens(conn: Connection, serial: str) -> list[str]:
    """The push tokens of every device registered for the card, sorted."""
    rows = conn.scalars(
        sa.select(devices.c.push_token)
        .join(
            registrations,
            registrations.c.device_library_id == devices.c.device_library_id,
        )
        .where(registrations.c.serial == serial)
        .distinct()
    )
    return sorted(rows)
