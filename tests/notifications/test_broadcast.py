"""Broadcasts: a stored campaign, enqueued in batches, resumable after a crash without any card
enqueued twice, journalled, with a report per platform."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import Clock  # tests/conftest.py
from passkit_stamps.engine import Platform
from passkit_stamps.errors import CardInputError, CardNotFoundError
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.service.campaigns import BROADCAST_WARNING, BroadcastReach, CampaignReport
from passkit_stamps.service.delivery import Delivery, RetryPolicy
from passkit_stamps.store import campaigns as store_campaigns

from .conftest import journal_types, outbox_rows


async def cards(service: StampService, n: int, *platforms: Platform) -> list[str]:
    serials = []
    for i in range(n):
        serial = (await service.issue_card("coffee", Holder(name=f"Holder {i}"))).card.serial
        for p in platforms:
            await service.record_platform(serial, p, True)
        serials.append(serial)
    return serials


async def test_dry_run_counts_reach_and_budget_and_sends_nothing(
    service: StampService, clock: Clock
) -> None:
    both = await cards(service, 3, Platform.APPLE, Platform.GOOGLE)
    google = await cards(service, 2, Platform.GOOGLE)
    await cards(service, 1)  # saved in no wallet
    await service.register_device("device-1", "token-1", "pass.any", both[0])
    await service.register_device("device-2", "token-2", "pass.any", both[0])
    await service.register_device("device-3", "token-3", "pass.any", both[1])
    for _ in range(3):  # one card has spent its budget
        clock.advance(minutes=10)
        await service.add_stamps(google[0])
    before = await outbox_rows(service.store)
    reach = await service.broadcast("Spring menu", dry_run=True)
    assert isinstance(reach, BroadcastReach)
    assert (reach.cards, reach.devices, reach.google_objects) == (6, 3, 5)
    assert (reach.notified, reach.silent, reach.no_wallet) == (4, 1, 1)
    assert "blocking of your cards" in reach.warning and reach.warning == BROADCAST_WARNING
    assert await outbox_rows(service.store) == before
    assert await service.list_campaigns() == []
    only = await service.broadcast("x", platform="apple", dry_run=True)
    assert isinstance(only, BroadcastReach) and only.cards == 3


async def test_broadcast_enqueues_each_card_once_with_a_report(
    service: StampService, clock: Clock
) -> None:
    reached = await cards(service, 7, Platform.APPLE, Platform.GOOGLE)
    web_only = await cards(service, 2)
    voided = (await cards(service, 1, Platform.APPLE))[0]
    await service.void_card(voided)
    for _ in range(3):
        clock.advance(minutes=10)
        await service.add_stamps(reached[0])
    report = await service.broadcast("Closed on Monday", batch_size=3, actor="owner")
    assert isinstance(report, CampaignReport) and report.finished
    assert (report.cards, report.notified, report.silent) == (9, 6, 1)
    assert {p.platform: (p.targeted, p.notified, p.silent) for p in report.platforms} == {
        "apple": (7, 6, 1),
        "google": (7, 6, 1),
    }
    for serial in reached + web_only:
        assert (await journal_types(service.store, serial)).count("campaign_sent") == 1
        assert (await service.get_card(serial)).card.message == "Closed on Monday"
    rows = [r for r in await outbox_rows(service.store) if r["campaign_id"] == report.id]
    assert Counter((r["serial"], r["platform"]) for r in rows) == Counter(
        {(s, p): 1 for s in reached for p in ("apple", "google")}
    )
    assert {r["serial"] for r in rows if r["silent"]} == {reached[0]}
    assert "campaign_sent" not in await journal_types(service.store, voided)
    states = await service.card_states([reached[1]])
    assert states[reached[1]].message_id == f"c{report.id}"
    # delivered and failed come from what the dispatcher acknowledges and parks
    # (rows as the dispatcher's claim hands them out; claiming itself is its tests' business)
    claimed = [
        Delivery(
            r["id"],
            r["serial"],
            r["platform"],
            r["reason"],
            r["silent"],
            r["change_tag"],
            r["created_at"],
            attempts=1,
        )
        for r in rows
    ]
    apple = [d for d in claimed if d.platform == "apple"]
    google = [d for d in claimed if d.platform == "google"]
    await service.acknowledge_deliveries(d.id for d in apple)
    await service.fail_deliveries([(d, "503") for d in google[:2]], RetryPolicy(max_attempts=1))
    again = await service.campaign_report(report.id)
    figures = {p.platform: (p.delivered, p.pending, p.failed) for p in again.platforms}
    assert figures == {"apple": (7, 0, 0), "google": (0, 5, 2)}
    assert [c.id for c in await service.list_campaigns()] == [report.id]


async def test_a_crashed_broadcast_resumes_without_enqueuing_a_card_twice(
    service: StampService, monkeypatch: pytest.MonkeyPatch
) -> None:
    serials = await cards(service, 10, Platform.APPLE)
    real = store_campaigns.write_message
    calls = {"n": 0}

    def crash_on_third_batch(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        real(*args, **kwargs)  # type: ignore[arg-type]
        if calls["n"] == 3:  # after the batch's writes: the transaction must roll back
            raise RuntimeError("killed mid-batch")

    monkeypatch.setattr(store_campaigns, "write_message", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        await service.broadcast("Resumed", batch_size=3)
    monkeypatch.setattr(store_campaigns, "write_message", real)
    (campaign,) = await service.list_campaigns()
    assert campaign.state == "sending" and campaign.cards == 6
    assert await service.resume_campaigns() == [campaign.id]
    done = await service.campaign_report(campaign.id)
    assert done.finished and done.cards == 10
    rows = [r for r in await outbox_rows(service.store) if r["campaign_id"] == campaign.id]
    assert sorted(r["serial"] for r in rows) == sorted(serials)  # every card exactly once
    for serial in serials:
        assert (await journal_types(service.store, serial)).count("campaign_sent") == 1
    assert await service.resume_campaigns() == []
    # resuming a finished campaign changes nothing
    assert (await service.resume_campaign(campaign.id)).cards == 10


async def test_a_resumed_campaign_skips_cards_issued_after_it_started(
    service: StampService, clock: Clock
) -> None:
    first = await cards(service, 4, Platform.GOOGLE)
    campaign_id = await service.start_campaign("Hello", {"template_id": "coffee"})
    partial = await service.resume_campaign(campaign_id, batch_size=2, max_batches=1)
    assert partial.state == "sending" and partial.cards == 2
    clock.advance(seconds=1)
    late = await cards(service, 2, Platform.GOOGLE)
    done = await service.resume_campaign(campaign_id, batch_size=2)
    assert done.finished and done.cards == 4
    for serial in late:
        assert "campaign_sent" not in await journal_types(service.store, serial)
    for serial in first:
        assert "campaign_sent" in await journal_types(service.store, serial)


async def test_bad_broadcasts_are_typed_errors(service: StampService) -> None:
    with pytest.raises(CardInputError, match="message"):
        await service.broadcast("")
    with pytest.raises(CardInputError, match="message"):
        await service.broadcast("x" * 1001)
    with pytest.raises(CardInputError, match="platform"):
        await service.broadcast("hi", platform="fax")
    with pytest.raises(CardInputError, match="batch_size"):
        await service.broadcast("hi", batch_size=0)
    with pytest.raises(CardInputError, match="filter"):
        await service.start_campaign("hi", {"colour": "red"})
    with pytest.raises(CardNotFoundError):
        await service.campaign_report(404)
    with pytest.raises(CardNotFoundError):
        await service.resume_campaign(404)
