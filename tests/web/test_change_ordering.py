"""Change ordering (issue 11): a device that follows the protocol never misses an update.

* A change that waited for a lock (PostgreSQL: the card row and the old change-tag counter row
  held by another connection; SQLite: another process's write lock) while the device fetched
  the old pass and was told a settled Last-Modified still reaches the device: 200, not 304.
* Many concurrent writers with random delays between their statements, and a device that
  follows ``passesUpdatedSince`` and ``If-Modified-Since`` exactly: after the writers stop, one
  more round (what the last push triggers) leaves it with every card's final pass.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.util import await_only

from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store

from .conftest import Wallet, make_wallet
from .device import Device, InstalledPass

HOLD_S = 4.0


class FrozenClock:
    """The service's clock stands still: every change happens at the same instant, the worst
    case for Last-Modified (whole seconds)."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC).replace(microsecond=200_000)

    def __call__(self) -> datetime:
        return self.moment


def _content(value: Any) -> Any:
    """A pass.json without its changeMessage texts."""
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k != "changeMessage"}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


async def _service(store: Store, coffee: CardTemplate, clock: Any) -> StampService:
    service = StampService(store, clock=clock)
    await service.publish_template(coffee)
    return service


async def _installed(wallet: Wallet, device: Device, serial: str) -> InstalledPass:
    response = await device.pass_raw(
        wallet.base,
        wallet.pass_type,
        serial,
        authorization=f"ApplePass {await _token(wallet, serial)}",
    )
    assert response.status_code == 200
    installed = device.install(response.content)
    installed.last_modified = response.headers["last-modified"]
    assert await device.register(installed) == 201
    return installed


async def _token(wallet: Wallet, serial: str) -> str:
    return (await wallet.service.get_card(serial)).card.authentication_token


def _progress(installed: InstalledPass) -> Any:
    fields = installed.verified.pass_json["storeCard"]["secondaryFields"]
    return next(f["value"] for f in fields if f["key"] == "progress")


@contextmanager
def _sqlite_write_lock(store: Store) -> Iterator[None]:
    """Another process's write transaction on the SQLite file."""
    path = store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_change_that_waited_for_a_lock_reaches_the_device(
    store: Store, coffee: CardTemplate, dev_pki: DevPKI
) -> None:
    service = await _service(store, coffee, FrozenClock())
    wallet = make_wallet(service, dev_pki)
    try:
        serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
        device = Device(wallet.client, dev_pki.root_cert.read_bytes())
        installed = await _installed(wallet, device, serial)
        await device.changed_serials(wallet.base, wallet.pass_type)
        before = _progress(installed)

        if store.is_postgres:
            # What a stamp could wait on: the card's row (another writer of the card) and the
            # old design's counter row (a template design update held it).
            pooled = await store.engine.raw_connection()
            holder = pooled.driver_connection
            assert holder is not None
            await holder.execute("BEGIN")
            await holder.fetch("SELECT serial FROM cards WHERE serial = $1 FOR UPDATE", serial)
            await holder.fetch("SELECT value FROM counters WHERE name = 'change_tag' FOR UPDATE")
            stamp = asyncio.create_task(service.add_stamps(serial))
            await asyncio.sleep(HOLD_S - 1)
            # The device looks while the stamp waits: its old pass, now a settled second.
            await device.fetch(installed)
            await asyncio.sleep(1)
            assert not stamp.done()
            await holder.execute("ROLLBACK")
            pooled.close()
            await stamp
        else:
            with _sqlite_write_lock(store):
                stamp = asyncio.create_task(service.add_stamps(serial))
                await asyncio.sleep(HOLD_S - 1)
                await device.fetch(installed)
                await asyncio.sleep(1)
                assert not stamp.done()
            await stamp

        assert serial in await device.changed_serials(wallet.base, wallet.pass_type)
        response = await device.fetch(installed)
        assert response.status_code == 200, "the new pass was hidden by a 304"
        assert _progress(installed) != before
    finally:
        await wallet.client.aclose()


async def test_the_old_counter_lock_does_not_hold_up_writers(
    store: Store, coffee: CardTemplate
) -> None:
    """No global lock: a stamp completes while the old change-tag counter row is held."""
    if not store.is_postgres:
        pytest.skip("SQLite has one writer at a time by design")
    service = await _service(store, coffee, FrozenClock())
    serial = (await service.issue_card("coffee")).card.serial
    pooled = await store.engine.raw_connection()
    holder = pooled.driver_connection
    assert holder is not None
    try:
        await holder.execute("BEGIN")
        await holder.fetch("SELECT value FROM counters WHERE name = 'change_tag' FOR UPDATE")
        await asyncio.wait_for(service.add_stamps(serial), timeout=2)
    finally:
        await holder.execute("ROLLBACK")
        pooled.close()


@contextmanager
def _random_delays(store: Store, rng: random.Random, high: float) -> Iterator[None]:
    """A random pause before every statement of every transaction the service runs."""
    found = store.engine.sync_engine if store.is_postgres else store._sync_engine
    assert found is not None
    engine: sa.Engine = found

    def pause(*_args: Any) -> None:
        delay = rng.uniform(0, high)
        if store.is_postgres:
            await_only(asyncio.sleep(delay))  # inside run_sync's greenlet: other tasks run
        else:
            time.sleep(delay)  # SQLite's writer thread

    event.listen(engine, "before_cursor_execute", pause)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", pause)


class CoarseClock:
    """Whole seconds only: many changes share one, as in a busy shop."""

    def __call__(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize("seed", [1, 2])
async def test_concurrent_writers_and_a_polling_device(
    store: Store, coffee: CardTemplate, dev_pki: DevPKI, seed: int
) -> None:
    rng = random.Random(seed)
    service = await _service(store, coffee, CoarseClock())
    wallet = make_wallet(service, dev_pki)
    try:
        serials = [
            (await service.issue_card("coffee", Holder(name=f"H{i}"))).card.serial for i in range(6)
        ]
        device = Device(wallet.client, dev_pki.root_cert.read_bytes())
        for serial in serials:
            await _installed(wallet, device, serial)
        writers = 12 if store.is_postgres else 4
        operations = 6
        stop = asyncio.Event()

        async def writer(k: int) -> None:
            mine = random.Random(seed * 1000 + k)
            for _ in range(operations):
                serial = mine.choice(serials)
                if mine.random() < 0.7:
                    await service.add_stamps(serial)
                else:
                    await service.set_stamps(serial, mine.randrange(0, 5))
                await asyncio.sleep(mine.uniform(0, 0.02))

        async def poller() -> None:
            while not stop.is_set():
                await _round(device, wallet)
                await asyncio.sleep(rng.uniform(0, 0.05))

        with _random_delays(store, rng, 0.01):
            polling = asyncio.create_task(poller())
            await asyncio.gather(*(writer(k) for k in range(writers)))
            stop.set()
            await polling
        await _round(device, wallet)  # what the last change's push triggers

        for serial in serials:
            final = await device.pass_raw(
                wallet.base,
                wallet.pass_type,
                serial,
                authorization=f"ApplePass {device.passes[serial].token}",
            )
            assert final.status_code == 200
            held = device.passes[serial]
            expected = verify_pkpass(final.content, ca=dev_pki.root_cert.read_bytes()).pass_json
            # The content, not the alerts: the device's pass may carry changeMessage for a
            # notified change it fetched after a silent one (issue 10); this fresh download
            # without If-Modified-Since follows the last change alone.
            assert _content(held.verified.pass_json) == _content(expected), (
                f"{serial} missed an update"
            )
    finally:
        await wallet.client.aclose()


async def _round(device: Device, wallet: Wallet) -> None:
    """One device round: the serials changed since its tag, then each one fetched with
    If-Modified-Since (a 200 with an identical pass is tolerated: Wallet only logs it)."""
    for serial in await device.changed_serials(wallet.base, wallet.pass_type):
        installed = device.passes.get(serial)
        if installed is not None:
            await device.fetch(installed)


def test_a_clock_step_is_one_second() -> None:
    from passkit_stamps.store.changes import next_change_time

    t = datetime(2026, 1, 1, 12, 0, 0, 300_000, tzinfo=UTC)
    assert next_change_time(t, t) == t + timedelta(seconds=1)
    assert next_change_time(t, t + timedelta(seconds=5)) == t + timedelta(seconds=5)
