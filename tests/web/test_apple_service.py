"""The Apple pass web service, walked by a simulated device, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import httpx
import pytest

from passkit_stamps.engine import EventType, Platform
from passkit_stamps.model import Holder
from passkit_stamps.web import requests as rq
from passkit_stamps.web.app import web_context
from passkit_stamps.web.devicelog import LOGGER_NAME

from .conftest import MOUNT, PUBLIC_URL, Wallet
from .device import Device, InstalledPass


async def issue(wallet: Wallet, template: str = "coffee", name: str = "Ada") -> str:
    change = await wallet.service.issue_card(template, Holder(name=name))
    return change.card.serial


async def install(wallet: Wallet, device: Device, serial: str) -> InstalledPass:
    """What the holder does: open the card page's "Add to Apple Wallet" link."""
    response = await wallet.client.get(wallet.page_path(serial) + "/pass.pkpass")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apple.pkpass"
    return device.install(response.content)


def new_device(wallet: Wallet) -> Device:
    root = verify_root(wallet)
    return Device(wallet.client, root)


def verify_root(wallet: Wallet) -> bytes:
    return wallet.pki.root_cert.read_bytes()


async def journal_types(wallet: Wallet, serial: str) -> list[tuple[EventType, dict[str, object]]]:
    return [(e.type, dict(e.data)) for e in await wallet.service.card_history(serial)]


# -- the whole protocol -------------------------------------------------------------------------


async def test_the_whole_protocol(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    # The pass points at the mounted app, never at .../v1.
    assert installed.web_service_url == PUBLIC_URL + MOUNT
    assert installed.pass_type_identifier == wallet.pass_type

    # Register: 201, then 200 again (with a new push token, which is stored).
    assert await device.register(installed) == 201
    assert (await wallet.service.get_card(serial)).platforms == {Platform.APPLE}
    device.push_token = "ab" * 32
    assert await device.register(installed) == 200
    assert await wallet.service.push_tokens(serial) == ["ab" * 32]
    added = [t for t, data in await journal_types(wallet, serial) if t is EventType.PASS_ADDED]
    assert added == [EventType.PASS_ADDED]

    # First list: no tag -> every registered pass, and a string tag.
    assert await device.changed_serials(wallet.base, wallet.pass_type) == [serial]
    first_tag = device.last_updated
    assert isinstance(first_tag, str)
    # Nothing changed since: 204.
    assert await device.changed_serials(wallet.base, wallet.pass_type) == []

    # Fetch: 200 with Last-Modified; then 304 with it.
    response = await device.fetch(installed)
    assert response.status_code == 200
    assert installed.verified.pass_json["storeCard"]  # a verified pass
    assert (await device.fetch(installed)).status_code == 304

    # A stamp changes the card: the list names it with a newer tag, the pass is new.
    await wallet.service.add_stamps(serial, 2)
    changed = await device.sync(wallet.base, wallet.pass_type)
    assert list(changed) == [serial]
    assert device.last_updated != first_tag
    fields = installed.verified.pass_json["storeCard"]["secondaryFields"]
    assert next(f["value"] for f in fields if f["key"] == "progress").startswith("2 / ")
    assert (await device.fetch(installed)).status_code == 304
    assert await device.sync(wallet.base, wallet.pass_type) == {}

    # Unregister: 200; the device is forgotten and the card no longer in Apple Wallet.
    assert await device.unregister(installed) == 200
    assert (await wallet.service.get_card(serial)).platforms == frozenset()
    types = [t for t, _ in await journal_types(wallet, serial)]
    assert types.count(EventType.PASS_REMOVED) == 1
    response = await device.serials_raw(wallet.base, wallet.pass_type, None)
    assert response.status_code == 204


async def test_two_devices_two_cards_and_the_tag_moves_forward(wallet: Wallet) -> None:
    a, b = await issue(wallet, name="A"), await issue(wallet, "salon", name="B")
    phone, watch = new_device(wallet), new_device(wallet)
    pa, pb = await install(wallet, phone, a), await install(wallet, phone, b)
    wa = await install(wallet, watch, a)
    for device, installed in ((phone, pa), (phone, pb), (watch, wa)):
        assert await device.register(installed) == 201
    assert sorted(await phone.changed_serials(wallet.base, wallet.pass_type)) == sorted([a, b])
    assert await watch.changed_serials(wallet.base, wallet.pass_type) == [a]
    await wallet.service.add_stamps(b, 1)
    assert await phone.changed_serials(wallet.base, wallet.pass_type) == [b]
    assert await watch.changed_serials(wallet.base, wallet.pass_type) == []  # b is not on it
    await wallet.service.add_stamps(a, 1)
    await wallet.service.add_stamps(b, 1, code="late")  # salon's cool-down may refuse: fine
    listed = await phone.changed_serials(wallet.base, wallet.pass_type)
    assert a in listed
    # Unregistering one card from the phone keeps the card in Apple Wallet (the watch has it).
    assert await phone.unregister(pa) == 200
    assert Platform.APPLE in (await wallet.service.get_card(a)).platforms


async def test_identical_content_gives_an_identical_pass(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    auth = {"authorization": f"ApplePass {installed.token}"}
    first = await device.pass_raw(
        wallet.base, wallet.pass_type, serial, authorization=auth["authorization"]
    )
    second = await device.pass_raw(
        wallet.base, wallet.pass_type, serial, authorization=auth["authorization"]
    )
    assert first.content == second.content
    assert first.headers["last-modified"] == second.headers["last-modified"]


async def test_last_modified_is_the_last_change_not_the_request(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    response = await device.fetch(installed)
    details = await wallet.service.get_card(serial)
    # The change's second (rounded up: HTTP dates have no fractions), not the request's time.
    assert response.headers["last-modified"] == rq.http_date(rq.change_second(details.updated_at))
    # An older If-Modified-Since gets the pass; an equal or newer one 304.
    older = rq.http_date(details.updated_at - timedelta(seconds=5))
    newer = rq.http_date(details.updated_at + timedelta(days=1))
    auth = f"ApplePass {installed.token}"
    args = (wallet.base, wallet.pass_type, serial)
    assert (
        await device.pass_raw(*args, authorization=auth, if_modified_since=older)
    ).status_code == 200
    assert (
        await device.pass_raw(*args, authorization=auth, if_modified_since=newer)
    ).status_code == 304
    garbage = await device.pass_raw(*args, authorization=auth, if_modified_since="yesterday")
    assert garbage.status_code == 200


async def test_head_of_the_pass(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    auth = f"ApplePass {installed.token}"
    get = await device.pass_raw(wallet.base, wallet.pass_type, serial, authorization=auth)
    head = await device.pass_raw(
        wallet.base, wallet.pass_type, serial, authorization=auth, method="HEAD"
    )
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["last-modified"] == get.headers["last-modified"]
    bad = await device.pass_raw(
        wallet.base,
        wallet.pass_type,
        serial,
        authorization="ApplePass wrong-token-xxxxxx",
        method="HEAD",
    )
    assert bad.status_code == 401


async def test_a_voided_card_is_served_voided(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    await device.register(installed)
    await device.changed_serials(wallet.base, wallet.pass_type)
    await wallet.service.void_card(serial)
    changed = await device.sync(wallet.base, wallet.pass_type)
    assert serial in changed
    assert installed.verified.pass_json.get("voided") is True


# -- authentication -----------------------------------------------------------------------------


WRONG_AUTHORIZATIONS = (
    None,
    "",
    "ApplePass",
    "ApplePass wrongwrongwrongwrong",
    "Bearer {token}",
    "applepass {token}",
    "ApplePass {token}x",
    "ApplePass  {token}",
)


async def test_wrong_or_absent_token_is_401_everywhere(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    args = (wallet.base, wallet.pass_type, serial)
    for authorization in WRONG_AUTHORIZATIONS:
        header = authorization.format(token=installed.token) if authorization is not None else None
        assert (await device.register_raw(*args, authorization=header)).status_code == 401
        assert (await device.unregister_raw(*args, authorization=header)).status_code == 401
        assert (await device.pass_raw(*args, authorization=header)).status_code == 401
    assert await wallet.service.push_tokens(serial) == []


async def test_unknown_serial_looks_like_a_wrong_token(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    auth = f"ApplePass {installed.token}"
    unknown = (wallet.base, wallet.pass_type, "NO-SUCH-SERIAL")
    wrong = (wallet.base, wallet.pass_type, serial)
    for a, b in (
        (
            await device.pass_raw(*unknown, authorization=auth),
            await device.pass_raw(*wrong, authorization="ApplePass x" * 2),
        ),
        (
            await device.register_raw(*unknown, authorization=auth),
            await device.register_raw(*wrong, authorization="ApplePass nope-nope-nope-nope"),
        ),
        (
            await device.unregister_raw(*unknown, authorization=auth),
            await device.unregister_raw(*wrong, authorization="ApplePass nope-nope-nope-nope"),
        ),
    ):
        assert a.status_code == b.status_code == 401
        assert a.content == b.content
        assert sorted(a.headers.keys()) == sorted(b.headers.keys())


async def test_another_cards_token_is_refused(wallet: Wallet) -> None:
    a, b = await issue(wallet), await issue(wallet)
    device = new_device(wallet)
    pa = await install(wallet, device, a)
    response = await device.pass_raw(
        wallet.base, wallet.pass_type, b, authorization=f"ApplePass {pa.token}"
    )
    assert response.status_code == 401


async def test_a_deleted_card_cannot_register(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    await wallet.service.delete_card(serial)
    response = await device.register_raw(
        wallet.base, wallet.pass_type, serial, authorization=f"ApplePass {installed.token}"
    )
    assert response.status_code == 401


# -- pass type and path parameters --------------------------------------------------------------


async def test_unknown_pass_type_is_404(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    auth = f"ApplePass {installed.token}"
    for pass_type in ("pass.com.other.thing", "not a pass type", "x" * 300):
        args = (wallet.base, pass_type, serial)
        assert (await device.register_raw(*args, authorization=auth)).status_code == 404
        assert (await device.unregister_raw(*args, authorization=auth)).status_code == 404
        assert (await device.pass_raw(*args, authorization=auth)).status_code == 404
        assert (await device.serials_raw(wallet.base, pass_type, None)).status_code == 404


async def test_malformed_device_id_and_serial_are_400(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    auth = f"ApplePass {installed.token}"
    for device_id in ("x" * 129, "bad%20id", "a;b", "é"):
        response = await device.register_raw(
            wallet.base, wallet.pass_type, serial, authorization=auth, device_id=device_id
        )
        assert response.status_code == 400
        listing = await device.serials_raw(wallet.base, wallet.pass_type, None, device_id=device_id)
        assert listing.status_code == 400
    for bad in ("s" * 65, "a+b", "%C3%A9"):
        response = await device.pass_raw(wallet.base, wallet.pass_type, bad, authorization=auth)
        assert response.status_code == 400


async def test_malformed_tag_is_400_and_a_foreign_tag_lists_everything(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    await device.register(installed)
    bad = await device.serials_raw(wallet.base, wallet.pass_type, "1 OR 1=1")
    assert bad.status_code == 400
    foreign = await device.serials_raw(wallet.base, wallet.pass_type, "not-our-tag")
    assert foreign.status_code == 200
    assert foreign.json()["serialNumbers"] == [serial]


async def test_unknown_device_lists_nothing(wallet: Wallet) -> None:
    device = new_device(wallet)
    assert (await device.serials_raw(wallet.base, wallet.pass_type, None)).status_code == 204


# -- bodies -------------------------------------------------------------------------------------


MALFORMED_BODIES = (
    b"",
    b"{",
    b"[]",
    b"{}",
    b'{"pushToken": ""}',
    b'{"pushToken": 5}',
    b"\xff",
    b'{"push": "ab"}',
)


async def test_malformed_registration_body_is_400(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    for body in MALFORMED_BODIES:
        response = await device.register_raw(
            wallet.base,
            wallet.pass_type,
            serial,
            authorization=f"ApplePass {installed.token}",
            body=body,
        )
        assert response.status_code == 400, body
    assert await wallet.service.push_tokens(serial) == []


async def test_oversized_registration_body_is_413(wallet: Wallet) -> None:
    serial = await issue(wallet)
    device = new_device(wallet)
    installed = await install(wallet, device, serial)
    body = json.dumps({"pushToken": "ab" * 16, "pad": "x" * rq.MAX_REGISTER_BODY}).encode()
    response = await device.register_raw(
        wallet.base,
        wallet.pass_type,
        serial,
        authorization=f"ApplePass {installed.token}",
        body=body,
    )
    assert response.status_code == 413


async def test_oversized_body_without_length_is_cut_while_streaming(wallet: Wallet) -> None:
    pulled = 0

    async def chunks():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"x" * 1024

    response = await wallet.client.post(
        MOUNT + "/v1/log", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert pulled < 100  # the server stopped reading near 64 KiB, not at 1 MB


# -- the device log -----------------------------------------------------------------------------


async def test_device_log_is_kept_truncated_and_logged(
    wallet: Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    device = new_device(wallet)
    long = "y" * 5000
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        response = await device.log(
            wallet.base, ["Get pass: missing Last-Modified\nforged line", long]
        )
    assert response.status_code == 200
    entries = web_context(wallet.app).device_log.entries()
    assert entries[0].message == "Get pass: missing Last-Modified forged line"
    assert len(entries[1].message) == rq.MAX_LOG_MESSAGE
    assert any("missing Last-Modified" in r.getMessage() for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records)


async def test_device_log_is_bounded(wallet: Wallet) -> None:
    log = web_context(wallet.app).device_log
    device = new_device(wallet)
    for i in range(wallet.config.device_log_size // 100 + 2):
        await device.log(wallet.base, [f"batch {i} line {j}" for j in range(100)])
    assert len(log) == wallet.config.device_log_size
    assert log.entries()[-1].message.endswith("line 99")


async def test_malformed_log_is_400(wallet: Wallet) -> None:
    for body in (b"", b"{}", b'{"logs": "x"}', b'{"logs": [1]}'):
        response = await wallet.client.post(MOUNT + "/v1/log", content=body)
        assert response.status_code == 400


async def test_oversized_log_is_413(wallet: Wallet) -> None:
    body = json.dumps({"logs": ["x" * (rq.MAX_LOG_BODY + 1)]}).encode()
    response = await wallet.client.post(MOUNT + "/v1/log", content=body)
    assert response.status_code == 413


async def test_wrong_methods(wallet: Wallet) -> None:
    assert (await wallet.client.get(MOUNT + "/v1/log")).status_code == 405
    response = await wallet.client.put(MOUNT + f"/v1/passes/{wallet.pass_type}/x")
    assert response.status_code == 405
    assert (await wallet.client.get(MOUNT + "/v1/nothing")).status_code == 404
    assert isinstance(httpx.Response(200), httpx.Response)
