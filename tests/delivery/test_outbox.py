"""The dispatcher's service operations on both backends: claim with a lease, acknowledge,
back-off and parking, release, retry dead, stats, dead-token pruning honouring the 410 time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import Clock
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.service import StampService
from passkit_stamps.service.delivery import Coverage, RetryPolicy
from passkit_stamps.store import outbox as store_outbox
from store_backends import open_test_store, postgres_url

from .conftest import claim_visible, settled

PASS_TYPE = "pass.com.example.stamps"


async def _card_in_wallets(service: StampService, *platforms: Platform) -> str:
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    for platform in platforms:
        await service.record_platform(serial, platform, True)
    return serial


async def test_claim_leases_rows_once_until_the_lease_runs_out(
    service: StampService, clock: Clock
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE, Platform.GOOGLE)
    await service.add_stamps(serial, 1)
    first = await claim_visible(service, "w1", want=2, lease=timedelta(seconds=30))
    assert sorted(d.platform for d in first) == ["apple", "google"]
    assert all(d.attempts == 1 and d.serial == serial for d in first)
    assert await service.claim_deliveries("w2") == []  # leased
    clock.advance(seconds=31)  # w1 died: its rows are due again
    again = await claim_visible(service, "w2", platforms=["apple"])
    assert [(d.platform, d.attempts) for d in again] == [("apple", 2)]
    assert await service.acknowledge_deliveries(d.id for d in again) == 1
    [stats] = [s for s in await service.outbox_stats() if s.platform == "google"]
    assert (stats.pending, stats.retrying, stats.dead) == (1, 0, 0)


async def test_failures_back_off_with_jitter_then_park_dead_and_retry(
    service: StampService, clock: Clock
) -> None:
    serial = await _card_in_wallets(service, Platform.GOOGLE)
    await service.add_stamps(serial, 1)
    policy = RetryPolicy(max_attempts=3, backoff_base=10, backoff_max=15)
    delays = []
    for attempt in (1, 2):
        [row] = await claim_visible(service, "w")
        assert row.attempts == attempt
        assert await service.fail_deliveries([(row, "503 busy")], policy, rand=lambda: 1.0) == 0
        assert await service.claim_deliveries("w") == []  # not due yet
        delays.append(policy.delay(attempt, lambda: 1.0))
        clock.advance(seconds=delays[-1])
    assert delays == [10.0, 15.0]  # doubled, capped
    assert policy.delay(5, lambda: 0.0) == 7.5  # jitter: half to full
    [row] = await claim_visible(service, "w")
    assert row.last_error == "503 busy"
    assert await service.fail_deliveries([(row, "503 again")], policy) == 1
    clock.advance(days=1)
    assert await service.claim_deliveries("w") == []  # parked: never due
    [dead] = await service.dead_deliveries()
    assert (dead.serial, dead.last_error, dead.attempts) == (serial, "503 again", 3)
    [stats] = await service.outbox_stats()
    assert (stats.pending, stats.retrying, stats.dead, stats.oldest) == (0, 0, 1, None)
    assert await service.retry_dead_deliveries(platform="apple") == 0
    assert await service.retry_dead_deliveries() == 1
    [row] = await claim_visible(service, "w")
    assert row.attempts == 1


async def test_a_row_older_than_the_max_age_is_parked_at_its_next_failure(
    service: StampService, clock: Clock
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE)
    await service.add_stamps(serial, 1)
    clock.advance(hours=2)
    [row] = await claim_visible(service, "w")
    policy = RetryPolicy(max_age=timedelta(hours=1))
    assert await service.fail_deliveries([(row, "boom")], policy) == 1


async def test_release_gives_rows_back_without_counting_the_attempt(
    service: StampService,
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE)
    await service.add_stamps(serial, 1)
    [row] = await claim_visible(service, "w")
    assert await service.release_deliveries([row.id], "other") == 0  # not its lease
    assert await service.release_deliveries([row.id], "w", note="apple paused: bad cert") == 1
    [again] = await claim_visible(service, "w")
    assert (again.attempts, again.last_error) == (1, "apple paused: bad cert")


async def test_claims_by_concurrent_workers_never_share_a_row_or_a_card(
    service: StampService,
) -> None:
    serials = [await _card_in_wallets(service, Platform.APPLE) for _ in range(4)]
    for serial in serials:
        for _ in range(5):
            await service.add_stamps(serial, 1)
    await settled(service.store)
    batches = await asyncio.gather(*(service.claim_deliveries(f"w{i}", limit=7) for i in range(4)))
    owners = {}
    for i, batch in enumerate(batches):
        for d in batch:
            assert owners.setdefault(d.serial, i) == i  # a card goes to one worker
    batches.append(await service.claim_deliveries("w5", limit=7))  # a card held is skipped
    ids = [d.id for batch in batches for d in batch]
    assert len(ids) == len(set(ids)) == 20


async def test_outbox_writes_wake_workers_in_process(service: StampService) -> None:
    woken = []
    remove = store_outbox.on_outbox_write(lambda: woken.append(1))
    try:
        serial = await _card_in_wallets(service, Platform.APPLE)
        await service.add_stamps(serial, 1)
    finally:
        remove()
    assert woken
    before = len(woken)
    await service.add_stamps(serial, 1)
    assert len(woken) == before


async def test_dead_token_pruning_honours_the_410_timestamp(
    service: StampService, clock: Clock
) -> None:
    serial = await _card_in_wallets(service)
    other = await _card_in_wallets(service)
    token, fresh = "aa" * 32, "bb" * 32
    await service.register_device("old-phone", token, PASS_TYPE, serial)
    await service.register_device("old-phone", token, PASS_TYPE, other)
    await service.register_device("phone", fresh, PASS_TYPE, serial)
    dead_since = clock.now - timedelta(minutes=1)
    clock.advance(minutes=5)
    # The device registered again after the 410's timestamp: the token lives again.
    await service.register_device("old-phone", token, PASS_TYPE, other)
    assert await service.prune_dead_token(token, dead_since) == []
    clock.advance(minutes=5)
    later = clock.now - timedelta(seconds=1)
    assert sorted(await service.prune_dead_token(token, later)) == sorted([other, serial])
    assert await service.push_tokens(serial) == [fresh]
    assert await service.push_tokens(other) == []
    journal = [e.type for e in await service.card_history(other)]
    assert journal[-1] == EventType.PASS_REMOVED
    assert EventType.PASS_REMOVED not in [e.type for e in await service.card_history(serial)]
    # 400 BadDeviceToken: no timestamp, removed whatever happened since.
    assert await service.prune_dead_token(fresh, None) == [serial]
    assert [e.type for e in await service.card_history(serial)][-1] == EventType.PASS_REMOVED


@pytest.mark.parametrize("limit", [1, 3])
async def test_claims_take_the_oldest_rows_first(service: StampService, limit: int) -> None:
    serials = [await _card_in_wallets(service, Platform.APPLE) for _ in range(3)]
    for serial in serials:
        await service.add_stamps(serial, 1)
    await settled(service.store)
    claimed = await service.claim_deliveries("w", limit=limit)
    assert [d.serial for d in claimed] == serials[:limit]


async def test_the_worker_sweeps_expired_cards_through_the_service(
    service: StampService, clock: Clock
) -> None:
    from passkit_stamps.delivery.runner import _expiry_sweep

    serial = await _card_in_wallets(service, Platform.GOOGLE)
    await service.add_stamps(serial, 1)
    sweep = _expiry_sweep(service)
    assert sweep is not None
    assert await sweep() == 0
    clock.advance(days=400)  # coffee cards expire 365 days after the last stamp
    assert await sweep() == 1
    assert (await service.get_card(serial)).card.state.value == "expired"
    rows = await claim_visible(service, "w", want=2)
    assert [r.reason for r in rows][-1:] and all(r.platform == "google" for r in rows)


async def test_a_claim_takes_every_due_row_of_its_cards(service: StampService) -> None:
    first = await _card_in_wallets(service, Platform.APPLE)
    other = await _card_in_wallets(service, Platform.APPLE)
    for _ in range(3):
        await service.add_stamps(first, 1)
    await service.add_stamps(other, 1)
    await settled(service.store)
    claimed = await service.claim_deliveries("w", limit=1)
    assert len(claimed) > 1 and {d.serial for d in claimed} == {first}  # one delivery for all
    rest = await service.claim_deliveries("w2")
    assert [d.serial for d in rest] == [other]  # nothing of the first card left behind


async def test_a_card_in_flight_is_not_claimed_by_another_worker(
    service: StampService,
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE)
    await service.add_stamps(serial, 1)
    [first] = await claim_visible(service, "w1", lease=timedelta(seconds=30))
    await service.add_stamps(serial, 1)  # committed while w1's delivery is in flight
    await settled(service.store)
    # All due rows of a card go to one worker: w2 leaves the card to w1 (whose push, sent
    # after this change, may cover it) instead of pushing the same device a second time.
    assert await service.claim_deliveries("w2") == []
    assert await service.acknowledge_deliveries([first.id]) == 1
    [second] = await claim_visible(service, "w2")
    assert (second.serial, second.attempts) == (serial, 1)


async def test_rows_committed_before_the_state_went_out_are_acknowledged_with_it(
    service: StampService,
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE)
    await service.register_device("phone", "cc" * 32, PASS_TYPE, serial)
    await service.add_stamps(serial, 1)
    [first] = await claim_visible(service, "w1", lease=timedelta(seconds=30))
    await service.add_stamps(serial, 1)  # committed before the push below goes out
    await settled(service.store)
    sent = await service.push_targets([serial])  # read just before pushing
    assert [t.push_token for t in sent.targets] == ["cc" * 32]
    await service.add_stamps(serial, 1)  # committed after: the push did not cover it
    covered = Coverage("apple", (serial,), sent.committed_below, "w1")
    assert await service.acknowledge_deliveries([first.id], covered=covered) == 2
    await settled(service.store)
    [left] = await claim_visible(service, "w2")
    assert left.serial == serial and left.id > first.id
    assert await service.claim_deliveries("w3") == []


async def test_a_platform_a_delivery_did_not_cover_keeps_its_rows(
    service: StampService,
) -> None:
    serial = await _card_in_wallets(service, Platform.APPLE, Platform.GOOGLE)
    await service.add_stamps(serial, 1)
    apple = await claim_visible(service, "w1", platforms=["apple"])
    sent = await service.push_targets([serial])
    covered = Coverage("apple", (serial,), sent.committed_below, "w1")
    assert await service.acknowledge_deliveries([r.id for r in apple], covered=covered) == 1
    [google] = await claim_visible(service, "w2")
    assert google.platform == "google"


@asynccontextmanager
async def _writer_holding_an_id(url: str, database: str | None) -> AsyncIterator[None]:
    """A transaction with a transaction id, open for the block, in ``database`` of the test
    server (None: the store's own)."""
    import asyncpg

    plain = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    if database is not None:
        plain = plain.rsplit("/", 1)[0] + "/" + database
    conn = await asyncpg.connect(plain)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.fetchval("SELECT pg_current_xact_id()")
        yield
        await transaction.rollback()
    finally:
        await conn.close()


async def test_a_transaction_in_another_database_does_not_hold_deliveries_back(
    tmp_path: Path, clock: Clock, coffee: CardTemplate
) -> None:
    url = postgres_url()
    async with open_test_store("postgresql", tmp_path) as store:
        service = StampService(store, clock=clock)
        await service.publish_template(coffee)
        serial = await _card_in_wallets(service, Platform.APPLE)
        await service.register_device("phone", "dd" * 32, PASS_TYPE, serial)
        async with _writer_holding_an_id(url, "postgres"):
            await service.add_stamps(serial, 1)
            # Transaction ids are cluster-wide, but a transaction of another database can
            # never write a change here: it does not hold the horizon back.
            [row] = await claim_visible(service, "w")
            assert row.serial == serial
            listed = await service.serials_updated_since("phone", PASS_TYPE, None)
            assert listed.serials == [serial]


async def test_a_transaction_in_this_database_holds_the_horizon(
    tmp_path: Path, clock: Clock, coffee: CardTemplate
) -> None:
    url = postgres_url()
    async with open_test_store("postgresql", tmp_path) as store:
        service = StampService(store, clock=clock)
        await service.publish_template(coffee)
        serial = await _card_in_wallets(service, Platform.APPLE)
        async with _writer_holding_an_id(url, None):
            await service.add_stamps(serial, 1)
            # It may write a change with a lower tag that commits later: nothing above it is
            # final until it ends.
            assert await service.claim_deliveries("w") == []
        [row] = await claim_visible(service, "w")
        assert row.serial == serial
