"""Card operations through the service: each writes card, journal, change tag and outbox."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Clock  # tests/conftest.py
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import (
    CardInactiveError,
    CardInputError,
    CardNotFoundError,
    IdempotencyConflictError,
    InvalidStampCountError,
    StampLimitError,
    TemplateNotFoundError,
    VoucherError,
)
from passkit_stamps.model import CardState, CardTemplate, Holder
from passkit_stamps.service import StampService

from .conftest import counts, outbox_rows, variant


async def test_issue_and_details(service: StampService) -> None:
    change = await service.issue_card(
        "coffee", Holder(name="Ada Lovelace", email="ada@example.com", phone="+44 20 1234")
    )
    assert [e.type for e in change.events] == [EventType.CARD_ISSUED]
    assert change.events[0].id > 0 and change.change_tag > 0
    details = await service.get_card(change.card.serial)
    assert details.holder.name == "Ada Lovelace"
    assert details.template_key == "coffee@v1"
    assert details.platforms == frozenset()
    assert (details.progress.stamps, details.progress.required) == (0, 8)
    assert details.next_reward == "Free coffee" and details.current_reward is None
    assert details.card.created_at == service._now()
    assert details.card.last_stamp_at is None


async def test_add_stamps_reaches_goal_and_moves_the_change_tag(
    service: StampService, clock: Clock
) -> None:
    card = (await service.issue_card("coffee", Holder(name="Bo"))).card
    first = await service.add_stamps(card.serial, 3, code="R-1")
    assert first.card.stamps == 3
    assert [e.type for e in first.events] == [EventType.STAMP_ADDED]
    assert first.events[0].code == "R-1"
    clock.advance(minutes=5)
    await service.add_stamps(card.serial, 3)
    clock.advance(minutes=5)
    last = await service.add_stamps(card.serial, 2)
    assert [e.type for e in last.events] == [
        EventType.STAMP_ADDED,
        EventType.GOAL_REACHED,
        EventType.VOUCHER_ISSUED,
    ]
    assert last.change_tag > first.change_tag
    details = await service.get_card(card.serial)
    assert details.progress.stamps == 8 and details.progress.percent == 100
    assert details.card.last_stamp_at == clock.now
    assert len(details.vouchers) == 1 and details.vouchers[0].title == "Free coffee"
    assert details.current_reward == "Free coffee"
    history = await service.card_history(card.serial)
    assert [e.type for e in history][:2] == [EventType.CARD_ISSUED, EventType.STAMP_ADDED]
    assert [(e.stamps, e.required) for e in history][1] == (3, 8)
    assert history[-1].voucher_code == details.vouchers[0].code
    assert history[-1].template_name == "Free Coffee" and history[-1].holder_name == "Bo"


async def test_outbox_per_wallet_and_notification_budget(
    service: StampService, clock: Clock
) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Cy"))).card.serial
    await service.add_stamps(serial)
    assert await outbox_rows(service.store, serial) == []  # saved nowhere: nothing to push
    await service.record_platform(serial, Platform.APPLE, True)
    await service.record_platform(serial, "google", True)
    await service.record_platform(serial, Platform.WEB, True)
    notified = [(await service.add_stamps(serial)).notified for _ in range(5)]
    assert notified == [True, True, True, False, False]
    rows = await outbox_rows(service.store, serial)
    assert len(rows) == 10  # apple + google per change; the web needs no push
    assert {r["platform"] for r in rows} == {"apple", "google"}
    assert [r["silent"] for r in rows[::2]] == [False, False, False, True, True]
    assert all(r["reason"] == "stamp_added" for r in rows)
    # a silent adjustment spends nothing; 24 hours later the budget is back
    await service.set_stamps(serial, 1)
    assert (await outbox_rows(service.store, serial))[-1]["silent"] is True
    clock.advance(hours=24, seconds=1)
    assert (await service.add_stamps(serial)).notified is True


async def test_set_stamps_redeem_coupon_void(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    adjusted = await service.set_stamps(serial, 5, code="fix")
    assert adjusted.card.stamps == 5
    assert adjusted.events[0].type is EventType.STAMPS_ADJUSTED
    assert adjusted.events[0].data == {"old": 5 - 5, "new": 5}
    coupon = await service.issue_coupon(serial, "Sorry for the wait", description="A cookie")
    code = coupon.card.vouchers[-1].code
    assert coupon.events[0].type is EventType.COUPON_ISSUED
    redeemed = await service.redeem_voucher(serial, code.lower())
    assert redeemed.card.vouchers[-1].redeemed_at is not None
    assert redeemed.events[0].type is EventType.VOUCHER_REDEEMED
    with pytest.raises(VoucherError):
        await service.redeem_voucher(serial, code)
    message = await service.send_message(serial, "See you Friday!")
    assert (await service.get_card(serial)).card.message == "See you Friday!"
    assert message.events[0].type is EventType.MESSAGE_SENT
    voided = await service.void_card(serial)
    assert voided.card.state is CardState.VOIDED
    with pytest.raises(CardInactiveError):
        await service.add_stamps(serial)


async def test_refused_operations_write_nothing(service: StampService, salon: CardTemplate) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Dee"))).card.serial
    other = (await service.issue_card("coffee")).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    await service.add_stamps(other, 3)
    await service.set_stamps(other, 8)  # no voucher from an adjustment: issue one explicitly
    foreign = (await service.issue_coupon(other, "Gift")).card.vouchers[-1].code
    coupon = (await service.issue_coupon(serial, "Gift")).card.vouchers[-1].code
    await service.redeem_voucher(serial, coupon)
    before = await counts(service.store)
    tag = (await service.get_card(serial)).change_tag
    refusals = [
        (CardNotFoundError, service.add_stamps("NOPE", 1)),
        (InvalidStampCountError, service.add_stamps(serial, 0)),
        (InvalidStampCountError, service.add_stamps(serial, -2)),
        (StampLimitError, service.add_stamps(serial, 4)),  # coffee: <= 3 per visit
        (InvalidStampCountError, service.set_stamps(serial, 9)),
        (VoucherError, service.redeem_voucher(serial, foreign)),
        (VoucherError, service.redeem_voucher(serial, coupon)),  # already redeemed
        (VoucherError, service.redeem_voucher(serial, "XXXXXXXXXX")),
        (CardInputError, service.issue_coupon(serial, "")),
        (CardInputError, service.send_message(serial, "   ")),
        (CardInputError, service.add_stamps(serial, 1, code="x" * 500)),
        (TemplateNotFoundError, service.issue_card("nope", Holder())),
        (TemplateNotFoundError, service.issue_card("coffee", Holder(), version=7)),
        (CardInputError, service.issue_card("coffee", Holder(), language="fr")),
        (CardInputError, service.issue_card("coffee", Holder(), serial="bad serial!")),
        (CardInputError, service.issue_card("coffee", Holder(), serial=other)),
        (CardInputError, service.add_stamps(serial, 1, idempotency_key="")),
        (TemplateNotFoundError, service.get_template("coffee", 3)),
        (CardNotFoundError, service.get_card("NOPE")),
        (CardNotFoundError, service.card_history("NOPE")),
    ]
    for error, call in refusals:
        with pytest.raises(error):
            await call
    await service.void_card(other)
    mid = await counts(service.store)
    for call in (
        service.add_stamps(other),
        service.void_card(other),
        service.issue_coupon(other, "x"),
    ):
        with pytest.raises(CardInactiveError):
            await call
    assert await counts(service.store) == mid
    assert mid[0] == before[0] + 1  # only the void wrote
    assert (await service.get_card(serial)).change_tag == tag


async def test_delete_card_anonymises_and_keeps_the_journal(service: StampService) -> None:
    serial = (
        await service.issue_card("coffee", Holder(name="Eve", email="eve@example.com"))
    ).card.serial
    await service.record_platform(serial, Platform.GOOGLE, True)
    await service.add_stamps(serial, 2)
    await service.send_message(serial, "hello")
    deleted = await service.delete_card(serial, actor="manager")
    assert [e.type for e in deleted.events] == [EventType.CARD_VOIDED, EventType.CARD_DELETED]
    assert deleted.card.holder == Holder() and deleted.card.message is None
    assert deleted.events[-1].actor == "manager"
    with pytest.raises(CardNotFoundError):
        await service.get_card(serial)
    with pytest.raises(CardNotFoundError):
        await service.add_stamps(serial)
    with pytest.raises(CardNotFoundError):
        await service.delete_card(serial)
    page = await service.list_cards(search="eve")
    assert page.total == 0
    history = await service.card_history(serial)
    assert history[-1].type is EventType.CARD_DELETED
    assert all(e.holder_name is None for e in history)
    served = await service.card_for_pass("pass.com.example.stamps", serial)
    assert served is not None and served.card.state is CardState.VOIDED
    assert (await outbox_rows(service.store, serial))[-1]["silent"] is True


async def test_idempotency_replays_and_conflicts(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    other = (await service.issue_card("coffee")).card.serial
    first = await service.add_stamps(serial, 2, idempotency_key="visit-1")
    before = await counts(service.store)
    again = await service.add_stamps(serial, 2, idempotency_key="visit-1")
    assert again.replayed and not first.replayed
    assert again.card == first.card and again.events == first.events
    assert again.change_tag == first.change_tag
    assert await counts(service.store) == before
    assert (await service.get_card(serial)).card.stamps == 2
    for call in (
        service.add_stamps(serial, 3, idempotency_key="visit-1"),  # other arguments
        service.add_stamps(other, 2, idempotency_key="visit-1"),  # other card
        service.set_stamps(serial, 2, idempotency_key="visit-1"),  # other operation
    ):
        with pytest.raises(IdempotencyConflictError):
            await call
    issued = await service.issue_card("coffee", Holder(name="Fay"), idempotency_key="new-1")
    replay = await service.issue_card("coffee", Holder(name="Fay"), idempotency_key="new-1")
    assert replay.replayed and replay.card.serial == issued.card.serial
    with pytest.raises(IdempotencyConflictError):
        await service.issue_card("coffee", Holder(name="Gus"), idempotency_key="new-1")
    assert await counts(service.store) == (before[0] + 1, before[1])


async def test_concurrent_idempotent_calls_apply_once(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    results = await asyncio.gather(
        *(service.add_stamps(serial, 1, idempotency_key="same") for _ in range(10))
    )
    assert sum(not r.replayed for r in results) == 1
    assert (await service.get_card(serial)).card.stamps == 1


async def test_fifty_concurrent_add_stamps_all_count(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    await asyncio.gather(*(service.add_stamps(serial, 1) for _ in range(50)))
    card = (await service.get_card(serial)).card
    # coffee: 8 per round, carry over; stamp 48 fills round 6, then 2 more
    assert (card.rounds_completed, card.stamps) == (6, 2)
    assert len(card.vouchers) == 6
    history = await service.card_history(serial)
    assert sum(e.type is EventType.STAMP_ADDED for e in history) == 50


async def test_expiry_is_persisted_before_refusing(
    service: StampService, clock: Clock, coffee: CardTemplate
) -> None:
    await service.publish_template(
        variant(coffee, id="shortlived", expiry={"kind": "days_after_last_stamp", "days": 10})
    )
    serial = (await service.issue_card("shortlived")).card.serial
    await service.add_stamps(serial)
    clock.advance(days=11)
    with pytest.raises(CardInactiveError):
        await service.add_stamps(serial)
    details = await service.get_card(serial)
    assert details.card.state is CardState.EXPIRED
    history = await service.card_history(serial)
    assert history[-1].type is EventType.CARD_EXPIRED
    # voiding an expired card is still allowed
    assert (await service.void_card(serial)).card.state is CardState.VOIDED


async def test_update_holder(service: StampService) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Old Name"))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    change = await service.update_holder(serial, Holder(name="New Name", email="n@example.com"))
    assert change.card.holder.name == "New Name"
    assert (await service.list_cards(search="new name")).total == 1
    assert (await service.list_cards(search="old name")).total == 0
    assert (await outbox_rows(service.store, serial))[-1]["silent"] is True
