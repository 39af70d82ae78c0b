"""Enrolment: a customer (on the public page) or the staff (a "new customer") gets a card, and
the holder gets its link by e-mail; an address that already holds a card of the template gets
that card's link instead of a second card. One store transaction each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from .. import engine
from ..errors import CardInputError, TemplateNotFoundError
from ..model import Holder
from ..store import cards as store_cards
from ..store import email as store_email
from ..store import journal as store_journal
from ..store import templates as store_templates
from .core import ServiceCore, entries
from .email import CARD_LINK, EXISTING_CARD
from .results import Change


@dataclass(frozen=True)
class EnrolResult:
    """``change``: the new card; None when the address already held a card of the template
    (its link went by e-mail; which card is not told to the caller)."""

    change: Change | None
    #: Whether an e-mail was queued (the card link, or the existing card's link).
    emailed: bool

    @property
    def serial(self) -> str | None:
        return None if self.change is None else self.change.card.serial


class EnrolmentOperations(ServiceCore):
    async def enrol(
        self,
        template_id: str,
        holder: Holder,
        *,
        language: str | None = None,
        send_link: bool = True,
        one_card_per_email: bool = True,
        actor: str | None = None,
    ) -> EnrolResult:
        """Issue a card of the template's latest version to ``holder`` and queue its link by
        e-mail (``send_link``, when the holder has an address). With ``one_card_per_email`` (the
        public page) an address that already holds a live card of the template gets that card's
        link by e-mail and no new card is issued. Raises TemplateNotFoundError, CardInputError.
        """
        if not isinstance(holder, Holder):
            raise CardInputError(f"holder must be a Holder, got {type(holder).__name__}")

        def body(conn: Connection) -> EnrolResult:
            version = store_templates.latest_version(conn, template_id)
            if version is None:
                raise TemplateNotFoundError(f"no template {template_id!r} was published")
            template = self._template(conn, template_id, version)
            now = self._now()
            if one_card_per_email and holder.email is not None:
                found = store_email.card_by_email(conn, template_id, holder.email)
                if found is not None:
                    store_email.queue_email(conn, found, EXISTING_CARD, now)
                    return EnrolResult(None, emailed=True)
            outcome = engine.issue_card(template, holder, now=now, language=language)
            holder_id = store_cards.insert_holder(conn, holder, now)
            ids = store_journal.insert_events(
                conn, [store_journal.event_row(e, actor) for e in outcome.events]
            )
            tag = store_journal.next_change_tag(conn)
            store_cards.insert_card(conn, outcome.card, holder_id, change_tag=tag, now=now)
            emailed = send_link and holder.email is not None
            if emailed:
                store_email.queue_email(conn, outcome.card.serial, CARD_LINK, now)
            change = Change(
                card=outcome.card,
                events=entries(outcome.events, ids, template, actor, outcome.card.holder),
                notified=False,
                change_tag=tag,
            )
            return EnrolResult(change, emailed=emailed)

        return await self.store.run_write(body)
