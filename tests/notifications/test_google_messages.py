"""The Google sender brings messages through addMessage: TEXT_AND_NOTIFY when notified (and the
object's patch then silent: one notification), TEXT over the budget, once per message id."""

from __future__ import annotations

import json
from typing import Any

import respx

from conftest import Clock  # tests/conftest.py
from delivery.conftest import drain_rows
from delivery.google_stub import PREFIX, GoogleStub, StaticTokens
from passkit_stamps.delivery.google import GoogleSender
from passkit_stamps.delivery.worker import CardUpdate, DeliveryWorker
from passkit_stamps.engine import Platform
from passkit_stamps.google.builders import GoogleSettings
from passkit_stamps.google.client import WalletClient
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.service.delivery import Delivery

BASE = "https://walletobjects.test" + PREFIX
ISSUER = "3388000000012345678"


class MessageStub(GoogleStub):
    """The stub, plus addMessage (409 for an id the object already has)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if not path.endswith("/addMessage"):
            return super().handle(method, path, body)
        message = json.loads(body)["message"]
        if any(m["id"] == message["id"] for m in self.messages):
            return 409, {"error": {"code": 409, "errors": [{"reason": "alreadyExists"}]}}
        self.messages.append(message)
        return 200, {"resource": {}}


async def test_messages_go_through_add_message(service: StampService, clock: Clock) -> None:
    stub = MessageStub()
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.GOOGLE, True)
    settings = GoogleSettings(issuer_id=ISSUER, image_base_url="https://stamps.example.com/i/")
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=BASE).mock(side_effect=stub.respx_side_effect)
        async with WalletClient(StaticTokens(), base_url=BASE, rate=1000) as client:
            worker = DeliveryWorker(service, [GoogleSender(service, client, settings)])
            sent = await service.send_message(serial, "Open on Sunday!")
            assert await drain_rows(worker, 1) == 1
            [message] = stub.messages
            assert message["id"] == f"m{sent.events[0].id}"
            assert (message["body"], message["messageType"]) == (
                "Open on Sunday!",
                "TEXT_AND_NOTIFY",
            )
            patches = [c for c in stub.calls if c[0] == "PATCH" or c[0] == "POST"]
            assert not any(c[2].get("notifyPreference") for c in patches)  # one notification
            for _ in range(2):
                clock.advance(minutes=10)
                await service.add_stamps(serial)
            assert (
                await drain_rows(worker, 2) == 2
            )  # (coalesced with a notified stamp, a message would notify)
            report = await service.broadcast("Spring menu")  # over the budget now
            assert await drain_rows(worker, 1) == 1
            assert stub.messages[-1]["id"] == f"c{report.id}"
            assert stub.messages[-1]["messageType"] == "TEXT"
            # a retried delivery of the same message adds nothing (409 taken as done)
            row = Delivery(0, serial, "google", "campaign_sent", True, 0, clock.now, 2)
            sender = GoogleSender(service, client, settings)
            assert await sender.deliver([CardUpdate(serial, "google", (row,))]) == {}
            assert len(stub.messages) == 2
