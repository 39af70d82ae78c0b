"""E-mail through a real SMTP server on loopback: headers, encoding, links, languages, and the
outbox keeping every message the server refuses or cannot take."""

from __future__ import annotations

import logging

import pytest

from passkit_stamps.delivery.email import (
    EmailSender,
    SmtpConfig,
    deliver_pending_email,
)
from passkit_stamps.errors import EmailConfigError
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService

from .conftest import SmtpServer, TlsSmtp, free_port

BASE = "https://stamps.example.com/wallet/cards/"


def card_url(serial: str) -> str:
    return BASE + serial + "/secret"


def sender(url: str) -> EmailSender:
    return EmailSender(SmtpConfig.from_url(url))


async def test_a_message_by_email_has_proper_headers_encoding_and_links(
    service: StampService, smtp: SmtpServer
) -> None:
    holder = Holder(name="Jürgen Müller 🎉", email="juergen@example.com")
    serial = (await service.issue_card("coffee", holder)).card.serial
    await service.send_message(serial, "Grüße aus dem Café ☕ <b>bold</b> & more", email=True)
    report = await deliver_pending_email(
        service,
        sender(smtp.url(**{"from": "Bean%20There%20%3Cshop@beanthere.example%3E"})),
        card_url,
    )
    assert (report.sent, report.retrying) == (1, 0)
    [message] = smtp.recorder.messages
    raw = smtp.recorder.raw[0].decode("ascii")  # 7-bit clean on the wire
    assert message["Subject"] == "A message from Bean There Coffee"
    assert message["To"].addresses[0].display_name == "Jürgen Müller 🎉"
    assert message["To"].addresses[0].addr_spec == "juergen@example.com"
    assert "=?utf-8?" in raw.split("\n\n", 1)[0].lower()  # RFC 2047 encoded header
    assert message["From"].addresses[0].addr_spec == "shop@beanthere.example"
    assert message["Message-ID"].endswith("@beanthere.example>")
    assert message["Date"].datetime is not None
    assert smtp.recorder.envelopes[0] == ("shop@beanthere.example", ["juergen@example.com"])
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    assert "Grüße aus dem Café ☕ <b>bold</b> & more" in text
    assert card_url(serial) in text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in page
    assert "<b>" not in page
    assert f'<a href="{card_url(serial)}">' in page
    assert await service.pending_email() == []


async def test_no_email_flag_no_email(service: StampService, smtp: SmtpServer) -> None:
    holder = Holder(name="Ada", email="ada@example.com")
    serial = (await service.issue_card("coffee", holder)).card.serial
    await service.send_message(serial, "Hello")
    assert await service.pending_email() == []


async def test_enrolment_link_then_existing_card_link_in_the_holders_language(
    service: StampService, smtp: SmtpServer
) -> None:
    holder = Holder(name="Grete", email="Grete@Example.com")
    first = await service.enrol("salon", holder, language="de")
    assert first.change is not None and first.emailed
    again = await service.enrol("salon", Holder(name="G", email="grete@example.com"))
    assert again.change is None and again.emailed  # no second card
    page = await service.list_cards(template_id="salon")
    assert page.total == 1
    report = await deliver_pending_email(service, sender(smtp.url()), card_url)
    assert report.sent == 2
    link, existing = smtp.recorder.messages
    serial = first.change.card.serial
    assert link["Subject"].startswith("Ihre Karte: ")
    assert card_url(serial) in link.get_body(("plain",)).get_content()
    assert "Hallo Grete" in link.get_body(("plain",)).get_content()
    assert "bereits" in existing.get_body(("plain",)).get_content()
    assert card_url(serial) in existing.get_body(("plain",)).get_content()
    assert link["Content-Language"] == "de"


async def test_staff_enrolment_without_link_and_second_card_on_request(
    service: StampService,
) -> None:
    holder = Holder(name="Ada", email="ada@example.com")
    await service.enrol("coffee", holder, send_link=False)
    assert await service.pending_email() == []
    second = await service.enrol("coffee", holder, one_card_per_email=False)
    assert second.change is not None
    assert len(await service.pending_email()) == 1


@pytest.mark.parametrize(
    "where,reply",
    [
        ("rcpt", "451 4.3.0 try again later"),
        ("data", "554 5.3.0 transaction failed"),
        ("data", "421 4.3.2 shutting down"),
    ],
)
async def test_refused_by_the_server_is_retried_never_lost(
    service: StampService, smtp: SmtpServer, where: str, reply: str
) -> None:
    serial = (await service.enrol("coffee", Holder(name="A", email="a@example.com"))).serial
    setattr(smtp.recorder, f"refuse_{where}", reply)
    for _ in range(3):
        report = await deliver_pending_email(service, sender(smtp.url()), card_url)
        assert (report.sent, report.retrying) == (0, 1)
    [job] = await service.pending_email()
    assert job.attempts == 3
    setattr(smtp.recorder, f"refuse_{where}", None)
    report = await deliver_pending_email(service, sender(smtp.url()), card_url)
    assert report.sent == 1
    assert len(smtp.recorder.messages) == 1
    assert serial is not None and card_url(serial) in smtp.recorder.raw[0].decode()
    assert await service.pending_email() == []


async def test_unreachable_server_is_retried_never_lost(
    service: StampService, smtp: SmtpServer
) -> None:
    await service.enrol("coffee", Holder(name="A", email="a@example.com"))
    dead = sender(f"smtp://127.0.0.1:{free_port()}/?from=shop@beanthere.example&timeout=2")
    report = await deliver_pending_email(service, dead, card_url)
    assert report.retrying == 1
    assert len(await service.pending_email()) == 1
    report = await deliver_pending_email(service, sender(smtp.url()), card_url)
    assert report.sent == 1 and len(smtp.recorder.messages) == 1


async def test_a_refused_recipient_is_dropped_and_counted(
    service: StampService, smtp: SmtpServer
) -> None:
    await service.enrol("coffee", Holder(name="A", email="nobody@example.com"))
    smtp.recorder.refuse_rcpt = "550 5.1.1 no such user"
    report = await deliver_pending_email(service, sender(smtp.url()), card_url)
    assert report.refused == 1
    assert await service.pending_email() == []


async def test_deleted_card_email_is_dropped(service: StampService, smtp: SmtpServer) -> None:
    serial = (await service.enrol("coffee", Holder(name="A", email="a@example.com"))).serial
    assert serial is not None
    await service.delete_card(serial)
    report = await deliver_pending_email(service, sender(smtp.url()), card_url)
    assert report.dropped == 1 and smtp.recorder.messages == []


async def test_smtp_auth_from_the_url(
    service: StampService, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    await service.enrol("coffee", Holder(name="A", email="a@example.com"))
    bad = f"smtp://shop:wrong@127.0.0.1:{smtp.port}/?from=shop@beanthere.example&timeout=2"
    with caplog.at_level(logging.WARNING, logger="passkit_stamps"):
        assert (await deliver_pending_email(service, sender(bad), card_url)).retrying == 1
    # The server's refusal, not a timeout: the message is kept for a fixed password.
    assert "refused (535)" in caplog.text, caplog.text
    good = f"smtp://shop:p%40ss%20word@127.0.0.1:{smtp.port}/?from=shop@beanthere.example&timeout=2"
    assert (await deliver_pending_email(service, sender(good), card_url)).sent == 1


def test_smtp_urls() -> None:
    c = SmtpConfig.from_url("smtps://u%40x:s3cr%2Ft@mail.example.com/?from=a@b.example")
    assert (c.host, c.port, c.implicit_tls, c.starttls) == ("mail.example.com", 465, True, False)
    assert (c.username, c.password) == ("u@x", "s3cr/t")
    assert "s3cr" not in repr(c)
    c = SmtpConfig.from_url("smtp://mail.example.com/?starttls=1&from=a@b.example")
    assert (c.port, c.starttls) == (587, True)
    assert SmtpConfig.from_url("smtp://h:2525/?from=a@b.example").port == 2525


@pytest.mark.parametrize(
    "url,part",
    [
        ("http://h/?from=a@b.example", "scheme"),
        ("smtp:///?from=a@b.example", "host"),
        ("smtp://h:99999/?from=a@b.example", "port"),
        ("smtp://h/", "from="),
        ("smtp://h/?from=a@b.example&x=1", "'x'"),
        ("smtps://h/?from=a@b.example&starttls=1", "starttls"),
        ("smtp://h/?from=a@b.example&timeout=abc", "timeout"),
        ("smtp://h/?from=a@b.example%0d%0aBcc:%20x@y", "from="),
    ],
)
def test_bad_smtp_urls_are_typed_errors(url: str, part: str) -> None:
    with pytest.raises(EmailConfigError, match=part):
        SmtpConfig.from_url(url)


async def test_simultaneous_enrolments_of_one_address_make_one_card(
    service: StampService,
) -> None:
    import asyncio

    holder = Holder(name="Ada", email="ada@example.com")
    results = await asyncio.gather(*(service.enrol("coffee", holder) for _ in range(5)))
    assert sum(r.change is not None for r in results) == 1
    assert (await service.list_cards(template_id="coffee")).total == 1
    assert len(await service.pending_email()) == 5  # one link, four "you already have one"


async def test_starttls_and_smtps_with_auth(service: StampService, tls_smtp: TlsSmtp) -> None:
    await service.enrol("coffee", Holder(name="A", email="a@example.com"))
    where = f"shop:p%40ss%20word@127.0.0.1:{tls_smtp.port}/?from=s@x.example"
    url = f"smtps://{where}" if tls_smtp.kind == "smtps" else f"smtp://{where}&starttls=1"
    # Without STARTTLS the server refuses (it requires it): kept for a retry.
    if tls_smtp.kind == "starttls":
        plain = SmtpConfig.from_url(f"smtp://{where}")
        report = await deliver_pending_email(service, EmailSender(plain), card_url)
        assert report.retrying == 1
    config = SmtpConfig.from_url(url, tls_context=tls_smtp.client_context)
    report = await deliver_pending_email(service, EmailSender(config), card_url)
    assert report.sent == 1
    assert len(tls_smtp.recorder.messages) == 1
