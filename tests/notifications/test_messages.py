"""Personal messages, the budget's upkeep, the expiry sweep, and void/delete as final updates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import Clock  # tests/conftest.py
from passkit_stamps.apple.passjson import build_pass_json
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import CardInputError
from passkit_stamps.model import CardState, Holder
from passkit_stamps.service import StampService

from .conftest import journal_types, outbox_rows, spent_rows

IDS = {"pass_type_identifier": "pass.com.example.stamps", "team_identifier": "EXAMPLE123"}


async def wallet_card(service: StampService, name: str = "Ada") -> str:
    serial = (await service.issue_card("coffee", Holder(name=name))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    await service.record_platform(serial, Platform.GOOGLE, True)
    return serial


def message_field(data: dict[str, object]) -> dict[str, object]:
    style = data["storeCard"]
    assert isinstance(style, dict)
    return next(f for f in style["backFields"] if f["key"] == "message")


async def test_a_message_is_on_the_pass_and_notifies_within_the_budget(
    service: StampService, clock: Clock
) -> None:
    serial = await wallet_card(service)
    sent = await service.send_message(serial, "Open on Sunday!")
    assert sent.notified and sent.events[0].type is EventType.MESSAGE_SENT
    found = await service.card_for_pass("pass.any", serial)
    assert found is not None and found.notified
    field = message_field(build_pass_json(found.template, found.card, notify=True, **IDS))
    assert field["value"] == "Open on Sunday!" and field["changeMessage"] == "%@"
    rows = await outbox_rows(service.store, serial)
    assert {(r["platform"], r["silent"], r["reason"]) for r in rows} == {
        ("apple", False, "message_sent"),
        ("google", False, "message_sent"),
    }
    # the Google sender reads the message and its id from the card (addMessage, once per id)
    state = (await service.card_states([serial]))[serial]
    assert state.card.message == "Open on Sunday!" and state.notified
    assert state.message_id == f"m{sent.events[0].id}"


async def test_over_budget_a_message_is_still_on_the_pass_silently(
    service: StampService, clock: Clock
) -> None:
    serial = await wallet_card(service)
    for _ in range(3):
        clock.advance(minutes=10)
        assert (await service.add_stamps(serial)).notified
    sent = await service.send_message(serial, "Happy birthday")
    assert not sent.notified
    found = await service.card_for_pass("pass.any", serial)
    assert found is not None and not found.notified
    data = build_pass_json(found.template, found.card, notify=found.notified, **IDS)
    field = message_field(data)
    assert field["value"] == "Happy birthday" and "changeMessage" not in field
    assert all(r["silent"] for r in (await outbox_rows(service.store, serial))[-2:])
    assert (await journal_types(service.store, serial))[-1] == "message_sent"


async def test_the_budget_is_configurable_and_old_spending_is_pruned(
    store: object, clock: Clock, coffee: object
) -> None:
    from passkit_stamps.store.store import Store

    assert isinstance(store, Store)
    one = StampService(store, clock=clock, notification_budget=1)
    await one.publish_template(coffee)  # type: ignore[arg-type]
    serial = await wallet_card(one)
    assert (await one.send_message(serial, "first")).notified
    assert not (await one.send_message(serial, "second")).notified
    assert await spent_rows(store) == 1
    assert await one.prune_notification_budget() == 0  # still inside the window
    clock.advance(hours=24, seconds=1)
    assert await one.prune_notification_budget() == 1
    assert await spent_rows(store) == 0
    assert (await one.send_message(serial, "third")).notified
    none = StampService(store, clock=clock, notification_budget=0)
    assert not (await none.send_message(serial, "fourth")).notified
    with pytest.raises(CardInputError, match="limit"):
        await one.prune_notification_budget(0)


async def test_void_pushes_its_final_update_then_nothing_more(
    service: StampService, clock: Clock, coffee: object
) -> None:
    serial = await wallet_card(service)
    other = await wallet_card(service, "Bo")
    await service.void_card(serial)
    final = await outbox_rows(service.store, serial)
    assert {(r["platform"], r["reason"], r["silent"]) for r in final} == {
        ("apple", "card_voided", True),
        ("google", "card_voided", True),
    }
    # what can still change a voided card sends nothing to its devices
    await service.update_holder(serial, Holder(name="Ada L."))
    await service.broadcast("Spring menu")
    assert await service.expire_due() == []
    from passkit_stamps.model import CardTemplate

    assert isinstance(coffee, CardTemplate)
    redesigned = coffee.model_copy(update={"description": "Coffee stamp card (new look)"})
    await service.publish_template(redesigned)
    assert await outbox_rows(service.store, serial) == final
    assert len(await outbox_rows(service.store, other)) > 0  # the live card got them


async def test_delete_pushes_the_anonymous_pass_then_nothing_more(
    service: StampService, clock: Clock
) -> None:
    serial = await wallet_card(service)
    await service.void_card(serial)
    await service.delete_card(serial)
    rows = await outbox_rows(service.store, serial)
    assert [r["reason"] for r in rows] == ["card_voided"] * 2 + ["card_deleted"] * 2
    await service.broadcast("Anyone there?")
    assert await service.expire_due() == []
    assert await outbox_rows(service.store, serial) == rows


async def test_expiry_sweep_expires_due_cards_once_silently(
    service: StampService, clock: Clock
) -> None:
    due = [await wallet_card(service, f"S{i}") for i in range(3)]
    # coffee cards expire 365 days after their last stamp (before one: after issue)
    details = await service.get_card(due[0])
    assert details.card.expires_at is not None
    clock.now = details.card.expires_at - timedelta(seconds=1)
    assert await service.expire_due() == []
    clock.advance(seconds=1)
    assert sorted(await service.expire_due(limit=2) + await service.expire_due()) == sorted(due)
    assert await service.expire_due() == []  # idempotent
    for serial in due:
        assert (await service.get_card(serial)).card.state is CardState.EXPIRED
        assert (await journal_types(service.store, serial))[-1] == "card_expired"
        rows = await outbox_rows(service.store, serial)
        assert [(r["reason"], r["silent"]) for r in rows] == [("card_expired", True)] * 2


def test_google_message_for_add_message(coffee: object) -> None:
    from passkit_stamps.engine import issue_card, send_message
    from passkit_stamps.google.builders import build_message
    from passkit_stamps.model import CardTemplate

    assert isinstance(coffee, CardTemplate)
    now = Clock().now
    card = issue_card(coffee, Holder(name="Ada"), now=now).card
    assert build_message(coffee, card, None) is None
    card = send_message(coffee, card, "Open on Sunday!", now=now).card
    message = build_message(coffee, card, "m42")
    assert message is not None
    assert (message["id"], message["body"]) == ("m42", "Open on Sunday!")
    assert message["header"]  # the template's message label
