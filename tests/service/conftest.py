"""Helpers for the service tests (the store, clock and service fixtures are tests/conftest.py's)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from passkit_stamps.model import CardTemplate
from passkit_stamps.store.schema import events, outbox
from passkit_stamps.store.store import Store


def variant(template: CardTemplate, **changes: Any) -> CardTemplate:
    """The template with some fields changed (validated again)."""
    data = template.model_dump()
    data.update(changes)
    return CardTemplate.model_validate(data)


async def counts(store: Store) -> tuple[int, int]:
    """(journal rows, outbox rows): what a refused operation must leave unchanged."""
    async with store.read() as conn:
        n_events = await conn.scalar(sa.select(sa.func.count()).select_from(events))
        n_outbox = await conn.scalar(sa.select(sa.func.count()).select_from(outbox))
    return int(n_events or 0), int(n_outbox or 0)


async def outbox_rows(store: Store, serial: str) -> list[dict[str, Any]]:
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(outbox).where(outbox.c.serial == serial).order_by(outbox.c.id)
        )
        return [dict(r) for r in rows.mappings()]
