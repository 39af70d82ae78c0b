"""Registrations per pass are capped (10,000 devices registered for one pass were accepted and
the push log line became 120 KB): a new device over the cap is refused with a typed error, 403
on the web; devices already registered keep working."""

from __future__ import annotations

import secrets

import pytest

from passkit_stamps.errors import RegistrationLimitError
from passkit_stamps.service import StampService
from passkit_stamps.service.apple import MAX_REGISTRATIONS_PER_PASS

from .conftest import MOUNT, Wallet


def _device() -> str:
    return secrets.token_hex(16)


def _token() -> str:
    return secrets.token_hex(32)


async def test_registrations_per_pass_are_capped(wallet: Wallet) -> None:
    service: StampService = wallet.service
    pass_type = wallet.pass_type
    service.max_registrations_per_pass = 3
    serial = (await service.issue_card("coffee")).card.serial
    devices = [_device() for _ in range(3)]
    for device in devices:
        assert await service.register_device(device, _token(), pass_type, serial) is True
    newcomer = _device()
    with pytest.raises(RegistrationLimitError, match="3 devices"):
        await service.register_device(newcomer, _token(), pass_type, serial)
    assert len(await service.push_tokens(serial)) == 3  # nothing of the newcomer was stored
    # A registered device may still re-register (a new push token), and a freed slot is usable.
    assert await service.register_device(devices[0], _token(), pass_type, serial) is False
    assert await service.unregister_device(devices[1], pass_type, serial)
    assert await service.register_device(newcomer, _token(), pass_type, serial) is True
    # The cap is per pass: another card takes its own devices.
    other = (await service.issue_card("coffee")).card.serial
    assert await service.register_device(_device(), _token(), pass_type, other) is True


def test_the_default_cap() -> None:
    assert MAX_REGISTRATIONS_PER_PASS == 100


async def test_a_device_over_the_cap_gets_403(wallet: Wallet) -> None:
    wallet.service.max_registrations_per_pass = 1
    card = (await wallet.service.issue_card("coffee")).card
    headers = {"Authorization": f"ApplePass {card.authentication_token}"}

    async def register(device: str) -> int:
        path = f"{MOUNT}/v1/devices/{device}/registrations/{wallet.pass_type}/{card.serial}"
        response = await wallet.client.post(path, json={"pushToken": _token()}, headers=headers)
        return response.status_code

    first = _device()
    assert await register(first) == 201
    assert await register(_device()) == 403
    assert await register(first) == 200
