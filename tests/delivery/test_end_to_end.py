"""End to end on both backends: the worker in this process, the fake APNs over TLS + HTTP/2,
the device simulator against the web app, respx standing in for Google's REST API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import respx

from passkit_stamps.apple.apns import APNsClient
from passkit_stamps.delivery.apple import AppleSender
from passkit_stamps.delivery.google import GoogleSender
from passkit_stamps.delivery.worker import DeliveryWorker
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.google.builders import GoogleSettings
from passkit_stamps.google.client import WalletClient
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.testing import FakeAPNs, PushReply
from web.conftest import Wallet
from web.device import Device, InstalledPass

from .conftest import claim_visible, drain_rows, settled
from .google_stub import PREFIX, GoogleStub, StaticTokens

ISSUER = "3388000000012345678"
GOOGLE_BASE = "https://walletobjects.test" + PREFIX


async def install(wallet: Wallet, device: Device, serial: str) -> InstalledPass:
    response = await wallet.client.get(wallet.page_path(serial) + "/pass.pkpass")
    assert response.status_code == 200
    return device.install(response.content)


@pytest.fixture
async def worker(wallet: Wallet, apns_client: APNsClient) -> AsyncIterator[DeliveryWorker]:
    sender = AppleSender(wallet.service, apns_client, topic=wallet.pass_type)
    # The web tests' clock moves an hour per reading: a lease of years outlasts the test.
    w = DeliveryWorker(wallet.service, [sender], poll_interval=0.05, lease=timedelta(days=3650))
    w.start()
    try:
        yield w
    finally:
        await w.stop()


async def test_a_stamp_pushes_and_the_device_fetches_the_changed_pass(
    wallet: Wallet, apns: FakeAPNs, worker: DeliveryWorker
) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    installed = await install(wallet, device, serial)
    assert await device.register(installed) == 201
    assert await device.changed_serials(wallet.base, wallet.pass_type) == [serial]
    assert (await device.fetch(installed)).status_code == 200
    assert (await device.fetch(installed)).status_code == 304  # before the stamp

    await wallet.service.add_stamps(serial, 2)
    [push] = await apns.wait_for_pushes(1)
    assert (push.token, push.topic, push.status) == (
        device.push_token,
        wallet.pass_type,
        200,
    )
    assert await device.changed_serials(wallet.base, wallet.pass_type) == [serial]
    before = json.dumps(installed.verified.pass_json)
    assert (await device.fetch(installed)).status_code == 200  # after: the new pass
    assert json.dumps(installed.verified.pass_json) != before
    # The acknowledgement follows the push's answer; the device may be quicker.
    for _ in range(200):
        if worker.metrics.rows["apple"]:
            break
        await asyncio.sleep(0.01)
    assert await wallet.service.outbox_stats() == [] or all(
        s.pending + s.retrying + s.dead == 0 for s in await wallet.service.outbox_stats()
    )


async def test_one_push_per_device_for_several_changed_cards(
    wallet: Wallet, apns: FakeAPNs, apns_client: APNsClient
) -> None:
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    serials = []
    for name in ("A", "B", "C"):
        serial = (await wallet.service.issue_card("coffee", Holder(name=name))).card.serial
        await device.register(await install(wallet, device, serial))
        serials.append(serial)
    other = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    await other.register(await install(wallet, other, serials[0]))
    for serial in serials:
        await wallet.service.add_stamps(serial, 1)
        await wallet.service.add_stamps(serial, 1)
    worker = DeliveryWorker(wallet.service, [AppleSender(wallet.service, apns_client)])
    await settled(wallet.service.store)
    assert await worker.drain() == 6  # rows: coalesced into 3 cards, 2 devices
    assert sorted(p.token for p in apns.pushes) == sorted([device.push_token, other.push_token])
    assert sorted(await device.changed_serials(wallet.base, wallet.pass_type)) == sorted(serials)
    assert worker.metrics.deliveries["apple"] == 3


async def test_dead_tokens_are_pruned_and_the_card_leaves_apple_wallet(
    wallet: Wallet, apns: FakeAPNs, worker: DeliveryWorker
) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    await device.register(await install(wallet, device, serial))
    apns.reply(device.push_token, PushReply(410, "Unregistered"))
    await wallet.service.add_stamps(serial, 1)
    [push] = await apns.wait_for_pushes(1)
    assert push.status == 410
    for _ in range(100):
        if not await wallet.service.push_tokens(serial):
            break
        await asyncio.sleep(0.02)
    assert await wallet.service.push_tokens(serial) == []
    history = [e.type for e in await wallet.service.card_history(serial)]
    assert history[-1] == EventType.PASS_REMOVED
    assert (await wallet.service.get_card(serial)).card and Platform.APPLE not in (
        await wallet.service.get_card(serial)
    ).platforms
    # Nothing more goes to that token.
    await wallet.service.add_stamps(serial, 1)
    await asyncio.sleep(0.2)
    assert len(apns.pushes) == 1


async def test_a_failing_device_never_blocks_the_others_and_is_retried(
    wallet: Wallet, apns: FakeAPNs, apns_client: APNsClient
) -> None:
    a = (await wallet.service.issue_card("coffee", Holder(name="A"))).card.serial
    b = (await wallet.service.issue_card("coffee", Holder(name="B"))).card.serial
    da = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    db = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    await da.register(await install(wallet, da, a))
    await db.register(await install(wallet, db, b))
    apns.reply(da.push_token, PushReply(500, "InternalServerError"))  # every push, for now
    await wallet.service.add_stamps(a, 1)
    await wallet.service.add_stamps(b, 1)
    worker = DeliveryWorker(wallet.service, [AppleSender(wallet.service, apns_client)])
    await drain_rows(worker, 2)  # the failing card is not due again before its back-off
    assert [p.token for p in apns.delivered] == [db.push_token]
    [stats] = await wallet.service.outbox_stats()
    assert (stats.pending, stats.retrying) == (0, 1)
    assert worker.metrics.failed and worker.metrics.failures  # counted by reason
    assert any("RetryLater 500" in reason for _, reason in worker.metrics.failures)


async def test_a_configuration_error_pauses_apple_without_burning_the_queue(
    wallet: Wallet, apns: FakeAPNs, apns_client: APNsClient, caplog: pytest.LogCaptureFixture
) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    await device.register(await install(wallet, device, serial))
    apns.reply_default(PushReply(403, "BadCertificate"))
    await wallet.service.add_stamps(serial, 1)
    worker = DeliveryWorker(wallet.service, [AppleSender(wallet.service, apns_client)])
    with caplog.at_level(logging.ERROR):
        assert await drain_rows(worker, 1) == 1
        assert await worker.run_once() == 0  # paused: nothing claimed
    assert "apple delivery PAUSED" in caplog.text and "BadCertificate" in caplog.text
    assert worker.metrics.paused["apple"]
    [stats] = await wallet.service.outbox_stats()
    assert (stats.pending + stats.retrying, stats.dead) == (1, 0)
    [row] = await claim_visible(wallet.service, "check")
    assert row.attempts == 1  # the paused attempt did not count
    assert "paused" in (row.last_error or "")


async def test_void_sends_the_final_update_then_nothing_more(
    wallet: Wallet, apns: FakeAPNs, worker: DeliveryWorker
) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    device = Device(wallet.client, wallet.pki.root_cert.read_bytes())
    installed = await install(wallet, device, serial)
    await device.register(installed)
    await device.sync(wallet.base, wallet.pass_type)
    await wallet.service.void_card(serial)
    [push] = await apns.wait_for_pushes(1)
    assert push.token == device.push_token
    await device.sync(wallet.base, wallet.pass_type)
    assert installed.verified.pass_json.get("voided") is True
    await asyncio.sleep(0.2)
    assert len(apns.pushes) == 1


# -- Google -------------------------------------------------------------------------------------


@pytest.fixture
def google() -> AsyncIterator[GoogleStub]:
    stub = GoogleStub()
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=GOOGLE_BASE).mock(side_effect=stub.respx_side_effect)
        yield stub  # type: ignore[misc]


def google_sender(service: StampService, client: WalletClient) -> GoogleSender:
    settings = GoogleSettings(issuer_id=ISSUER, image_base_url="https://stamps.example.com/i/")
    return GoogleSender(service, client, settings)


async def test_google_objects_follow_the_card_and_void_makes_them_inactive(
    wallet: Wallet, google: GoogleStub
) -> None:
    service = wallet.service
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.GOOGLE, True)
    async with WalletClient(StaticTokens(), base_url=GOOGLE_BASE, rate=1000) as client:
        worker = DeliveryWorker(service, [google_sender(service, client)])
        await service.add_stamps(serial, 2)
        await service.add_stamps(serial, 1)
        assert await drain_rows(worker, 2) == 2
        [obj] = google.objects.values()
        assert obj["loyaltyPoints"]["balance"]["string"].startswith("3/")
        assert obj["state"] == "ACTIVE"
        assert len(google.classes) == 1  # the class was created when the insert missed it
        assert sum(1 for c in google.calls if c[0] == "PATCH") >= 1  # the second row patched
        assert (await service.google_object(serial)) is not None

        await service.void_card(serial)
        await drain_rows(worker, 1)
        assert obj["state"] == "INACTIVE"
        patches = [c for c in google.calls if c[0] == "PATCH"]
        # notifyPreference only for a notified change (the outbox row's silent flag).
        notified = [c for c in patches if c[2].get("notifyPreference")]
        assert len(notified) <= len(patches)


async def test_google_permission_error_pauses_google(wallet: Wallet, google: GoogleStub) -> None:
    service = wallet.service
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.GOOGLE, True)
    google.fail_with = (403, "permissionDenied")
    async with WalletClient(StaticTokens(), base_url=GOOGLE_BASE, rate=1000) as client:
        worker = DeliveryWorker(service, [google_sender(service, client)])
        await service.add_stamps(serial, 1)
        await drain_rows(worker, 1)
        assert "google" in worker.metrics.paused
        [stats] = await service.outbox_stats()
        assert (stats.pending + stats.retrying, stats.dead) == (1, 0)
