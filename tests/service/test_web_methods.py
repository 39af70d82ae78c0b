"""The methods the web app builds on: Apple registrations, change tags, platforms, pages."""

from __future__ import annotations

import pytest

from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import CardInputError, CardNotFoundError
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService

PASS_TYPE = "pass.com.example.stamps"
DEVICE = "a1b2c3d4e5f6"


async def test_registration_lifecycle(service: StampService) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Reg"))).card.serial
    assert await service.register_device(DEVICE, "ab" * 32, PASS_TYPE, serial) is True
    assert await service.register_device(DEVICE, "cd" * 32, PASS_TYPE, serial) is False
    assert await service.push_tokens(serial) == ["cd" * 32]  # the new token was kept
    assert await service.register_device("other-device", "ef" * 32, PASS_TYPE, serial)
    assert (await service.get_card(serial)).platforms == {Platform.APPLE}
    history = [e for e in await service.card_history(serial) if e.type is EventType.PASS_ADDED]
    assert len(history) == 1 and history[0].data == {"platform": "apple"}

    assert await service.unregister_device(DEVICE, PASS_TYPE, serial) is True
    assert await service.unregister_device(DEVICE, PASS_TYPE, serial) is False
    assert (await service.get_card(serial)).platforms == {Platform.APPLE}  # still on one device
    assert await service.unregister_device("other-device", PASS_TYPE, serial) is True
    assert (await service.get_card(serial)).platforms == frozenset()
    assert (await service.card_history(serial))[-1].type is EventType.PASS_REMOVED
    assert await service.push_tokens(serial) == []

    with pytest.raises(CardNotFoundError):
        await service.register_device(DEVICE, "ab" * 32, PASS_TYPE, "NOPE")
    with pytest.raises(CardInputError):
        await service.register_device("", "ab" * 32, PASS_TYPE, serial)
    with pytest.raises(CardInputError):
        await service.register_device(DEVICE, "x" * 300, PASS_TYPE, serial)


async def _updated(
    service: StampService, device: str, pass_type: str, tag: str | None
) -> tuple[list[str], str]:
    """The answer as (serials, lastUpdated)."""
    found = await service.serials_updated_since(device, pass_type, tag)
    return found.serials, found.last_updated


async def test_serials_updated_since(service: StampService) -> None:
    a = (await service.issue_card("coffee")).card.serial
    b = (await service.issue_card("coffee")).card.serial
    unregistered = (await service.issue_card("coffee")).card.serial
    for serial in (a, b):
        await service.register_device(DEVICE, "ab" * 32, PASS_TYPE, serial)
    everything, tag = await _updated(service, DEVICE, PASS_TYPE, None)
    assert sorted(everything) == sorted([a, b])
    assert await _updated(service, DEVICE, PASS_TYPE, tag) == ([], tag)
    await service.add_stamps(unregistered)
    assert (await _updated(service, DEVICE, PASS_TYPE, tag))[0] == []
    await service.add_stamps(b)
    updated, newer = await _updated(service, DEVICE, PASS_TYPE, tag)
    assert updated == [b] and int(newer) > int(tag)
    assert (await _updated(service, DEVICE, PASS_TYPE, "garbage"))[0] != []
    assert await _updated(service, "unknown", PASS_TYPE, None) == ([], "0")
    assert (await _updated(service, DEVICE, "pass.other", None))[0] == []


async def test_card_for_pass_and_pass_type(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    found = await service.card_for_pass(PASS_TYPE, serial)
    assert found is not None
    card, template, last_modified = found.card, found.template, found.last_modified
    assert card.serial == serial and template.key == "coffee@v1"
    await service.add_stamps(serial)
    again = await service.card_for_pass(PASS_TYPE, serial)
    assert again is not None and again.last_modified >= last_modified
    assert await service.card_for_pass(PASS_TYPE, "NOPE") is None
    strict = StampService(service.store, pass_type_identifier=PASS_TYPE)
    assert await strict.card_for_pass("pass.com.other", serial) is None
    assert await strict.card_for_pass(PASS_TYPE, serial) is not None


async def test_record_platform_and_card_page(service: StampService) -> None:
    change = await service.issue_card("coffee")
    serial, token = change.card.serial, change.card.authentication_token
    assert await service.record_platform(serial, "web", True) is True
    assert await service.record_platform(serial, Platform.WEB, True) is False
    assert await service.record_platform(serial, Platform.WEB, False) is True
    with pytest.raises(CardInputError):
        await service.record_platform(serial, "fax", True)
    with pytest.raises(CardNotFoundError):
        await service.record_platform("NOPE", "web", True)
    page = await service.card_page(serial, token=token)
    assert page.card.serial == serial
    with pytest.raises(CardNotFoundError):
        await service.card_page(serial, token="wrong-token-000000")


async def test_google_objects_and_outbox(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    assert await service.google_object(serial) is None
    await service.save_google_object(serial, "3388.obj", "3388.coffee", "ACTIVE")
    await service.save_google_object(serial, "3388.obj", "3388.coffee", "INACTIVE")
    found = await service.google_object(serial)
    assert found is not None and found.state == "INACTIVE"
    await service.record_platform(serial, Platform.GOOGLE, True)
    await service.add_stamps(serial)
    pending = await service.pending_updates(platform="google")
    assert [(p.serial, p.platform, p.silent) for p in pending] == [(serial, Platform.GOOGLE, False)]
    assert await service.complete_updates([p.id for p in pending]) == 1
    assert await service.pending_updates() == []
