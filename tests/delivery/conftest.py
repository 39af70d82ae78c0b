"""Fixtures of the dispatcher's tests: the web app with a service whose clock is in the past
(tests/web's), the fake APNs requiring the development Pass Type ID certificate, a client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from passkit_stamps.apple.apns import APNsClient
from passkit_stamps.delivery.worker import DeliveryWorker
from passkit_stamps.model import CardTemplate
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.service.delivery import Delivery
from passkit_stamps.store.store import Store
from passkit_stamps.testing import FakeAPNs
from web.conftest import PastClock, Wallet, make_wallet


@pytest.fixture
async def web_service(store: Store, coffee: CardTemplate, salon: CardTemplate) -> StampService:
    svc = StampService(store, clock=PastClock())
    await svc.publish_template(coffee)
    await svc.publish_template(salon)
    return svc


@pytest.fixture
async def wallet(web_service: StampService, dev_pki: DevPKI) -> AsyncIterator[Wallet]:
    w = make_wallet(web_service, dev_pki)
    try:
        yield w
    finally:
        await w.client.aclose()


@pytest.fixture
async def apns(dev_pki: DevPKI) -> AsyncIterator[FakeAPNs]:
    async with FakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as fake:
        yield fake


@pytest.fixture
async def apns_client(apns: FakeAPNs, dev_pki: DevPKI) -> AsyncIterator[APNsClient]:
    async with APNsClient(
        dev_pki.credentials(), host=apns.host, port=apns.port, ca=apns.ca_file, backoff_base=0.01
    ) as client:
        yield client


async def claim_visible(
    service: StampService, owner: str, *, want: int = 1, timeout: float = 5.0, **options: Any
) -> list[Delivery]:
    """Claim, trying again while fewer than ``want`` rows come: on PostgreSQL a row is claimed
    only once its change tag is below the visible horizon (store/changes.py), which other
    transactions on the server (other test runs) can hold back for a moment."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while True:
        got += await service.claim_deliveries(owner, **options)
        if len(got) >= want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.02)


async def drain_rows(worker: DeliveryWorker, rows: int, timeout: float = 10.0) -> int:
    """Run the worker's rounds until ``rows`` rows were taken (see :func:`claim_visible`)."""
    total = 0
    deadline = time.monotonic() + timeout
    while total < rows and time.monotonic() < deadline:
        taken = await worker.run_once()
        total += taken
        if not taken:
            await asyncio.sleep(0.02)
    return total


async def settled(store: Store, timeout: float = 5.0) -> None:
    """Wait until every outbox row is claimable (PostgreSQL: below the visible horizon)."""
    if not store.is_postgres:
        return
    from passkit_stamps.store import changes
    from passkit_stamps.store.schema import outbox

    query = sa.select(sa.func.coalesce(sa.func.max(outbox.c.change_tag), 0) < changes.PG_HORIZON)
    deadline = time.monotonic() + timeout
    while not await store.run_read(lambda c: bool(c.scalar(query))):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.02)
