"""Silent updates: a change that is not notified produces a pass without ``changeMessage``.

Apple alerts the holder when a field with a ``changeMessage`` changes value, whatever the push
said, so the decision (notified or not, from the budget) is stored with the change on the card
and the pass built for it carries no ``changeMessage`` when the change was silent."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from typing import Any

from conftest import Clock  # tests/conftest.py
from passkit_stamps.apple.bundle import PassBuilder
from passkit_stamps.apple.passjson import build_pass_json
from passkit_stamps.engine import Platform
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService

IDS = {"pass_type_identifier": "pass.com.example.stamps", "team_identifier": "EXAMPLE123"}


def change_messages(data: dict[str, Any]) -> list[str]:
    style = data["storeCard"]
    groups = ("headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields")
    return [f["key"] for g in groups for f in style.get(g, []) if "changeMessage" in f]


def pass_json_of(pkpass: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        value: dict[str, Any] = json.loads(archive.read("pass.json"))
    return value


async def test_a_silent_change_gives_a_pass_without_change_messages(
    service: StampService, clock: Clock, dev_pki: DevPKI
) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    builder = PassBuilder(dev_pki.credentials())
    pass_type = builder.pass_type_identifier

    stamped = await service.add_stamps(serial)  # notified: the budget allows it
    assert stamped.notified
    found = await service.card_for_pass(pass_type, serial)
    assert found is not None and found.notified is True
    notified = pass_json_of(builder.build(found.template, found.card, notify=found.notified))
    assert {"progress", "vouchers_ready", "message"} <= set(change_messages(notified))

    adjusted = await service.set_stamps(serial, 2)  # an adjustment: silent by policy
    assert not adjusted.notified
    found = await service.card_for_pass(pass_type, serial)
    assert found is not None and found.notified is False
    silent = pass_json_of(builder.build(found.template, found.card, notify=found.notified))
    assert change_messages(silent) == []


async def test_over_budget_the_update_goes_out_silently_on_every_wallet(
    service: StampService, clock: Clock, dev_pki: DevPKI
) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Bo"))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    await service.record_platform(serial, Platform.GOOGLE, True)
    builder = PassBuilder(dev_pki.credentials())
    decisions = []
    for _ in range(4):
        clock.advance(minutes=10)  # past the coffee template's cool-down
        decisions.append((await service.add_stamps(serial)).notified)
        found = await service.card_for_pass(builder.pass_type_identifier, serial)
        assert found is not None and found.notified is decisions[-1]
        data = pass_json_of(builder.build(found.template, found.card, notify=found.notified))
        assert bool(change_messages(data)) is decisions[-1]
    assert decisions == [True, True, True, False]
    # the dispatcher's Google sender reads the same decision from the card
    states = await service.card_states([serial])
    assert states[serial].notified is False


def test_pass_json_without_notification_has_no_change_message(coffee: CardTemplate) -> None:
    from passkit_stamps.engine import issue_card

    card = issue_card(coffee, Holder(name="Cy"), now=Clock().now).card
    assert change_messages(build_pass_json(coffee, card, **IDS))  # the default notifies
    assert change_messages(build_pass_json(coffee, card, notify=False, **IDS)) == []


def test_the_decision_is_part_of_the_pass_cache_key(coffee: CardTemplate, dev_pki: DevPKI) -> None:
    from passkit_stamps.engine import issue_card

    card = issue_card(coffee, Holder(name="Di"), now=Clock().now).card
    builder = PassBuilder(dev_pki.credentials())
    loud, quiet = builder.build(coffee, card), builder.build(coffee, card, notify=False)
    assert change_messages(pass_json_of(loud)) and not change_messages(pass_json_of(quiet))
    assert builder.content_digest(coffee, card) != builder.content_digest(
        coffee, card, notify=False
    )
    assert builder.build(coffee, card, notify=False) == quiet  # cached per decision


async def test_a_device_that_missed_a_notified_change_gets_its_change_message(
    service: StampService, clock: Clock, dev_pki: DevPKI
) -> None:
    # Issue 10: held_since is the Last-Modified the device holds (If-Modified-Since); the
    # notified change counts as fetched once that reaches its second, rounded up like
    # Last-Modified.
    serial = (await service.issue_card("coffee", Holder(name="Ed"))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    pass_type = PassBuilder(dev_pki.credentials()).pass_type_identifier
    notified_at = clock.advance(minutes=10, microseconds=500_000)
    assert (await service.add_stamps(serial)).notified
    clock.advance(minutes=10)
    assert not (await service.set_stamps(serial, 3)).notified  # silent

    second = notified_at.replace(microsecond=0) + timedelta(seconds=1)
    decisions = {}
    for held in (None, second - timedelta(seconds=1), second, second + timedelta(hours=1)):
        found = await service.card_for_pass(pass_type, serial, held_since=held)
        assert found is not None
        decisions[held] = found.notified
    assert list(decisions.values()) == [False, True, False, False]
