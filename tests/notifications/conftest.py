"""Helpers of the notification tests (store, clock and service fixtures: tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from passkit_stamps.store.schema import events, notifications, outbox
from passkit_stamps.store.store import Store


async def outbox_rows(store: Store, serial: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(outbox).order_by(outbox.c.id)
    if serial is not None:
        query = query.where(outbox.c.serial == serial)
    async with store.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def journal_types(store: Store, serial: str) -> list[str]:
    query = sa.select(events.c.type).where(events.c.serial == serial).order_by(events.c.id)
    async with store.read() as conn:
        return list((await conn.scalars(query)).all())


async def spent_rows(store: Store) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(notifications)) or 0)
