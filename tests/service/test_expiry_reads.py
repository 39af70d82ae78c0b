"""Issue 12 item 2: a card whose ``expires_at`` has passed reads as expired everywhere — the
details, the list and its state filter (in SQL), the export, the pass and the Google object —
before anything has written the state (no stamp refused yet)."""

from __future__ import annotations

import csv
import io

from conftest import Clock  # tests/conftest.py
from passkit_stamps.google.builders import GoogleSettings, build_loyalty_object
from passkit_stamps.model import CardState
from passkit_stamps.service import StampService


async def _cards(service: StampService, clock: Clock) -> tuple[str, str]:
    """An expiring coffee card (365 days after its last stamp) and a salon card (no expiry),
    then the clock past the coffee card's expiry."""
    expiring = (await service.issue_card("coffee")).card.serial
    await service.add_stamps(expiring, 1)
    lasting = (await service.issue_card("salon")).card.serial
    clock.advance(days=366)
    return expiring, lasting


async def test_details_show_the_state_at_the_time_of_the_read(
    service: StampService, clock: Clock
) -> None:
    expiring, lasting = await _cards(service, clock)
    assert (await service.get_card(expiring)).card.state is CardState.EXPIRED
    assert (await service.card_page(expiring)).card.state is CardState.EXPIRED
    assert (await service.get_card(lasting)).card.state is CardState.ACTIVE
    # Nothing was written: the journal has no card_expired yet (the sweep's job).
    history = await service.card_history(expiring)
    assert "card_expired" not in [e.type.value for e in history]


async def test_list_and_its_state_filter(service: StampService, clock: Clock) -> None:
    expiring, lasting = await _cards(service, clock)
    listed = {c.serial: c.state for c in (await service.list_cards()).items}
    assert listed == {expiring: CardState.EXPIRED, lasting: CardState.ACTIVE}
    expired = await service.list_cards(state="expired")
    assert [c.serial for c in expired.items] == [expiring]
    assert expired.total == 1
    active = await service.list_cards(state="active")
    assert [c.serial for c in active.items] == [lasting]
    assert active.total == 1


async def test_not_yet_expired_reads_active(service: StampService, clock: Clock) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    await service.add_stamps(serial, 1)
    clock.advance(days=364)
    assert (await service.get_card(serial)).card.state is CardState.ACTIVE
    assert [c.serial for c in (await service.list_cards(state="active")).items] == [serial]
    assert (await service.list_cards(state="expired")).items == ()


async def test_export_shows_and_filters_the_state_at_the_time(
    service: StampService, clock: Clock
) -> None:
    expiring, lasting = await _cards(service, clock)
    text = "".join([chunk async for chunk in service.export_csv()])
    states = {row["serial"]: row["state"] for row in csv.DictReader(io.StringIO(text))}
    assert states == {expiring: "expired", lasting: "active"}
    only = "".join([chunk async for chunk in service.export_csv(state="expired")])
    assert [row["serial"] for row in csv.DictReader(io.StringIO(only))] == [expiring]
    only = "".join([chunk async for chunk in service.export_csv(state="active")])
    assert [row["serial"] for row in csv.DictReader(io.StringIO(only))] == [lasting]


async def test_the_pass_and_the_google_object_show_it_expired(
    service: StampService, clock: Clock
) -> None:
    expiring, _ = await _cards(service, clock)
    found = await service.card_for_pass("pass.com.example.stamps", expiring)
    assert found is not None
    assert found.card.state is CardState.EXPIRED
    details = await service.get_card(expiring)
    settings = GoogleSettings("3388000000012345678", "https://img.example/")
    assert build_loyalty_object(details.template, details.card, settings)["state"] == "EXPIRED"
