"""E-mails to card holders, as outbox rows: the card link after an enrolment, "you already have
a card" when someone enrols again with the same address, and personal messages.

Queued in the transaction of the operation that causes them (so an e-mail is never lost and never
sent for something that rolled back), rendered when sent, from the template's e-mail texts in the
holder's language (built-in English and German texts when the template has none), and delivered
by :mod:`passkit_stamps.delivery.email`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from ..model import Card, CardTemplate, localized
from ..store import cards as store_cards
from ..store import email as store_email
from ..store import journal as store_journal
from ..store.schema import utc
from .checks import check_page
from .core import ServiceCore

#: What an e-mail row's ``reason`` starts with, per kind (see :mod:`..store.email`).
CARD_LINK = "card_issued"
EXISTING_CARD = "existing_card"
MESSAGE = "message_sent"

#: Built-in e-mail texts (the template's ``email_*`` texts override them per language).
BUILTIN_EMAIL_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "email_card_subject": "Your {{ template_name }} card",
        "email_card_body": (
            "Hello {{ holder_name }},\n\nyour {{ template_name }} card from {{ organization }} "
            "is ready. Open it here and add it to Apple Wallet or Google Wallet:\n\n"
            "{{ card_url }}\n"
        ),
        "email_existing_subject": "Your {{ template_name }} card",
        "email_existing_body": (
            "Hello {{ holder_name }},\n\nsomeone (probably you) asked for a {{ template_name }} "
            "card with this address. You already have one; here it is:\n\n{{ card_url }}\n\n"
            "If that was not you, you can ignore this e-mail.\n"
        ),
        "email_message_subject": "A message from {{ organization }}",
        "email_message_body": "{{ message }}\n\nYour card: {{ card_url }}\n",
    },
    "de": {
        "email_card_subject": "Ihre Karte: {{ template_name }}",
        "email_card_body": (
            "Hallo {{ holder_name }},\n\nIhre Karte {{ template_name }} von {{ organization }} "
            "ist fertig. Hier öffnen und zu Apple Wallet oder Google Wallet hinzufügen:\n\n"
            "{{ card_url }}\n"
        ),
        "email_existing_subject": "Ihre Karte: {{ template_name }}",
        "email_existing_body": (
            "Hallo {{ holder_name }},\n\njemand (vermutlich Sie) hat mit dieser Adresse eine "
            "Karte {{ template_name }} angefordert. Sie haben bereits eine:\n\n{{ card_url }}\n\n"
            "Falls Sie das nicht waren, ignorieren Sie diese E-Mail.\n"
        ),
        "email_message_subject": "Eine Nachricht von {{ organization }}",
        "email_message_body": "{{ message }}\n\nIhre Karte: {{ card_url }}\n",
    },
}

_KEYS = {
    CARD_LINK: ("email_card_subject", "email_card_body"),
    EXISTING_CARD: ("email_existing_subject", "email_existing_body"),
    MESSAGE: ("email_message_subject", "email_message_body"),
}


@dataclass(frozen=True)
class EmailJob:
    """One pending e-mail (an outbox row of platform ``email``)."""

    id: int
    serial: str
    reason: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class EmailContent:
    """A rendered e-mail: plain text (``text``); the sender builds the escaped HTML part."""

    to: str
    to_name: str | None
    subject: str
    text: str
    language: str
    card_url: str


def email_texts(template: CardTemplate, language: str, key: str) -> tuple[str, str]:
    """(the text to render, its built-in fallback) for an ``email_*`` key."""
    builtin = BUILTIN_EMAIL_TEXTS.get(language, BUILTIN_EMAIL_TEXTS["en"])[key]
    lang = language if language in template.texts else template.default_language
    own = getattr(template.texts[lang], key)
    return (own if own is not None else builtin), builtin


def render_email(
    template: CardTemplate, card: Card, kind: str, card_url: str, message: str = ""
) -> EmailContent | None:
    """The e-mail of ``kind`` for the card's holder; None when the holder has no address."""
    from ..templating import render_text_or  # jinja2 on first use: most commands send no mail

    if card.holder.email is None:
        return None
    language = card.language if card.language in template.texts else template.default_language
    context = {
        "holder_name": card.holder.name or "",
        "organization": template.organization_name,
        "template_name": template.name,
        "card_url": card_url,
        "card_number": card.serial,
        "stamps": card.stamps,
        "required": template.stamps_required,
        "message": message,
    }
    subject_key, body_key = _KEYS[kind]
    out = []
    for key in (subject_key, body_key):
        source, builtin = email_texts(template, language, key)
        out.append(render_text_or(source, context, fallback=builtin, field=f"texts.{key}"))
    subject = " ".join(out[0].split())[:200]  # one line: a header
    return EmailContent(
        to=card.holder.email,
        to_name=card.holder.name,
        subject=subject,
        text=out[1],
        language=language,
        card_url=card_url,
    )


class EmailOperations(ServiceCore):
    async def pending_email(self, *, limit: int = 100) -> list[EmailJob]:
        """The oldest e-mails waiting in the outbox."""
        _, limit = check_page(0, limit)
        rows = await self.store.run_read(lambda conn: store_email.pending_email(conn, limit))
        return [
            EmailJob(
                id=r["id"],
                serial=r["serial"],
                reason=r["reason"],
                attempts=r["attempts"],
                created_at=utc(r["created_at"]) or r["created_at"],
            )
            for r in rows
        ]

    async def email_content(
        self, job: EmailJob, card_url: Callable[[str], str]
    ) -> EmailContent | None:
        """Render a pending e-mail (``card_url(serial)``: the card page URL, see
        ``WebConfig.card_page_url``). None: nothing to send any more (the card was deleted, the
        holder has no address): the row can be dropped."""

        def body(conn: Connection) -> EmailContent | None:
            stored = store_cards.load_card(conn, job.serial)
            if stored is None or stored.deleted_at is not None:
                return None
            card = stored.card
            template = self._template(
                conn, card.template_id, card.template_version, stored.template_digest
            )
            kind, _, event_id = job.reason.partition(":")
            message = ""
            if kind == MESSAGE:
                found = store_journal.events_by_id(conn, [int(event_id)]) if event_id else []
                if not found:
                    return None
                message = str((found[0]["data"] or {}).get("message", ""))
            if kind not in _KEYS:
                return None
            return render_email(template, card, kind, card_url(card.serial), message)

        return await self.store.run_read(body)

    async def email_sent(self, ids: Iterable[int]) -> int:
        """Sent (or nothing to send): remove the rows from the outbox."""
        wanted = [int(i) for i in ids]
        return await self.store.run_write(lambda conn: store_email.email_done(conn, wanted))

    async def email_failed(self, ids: Iterable[int]) -> None:
        """A failed attempt: the rows stay for the next round, attempts counted."""
        wanted = [int(i) for i in ids]
        await self.store.run_write(lambda conn: store_email.email_attempted(conn, wanted))


def enrolment_consent(template: CardTemplate, language: str) -> str | None:
    consent = template.enrolment.consent
    if consent is None:
        return None
    return localized(consent, language, template.default_language)
