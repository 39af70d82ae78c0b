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
from web.device import Device

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
