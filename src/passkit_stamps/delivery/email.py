"""E-mail over SMTP (``aiosmtplib``): configuration by URL, the message (plain text + escaped
HTML, RFC 2047 subject, Message-ID, Date), a sender whose failures are typed retryable or
permanent, and :func:`deliver_pending_email`, a drain loop over the outbox's e-mail rows.

URL: ``smtp://[user:password@]host[:port]/?from=Shop%20%3Cshop@example.com%3E`` (port 25, or
587 with ``starttls=1``), ``smtps://...`` (implicit TLS, port 465), ``&starttls=1`` (STARTTLS
required), ``&timeout=30``. User and password are percent-decoded; the password never appears in
a ``repr``, a log or an error.
"""

from __future__ import annotations

import html
import logging
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import EmailConfigError, EmailPermanentError, EmailRetryableError

if TYPE_CHECKING:
    from datetime import datetime

    from ..service import StampService
    from ..service.email import EmailContent
    from .runner import DeliveryConfig
    from .worker import CardUpdate

logger = logging.getLogger(__name__)

_URL_RE = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send. Build it with :meth:`from_url`."""

    host: str
    port: int
    sender: str  # the From address, "Name <addr>" or "addr"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    starttls: bool = False
    timeout: float = 30.0
    #: TLS trust (None: the system's); tests pass a context trusting their own CA.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(
        cls, url: str, *, sender: str | None = None, tls_context: ssl.SSLContext | None = None
    ) -> SmtpConfig:
        """Parse an ``smtp://`` / ``smtps://`` URL; raises EmailConfigError naming the part.
        ``sender``: the From address when the URL has no ``from=`` (``--email-from``; a name
        with spaces is easier to give there than percent-encoded); not both."""
        if not isinstance(url, str):
            raise EmailConfigError("SMTP URL must be a string")
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise EmailConfigError("SMTP URL scheme must be smtp:// or smtps://")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise EmailConfigError("SMTP URL port must be a number from 1 to 65535") from None
        if not host:
            raise EmailConfigError("SMTP URL has no host")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - {"from", "starttls", "timeout"})
        if unknown:
            raise EmailConfigError(f"SMTP URL parameter {unknown[0]!r} is unknown")
        starttls = query.get("starttls", "0") in ("1", "true", "yes")
        if query.get("starttls", "0") not in ("0", "1", "true", "false", "yes", "no"):
            raise EmailConfigError("SMTP URL parameter starttls must be 1 or 0")
        implicit = parts.scheme == "smtps"
        if implicit and starttls:
            raise EmailConfigError("smtps:// is TLS from the start: starttls=1 does not apply")
        if sender is not None and "from" in query:
            raise EmailConfigError(
                "give the e-mail sender once: from= in the SMTP URL or the sender option"
            )
        sender = query.get("from", "") if sender is None else sender.strip()
        _, address = parseaddr(sender)
        if not address or "@" not in address or any(c in sender for c in "\r\n"):
            raise EmailConfigError(
                "SMTP URL needs from=<sender address>, e.g. from=shop@x.example (or the sender "
                "given on its own)"
            )
        try:
            timeout = float(query.get("timeout", "30"))
        except ValueError:
            raise EmailConfigError("SMTP URL parameter timeout must be seconds") from None
        if not 0 < timeout <= 600:
            raise EmailConfigError("SMTP URL parameter timeout must be 0 to 600 seconds")
        return cls(
            host=host,
            port=port or (465 if implicit else 587 if starttls else 25),
            sender=sender,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            implicit_tls=implicit,
            starttls=starttls,
            timeout=timeout,
            tls_context=tls_context,
        )

    def describe(self) -> str:
        """Where e-mail goes, for logs: host, port, TLS mode, login name and sender; never the
        password."""
        mode = "TLS" if self.implicit_tls else "STARTTLS" if self.starttls else "no TLS"
        login = f", login {self.username}" if self.username else ""
        return f"{self.host}:{self.port} ({mode}{login}) from {self.sender}"


@dataclass(frozen=True)
class EmailDelivery:
    """The e-mail channel's settings for a dispatcher (``serve`` and ``worker`` with
    ``--smtp-url``): the SMTP server and the card page URL of a serial (the links the e-mails
    carry, ``WebConfig.card_page_url``)."""

    smtp: SmtpConfig
    card_url: Callable[[str], str] = field(repr=False)


def with_email(
    config: DeliveryConfig, service: StampService, email: EmailDelivery | None
) -> DeliveryConfig:
    """``config`` with the e-mail channel added (an :class:`EmailOutboxSender` on ``service``).
    Without ``email`` the config is unchanged and e-mail rows stay in the outbox: the dispatcher
    never claims a platform it has no sender for (``passkit-stamps outbox`` lists them)."""
    if email is None:
        logger.info(
            "e-mail: no SMTP server (--smtp-url): e-mails to card holders stay queued "
            "(passkit-stamps outbox lists them)"
        )
        return config
    from dataclasses import replace

    logger.info("e-mail through %s", email.smtp.describe())
    sender = EmailOutboxSender(service, EmailSender(email.smtp), email.card_url)
    return replace(config, extra_senders=(*config.extra_senders, sender))


def build_message(content: EmailContent, sender: str, *, now: datetime) -> EmailMessage:
    """The MIME message: UTF-8 plain text plus an HTML alternative in which everything is
    escaped (links made clickable after escaping), headers encoded per RFC 2047."""
    message = EmailMessage()
    message["Subject"] = content.subject
    message["From"] = sender
    message["To"] = Address(display_name=content.to_name or "", addr_spec=content.to)
    message["Date"] = format_datetime(now)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    # Quoted-printable: 7-bit on the wire, whatever the server's extensions (no 8BITMIME needed).
    message.set_content(content.text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(_html(content), subtype="html", charset="utf-8", cte="quoted-printable")
    # After the parts: making the message multipart moves Content-* headers into the first part.
    message["Content-Language"] = content.language
    return message


def _html(content: EmailContent) -> str:
    paragraphs = []
    for block in content.text.strip().split("\n\n"):
        escaped = html.escape(block)
        linked = _URL_RE.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
        paragraphs.append("<p>" + linked.replace("\n", "<br>\n") + "</p>")
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(content.language)}"><head>'
        '<meta charset="utf-8">'
        f"<title>{html.escape(content.subject)}</title></head>\n"
        '<body style="font-family:sans-serif;line-height:1.5">\n'
        + "\n".join(paragraphs)
        + "\n</body></html>\n"
    )


class EmailSender:
    """Sends one message per connection (a connection failure costs one message, not a batch).

    ``send`` raises :class:`EmailRetryableError` (unreachable, timed out, 4xx, a 5xx for the
    whole transaction, authentication refused: configuration can be fixed and the row is kept)
    or :class:`EmailPermanentError` (the recipient refused with 5xx)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib

        c = self.config
        recipient = parseaddr(str(message["To"]))[1]
        try:
            await aiosmtplib.send(
                message,
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.implicit_tls,
                start_tls=c.starttls,
                timeout=c.timeout,
                tls_context=c.tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            if codes and all(500 <= code < 600 for code in codes):
                raise EmailPermanentError(
                    f"the server refused the recipient ({codes[0]}): not retried"
                ) from None
            raise EmailRetryableError(f"the recipient was deferred ({codes[:1]})") from None
        except aiosmtplib.SMTPResponseException as exc:
            # Any other refusal: 4xx is temporary by definition; a 5xx for the whole
            # transaction (sender, data, auth) is the server's configuration or ours, which an
            # operator can fix: keep the message.
            raise EmailRetryableError(
                f"the SMTP server refused ({exc.code}) for {_redact(recipient)}"
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Unreachable, timed out, TLS refused, no AUTH offered: nothing names the recipient.
            raise EmailRetryableError(
                f"sending through {c.host}:{c.port} failed ({type(exc).__name__}: {exc})"[:300]
            ) from None


def _redact(address: str) -> str:
    """An address for logs: the domain only (personal data stays out of logs)."""
    return "…@" + address.rpartition("@")[2] if "@" in address else "…"


@dataclass
class EmailReport:
    """What one :func:`deliver_pending_email` round did."""

    sent: int = 0
    retrying: int = 0
    dropped: int = 0  # nothing to send any more (the card was deleted, no address)
    refused: int = 0  # the recipient was refused for good


async def deliver_pending_email(
    service: StampService,
    sender: EmailSender,
    card_url: Callable[[str], str],
    *,
    limit: int = 100,
    clock: Callable[[], datetime] | None = None,
) -> EmailReport:
    """Send the outbox's pending e-mails once (oldest first, at most ``limit``): a sent row is
    removed, a retryable failure keeps its row (attempts counted) for the next round, a refused
    recipient or an e-mail with nothing left to send is removed and counted. Without back-off:
    for tests and scripts; a server runs :class:`EmailOutboxSender` in the dispatcher (back-off,
    parking, leases; see docs/merchant.md)."""
    from ..service.checks import utcnow

    now = clock or utcnow
    report = EmailReport()
    for job in await service.pending_email(limit=limit):
        content = await service.email_content(job, card_url)
        if content is None:
            await service.email_sent([job.id])
            report.dropped += 1
            continue
        message = build_message(content, sender.config.sender, now=now())
        try:
            await sender.send(message)
        except EmailRetryableError as exc:
            logger.warning("e-mail %d not sent, will retry: %s", job.id, exc)
            await service.email_failed([job.id])
            report.retrying += 1
            continue
        except EmailPermanentError as exc:
            logger.warning("e-mail %d refused for good (card %s): %s", job.id, job.serial, exc)
            await service.email_sent([job.id])
            report.refused += 1
            continue
        await service.email_sent([job.id])
        report.sent += 1
    return report


class EmailOutboxSender:
    """The dispatcher's sender for platform ``email`` (``DeliveryConfig(extra_senders=...)``,
    :class:`passkit_stamps.delivery.worker.DeliveryWorker`): renders and sends each claimed row,
    one message a row (never coalesced: an enrolment link and a personal message are two
    e-mails). A row sent (or with nothing left to send, or refused for good) is removed at once,
    so a failure later in the same card's rows never sends it twice; a retryable failure leaves
    the card's remaining rows to the dispatcher's back-off (parked dead after its attempts: never
    lost); an SMTP configuration error pauses the e-mail platform (``SenderPaused``)."""

    platform = "email"

    def __init__(
        self,
        service: StampService,
        sender: EmailSender,
        card_url: Callable[[str], str],
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.service = service
        self.sender = sender
        self.card_url = card_url
        self.clock = clock

    async def deliver(self, updates: Sequence[CardUpdate]) -> Mapping[str, str]:
        from ..service.checks import utcnow
        from ..service.email import EmailJob
        from .worker import SenderPaused

        now = self.clock or utcnow
        failed: dict[str, str] = {}
        for update in updates:
            for row in update.rows:
                job = EmailJob(row.id, row.serial, row.reason, row.attempts, row.created_at)
                content = await self.service.email_content(job, self.card_url)
                if content is not None:
                    message = build_message(content, self.sender.config.sender, now=now())
                    try:
                        await self.sender.send(message)
                    except EmailConfigError as exc:
                        raise SenderPaused(str(exc)) from None
                    except EmailRetryableError as exc:
                        # The reason labels a metric: the class, not the server's text.
                        logger.warning("e-mail %d not sent, will retry: %s", row.id, exc)
                        failed[update.serial] = type(exc).__name__
                        break
                    except EmailPermanentError as exc:
                        logger.warning("e-mail %d refused for good: %s", row.id, exc)
                await self.service.email_sent([row.id])
        return failed
