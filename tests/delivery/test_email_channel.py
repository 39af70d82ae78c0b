"""The e-mail channel plugged into the dispatcher: rows claimed, sent over SMTP (aiosmtpd on
loopback), acknowledged; a refusal for now is retried with back-off; nothing coalesced away."""

from __future__ import annotations

from mail.conftest import SmtpServer, smtp  # noqa: F401  (the SMTP fixture)
from passkit_stamps.delivery.email import EmailOutboxSender, EmailSender, SmtpConfig
from passkit_stamps.delivery.worker import DeliveryWorker
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService

from .conftest import drain_rows


def card_url(serial: str) -> str:
    return f"https://stamps.example.com/c/{serial}"


async def test_email_rows_are_sent_by_the_worker_each_one(
    service: StampService,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    serial = (await service.enrol("coffee", Holder(name="A", email="a@example.com"))).serial
    assert serial is not None
    await service.send_message(serial, "Two for one today", email=True)
    channel = EmailOutboxSender(service, EmailSender(SmtpConfig.from_url(smtp.url())), card_url)
    worker = DeliveryWorker(service, [channel])
    assert await drain_rows(worker, 2) == 2
    assert len(smtp.recorder.messages) == 2  # the link and the message: not coalesced
    assert await service.pending_email() == []
    assert worker.metrics.deliveries["email"] == 1


async def test_a_refusal_for_now_is_retried_later(
    service: StampService,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    await service.enrol("coffee", Holder(name="A", email="a@example.com"))
    smtp.recorder.refuse_rcpt = "451 try later"
    channel = EmailOutboxSender(service, EmailSender(SmtpConfig.from_url(smtp.url())), card_url)
    worker = DeliveryWorker(service, [channel])
    assert await drain_rows(worker, 1) == 1
    [stats] = [s for s in await service.outbox_stats() if s.platform == "email"]
    assert (stats.retrying, stats.dead) == (1, 0)
    assert worker.metrics.failures[("email", "EmailRetryableError")] == 1
