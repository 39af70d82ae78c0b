"""E-mail through the outbox dispatcher (delivery/worker.py): sent once, refusals and an
unreachable server retried with back-off, never lost; the push worker's outbox reads are not
disturbed by e-mail rows."""

from __future__ import annotations

from conftest import Clock  # tests/conftest.py
from passkit_stamps.delivery.email import EmailOutboxSender, EmailSender, SmtpConfig
from passkit_stamps.delivery.worker import DeliveryWorker
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.service.delivery import RetryPolicy

from .conftest import SmtpServer, free_port
from .test_email import card_url


def worker(service: StampService, url: str) -> DeliveryWorker:
    sender = EmailOutboxSender(service, EmailSender(SmtpConfig.from_url(url)), card_url)
    return DeliveryWorker(service, [sender], retry=RetryPolicy(max_attempts=50))


async def test_the_dispatcher_sends_each_email_once_and_retries_refusals(
    service: StampService, clock: Clock, smtp: SmtpServer
) -> None:
    serial = (await service.enrol("coffee", Holder(name="Ada", email="ada@example.com"))).serial
    assert serial is not None
    await service.send_message(serial, "Grüße ☕", email=True)
    smtp.recorder.refuse_data = "451 4.3.0 try again later"
    w = worker(service, smtp.url())
    await w.drain()
    assert smtp.recorder.messages == []
    assert len(await service.pending_email()) == 2  # kept, due later
    smtp.recorder.refuse_data = None
    await w.drain()
    assert smtp.recorder.messages == []  # not due yet: back-off
    clock.advance(hours=1)
    await w.drain()
    subjects = sorted(m["Subject"] for m in smtp.recorder.messages)
    assert subjects == ["A message from Bean There Coffee", "Your Free Coffee card"]
    assert await service.pending_email() == []
    clock.advance(hours=1)
    await w.drain()
    assert len(smtp.recorder.messages) == 2  # never twice


async def test_the_dispatcher_keeps_email_while_the_server_is_unreachable(
    service: StampService, clock: Clock, smtp: SmtpServer
) -> None:
    await service.enrol("coffee", Holder(name="Ada", email="ada@example.com"))
    dead = worker(service, f"smtp://127.0.0.1:{free_port()}/?from=s@x.example&timeout=2")
    for _ in range(3):
        await dead.drain()
        clock.advance(hours=1)
    [job] = await service.pending_email()
    assert job.attempts == 3
    await worker(service, smtp.url()).drain()
    assert len(smtp.recorder.messages) == 1
    assert await service.pending_email() == []


async def test_pending_updates_ignore_email_rows(service: StampService) -> None:
    await service.enrol("coffee", Holder(name="Ada", email="ada@example.com"))
    assert await service.pending_updates() == []  # was: ValueError: 'email' is not a Platform
