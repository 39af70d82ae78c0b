"""Through the pass web service and a simulated device: the pass a device fetches after a
silent change carries no changeMessage; after a notified one it does (and a 304 in between)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from web.conftest import PastClock, Wallet, make_wallet
from web.device import Device, InstalledPass

from .test_silent import change_messages


@pytest.fixture
async def wallet(store: Store, coffee: CardTemplate, dev_pki: DevPKI) -> AsyncIterator[Wallet]:
    service = StampService(store, clock=PastClock())
    await service.publish_template(coffee)
    w = make_wallet(service, dev_pki)
    try:
        yield w
    finally:
        await w.client.aclose()


def fetched_pass_json(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        value: dict[str, Any] = json.loads(archive.read("pass.json"))
    return value


async def test_the_device_gets_a_silent_pass_for_a_silent_change(wallet: Wallet) -> None:
    service = wallet.service
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    response = await wallet.client.get(wallet.page_path(serial) + "/pass.pkpass")
    installed = device.install(response.content)
    assert await device.register(installed) == 201
    assert (await device.fetch(installed)).status_code == 200

    await service.set_stamps(serial, 3)  # an adjustment: silent
    assert (await device.fetch(installed)).status_code == 200
    assert change_messages(fetched_pass_json(installed.data)) == []
    assert (await device.fetch(installed)).status_code == 304

    assert (await service.add_stamps(serial)).notified  # a visit: notified
    assert (await device.fetch(installed)).status_code == 200
    assert "progress" in change_messages(fetched_pass_json(installed.data))


async def installed_and_fetched(wallet: Wallet, serial: str) -> tuple[Device, InstalledPass]:
    """A device that added the pass, registered and fetched it (it holds a Last-Modified)."""
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    response = await wallet.client.get(wallet.page_path(serial) + "/pass.pkpass")
    installed = device.install(response.content)
    assert await device.register(installed) == 201
    assert (await device.fetch(installed)).status_code == 200
    return device, installed


async def test_a_notified_change_followed_by_a_silent_one_still_alerts_a_device_that_missed_it(
    wallet: Wallet,
) -> None:
    # Issue 10: the device that fetches only after a later silent change must still get the
    # notified change's changeMessage; a device that fetched the notified pass must not again.
    service = wallet.service
    service.notification_budget = 1
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    late_device, late = await installed_and_fetched(wallet, serial)
    prompt_device, prompt = await installed_and_fetched(wallet, serial)
    held_before_the_change = late.last_modified

    assert (await service.add_stamps(serial)).notified
    assert (await prompt_device.fetch(prompt)).status_code == 200
    assert "progress" in change_messages(fetched_pass_json(prompt.data))
    assert not (await service.add_stamps(serial)).notified  # over the budget: silent

    assert (await late_device.fetch(late)).status_code == 200
    assert late.last_modified != held_before_the_change
    assert "progress" in change_messages(fetched_pass_json(late.data))
    assert (await prompt_device.fetch(prompt)).status_code == 200
    assert change_messages(fetched_pass_json(prompt.data)) == []
    # Without If-Modified-Since the last change decides, as before: it was silent.
    fresh = await prompt_device.pass_raw(
        prompt.web_service_url,
        prompt.pass_type_identifier,
        serial,
        authorization=f"ApplePass {prompt.token}",
    )
    assert fresh.status_code == 200
    assert change_messages(fetched_pass_json(fresh.content)) == []


async def test_a_broadcast_then_a_silent_change_alerts_a_device_that_missed_the_broadcast(
    wallet: Wallet,
) -> None:
    service = wallet.service
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device, installed = await installed_and_fetched(wallet, serial)

    report = await service.broadcast("Closed on Monday")
    assert report.notified == 1
    await service.set_stamps(serial, 2)  # an adjustment: silent

    assert (await device.fetch(installed)).status_code == 200
    assert "message" in change_messages(fetched_pass_json(installed.data))
