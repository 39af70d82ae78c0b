"""Fixtures for the store and service tests: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from passkit_stamps.model import CardTemplate
from passkit_stamps.service import StampService
from passkit_stamps.store.schema import events, outbox
from passkit_stamps.store.store import Store
from store_backends import BACKENDS, open_test_store

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store on each backend (PostgreSQL: skipped with a reason when not configured)."""
    async with open_test_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(
    store: Store, clock: Clock, coffee: CardTemplate, salon: CardTemplate
) -> StampService:
    """A service with the coffee (8 stamps, <= 3 per visit) and salon templates published."""
    svc = StampService(store, clock=clock)
    await svc.publish_template(coffee)
    await svc.publish_template(salon)
    return svc


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
