"""The card operations: issue, stamp, redeem, coupon, void, message, holder update, delete.

Each is ONE store transaction that locks the card, applies the engine's rules (this module has
none of its own) and writes the card, its journal events, a new pass change tag and one outbox
row per wallet the card is saved in. A refused operation raises a typed error and writes
nothing, with one exception: a card found past its expiry time is expired (persisted,
journalled) before the operation is refused.

Idempotency: operations that change a card take ``idempotency_key``. The key is stored with the
operation's result in the same transaction; a replay returns that first result and writes
nothing, and a key reused for another operation, card or arguments raises
IdempotencyConflictError.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import engine
from ..engine import Event, EventType, Outcome
from ..errors import (
    CardInputError,
    CardNotFoundError,
    IdempotencyConflictError,
    PasskitStampsError,
    StoreError,
    TemplateNotFoundError,
)
from ..model import Card, CardState, CardTemplate, Holder
from ..store import campaigns as store_campaigns
from ..store import cards as store_cards
from ..store import email as store_email
from ..store import idempotency as store_idempotency
from ..store import journal as store_journal
from ..store import outbox as store_outbox
from ..store import templates as store_templates
from .checks import check_key, check_serial, request_digest
from .core import BUDGET_WINDOW, WALLETS, ServiceCore, entries, entry
from .results import Change

Apply = Callable[[CardTemplate, Card, datetime], Outcome]


class CardOperations(ServiceCore):
    async def issue_card(
        self,
        template_id: str,
        holder: Holder | None = None,
        *,
        version: int | None = None,
        serial: str | None = None,
        language: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Issue a card of the template's latest version (or ``version``) to ``holder``.
        Raises TemplateNotFoundError, CardInputError (bad holder/serial/language, serial taken)."""
        holder = holder if holder is not None else Holder()
        if not isinstance(holder, Holder):
            raise CardInputError(f"holder must be a Holder, got {type(holder).__name__}")
        key = check_key(idempotency_key)
        digest = ""  # only compared with a stored one: none is needed without a key
        if key is not None:
            request = {
                "template_id": template_id,
                "version": version,
                "holder": holder.model_dump(mode="json"),
                "serial": serial,
                "language": language,
            }
            digest = request_digest("issue_card", None, request)
        for attempt in range(3):
            try:
                return await self._issue_once(
                    template_id, holder, version, serial, language, key, digest, actor
                )
            except IntegrityError:
                # A concurrent call with the same key committed first (replay it), or the random
                # serial collided (practically never; draw again). A chosen serial is taken.
                if serial is not None and key is None:
                    raise CardInputError(f"card {serial} already exists") from None
                if attempt == 2:
                    raise StoreError("could not issue the card: conflicting writes") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _issue_once(
        self,
        template_id: str,
        holder: Holder,
        version: int | None,
        serial: str | None,
        language: str | None,
        key: str | None,
        digest: str,
        actor: str | None,
    ) -> Change:
        def body(conn: Connection) -> Change:
            if key is not None:
                replay = self._replay(conn, key, "issue_card", None, digest)
                if replay is not None:
                    return replay
            wanted = version
            if wanted is None:
                wanted = store_templates.latest_version(conn, template_id)
                if wanted is None:
                    raise TemplateNotFoundError(f"no template {template_id!r} was published")
            template = self._template(conn, template_id, wanted)
            now = self._now()
            outcome = engine.issue_card(template, holder, now=now, serial=serial, language=language)
            if serial is not None and store_cards.load_card(conn, serial) is not None:
                raise CardInputError(f"card {serial} already exists")
            holder_id = store_cards.insert_holder(conn, holder, now)
            ids = store_journal.insert_events(
                conn, [store_journal.event_row(e, actor) for e in outcome.events]
            )
            tag = store_journal.next_change_tag(conn)
            store_cards.insert_card(conn, outcome.card, holder_id, change_tag=tag, now=now)
            change = Change(
                card=outcome.card,
                events=entries(outcome.events, ids, template, actor, outcome.card.holder),
                notified=False,
                change_tag=tag,
            )
            if key is not None:
                self._save_key(conn, key, "issue_card", None, digest, change, now)
            return change

        return await self.store.run_write(body)

    async def add_stamps(
        self,
        serial: str,
        n: int = 1,
        *,
        code: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Add ``n`` stamps in one visit (``code``: e.g. the receipt id). Raises
        CardNotFoundError, InvalidStampCountError, StampLimitError, CardInactiveError."""
        return await self._operate(
            "add_stamps",
            serial,
            {"n": n, "code": code},
            lambda t, c, now: engine.add_stamps(t, c, n, now=now, code=code),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def set_stamps(
        self,
        serial: str,
        n: int,
        *,
        code: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Set the stamp count (the merchant's "edit punches"; an adjustment, silent)."""
        return await self._operate(
            "set_stamps",
            serial,
            {"n": n, "code": code},
            lambda t, c, now: engine.set_stamps(t, c, n, now=now, code=code),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def redeem_voucher(
        self,
        serial: str,
        voucher_code: str,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Redeem a voucher of the card. Raises VoucherError (unknown, foreign, redeemed)."""
        return await self._operate(
            "redeem_voucher",
            serial,
            {"voucher_code": voucher_code},
            lambda t, c, now: engine.redeem_voucher(t, c, voucher_code, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def issue_coupon(
        self,
        serial: str,
        title: str,
        *,
        description: str = "",
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Issue a personal voucher (a gift or compensation) on the card."""
        return await self._operate(
            "issue_coupon",
            serial,
            {"title": title, "description": description},
            lambda t, c, now: engine.issue_coupon(t, c, title, description=description, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def void_card(
        self, serial: str, *, idempotency_key: str | None = None, actor: str | None = None
    ) -> Change:
        """Void the card: Apple shows it voided, Google inactive; both wallets are updated."""
        return await self._operate(
            "void_card",
            serial,
            {},
            lambda t, c, now: engine.void_card(t, c, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def send_message(
        self,
        serial: str,
        text: str,
        *,
        email: bool = False,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Put a personal message on the card (back of the pass) and notify the holder in every
        wallet, budget allowing. Journal: ``message_sent``. ``email``: also e-mail it to the
        holder (queued in the same transaction; see :mod:`.email`), when they have an address."""

        def queue_email(conn: Connection, change: Change, now: datetime) -> None:
            sent = [e for e in change.events if e.type is EventType.MESSAGE_SENT]
            if sent:  # the message's id: Google's addMessage adds it once (store/campaigns.py)
                store_campaigns.set_message_id(conn, change.card.serial, f"m{sent[0].id}")
            if email and sent and change.card.holder.email is not None:
                reason = f"message_sent:{sent[0].id}"
                store_email.queue_email(conn, change.card.serial, reason, now)

        return await self._operate(
            "send_message",
            serial,
            {"text": text, **({"email": True} if email else {})},
            lambda t, c, now: engine.send_message(t, c, text, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
            after=queue_email,
        )

    async def update_holder(
        self, serial: str, holder: Holder, *, actor: str | None = None
    ) -> Change:
        """Edit the customer's details (name, email, phone, birthday). The pass shows the name,
        so the wallets get a silent update. The engine has no event for it: none is written."""
        if not isinstance(holder, Holder):
            raise CardInputError(f"holder must be a Holder, got {type(holder).__name__}")

        def apply(template: CardTemplate, card: Card, now: datetime) -> Outcome:
            return engine.update_holder(template, card, holder, now=now)

        return await self._operate(
            "update_holder", serial, {}, apply, idempotency_key=None, actor=actor
        )

    async def delete_card(
        self, serial: str, *, idempotency_key: str | None = None, actor: str | None = None
    ) -> Change:
        """Delete the card: voided (so every wallet shows it invalid), the holder's name, email,
        phone, birthday and the card's message erased, and ``card_deleted`` journalled. The
        journal keeps its history; afterwards the card is not found by any operation (the Apple
        web service still serves the voided, anonymous pass so devices learn of it)."""

        return await self._operate(
            "delete_card",
            serial,
            {},
            lambda t, c, now: engine.delete_card(t, c, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
            delete=True,
        )

    async def _operate(
        self,
        operation: str,
        serial: str,
        request: dict[str, Any],
        apply: Apply,
        *,
        idempotency_key: str | None,
        actor: str | None,
        delete: bool = False,
        after: Callable[[Connection, Change, datetime], None] | None = None,
    ) -> Change:
        check_serial(serial)
        key = check_key(idempotency_key)
        digest = request_digest(operation, serial, request) if key is not None else ""

        def body(conn: Connection) -> Change | PasskitStampsError:
            """The change, or the error to raise AFTER committing the card's expiry."""
            stored = store_cards.load_card(conn, serial, for_update=True)
            if key is not None:
                replay = self._replay(conn, key, operation, serial, digest)
                if replay is not None:
                    return replay
            if stored is None or stored.deleted_at is not None:
                raise CardNotFoundError(f"no card {serial}")
            card = stored.card
            template = self._template(
                conn, card.template_id, card.template_version, stored.template_digest
            )
            now = self._now()
            expiry = engine.expire_if_due(template, card, now=now)
            try:
                outcome = apply(template, expiry.card, now)
            except PasskitStampsError as exc:
                if not expiry.events:
                    raise
                # The card expired: that is a fact to keep even though the operation is refused.
                self._persist(
                    conn,
                    stored,
                    template,
                    expiry.card,
                    expiry.events,
                    notify=False,
                    reason=EventType.CARD_EXPIRED.value,
                    actor=None,
                    now=now,
                )
                return exc
            else:
                evs = (*expiry.events, *outcome.events)
                change = self._persist(
                    conn,
                    stored,
                    template,
                    outcome.card,
                    evs,
                    notify=outcome.notify,
                    reason=evs[0].type.value if evs else operation,
                    actor=actor,
                    now=now,
                    deleted_at=now if delete else None,
                )
                if after is not None:  # more of the same transaction (e.g. an e-mail)
                    after(conn, change, now)
                if key is not None:
                    self._save_key(conn, key, operation, serial, digest, change, now)
                return change

        result = await self.store.run_write(body)
        if isinstance(result, PasskitStampsError):
            raise result
        return result

    def _persist(
        self,
        conn: Connection,
        stored: store_cards.StoredCard,
        template: CardTemplate,
        card: Card,
        evs: Sequence[Event],
        *,
        notify: bool,
        reason: str,
        actor: str | None,
        now: datetime,
        deleted_at: datetime | None = None,
    ) -> Change:
        """Write one operation's outcome: journal, budget, change tag, card, outbox."""
        ids = store_journal.insert_events(conn, [store_journal.event_row(e, actor) for e in evs])
        written = entries(evs, ids, template, actor, card.holder)
        if card == stored.card and deleted_at is None:
            return Change(card, written, notified=False, change_tag=stored.change_tag)
        if stored.platforms is not None:
            saved = set(stored.platforms)
        else:
            saved = (store_cards.platforms(conn, [card.serial])).get(card.serial, set())
        wallets = sorted(saved & set(WALLETS))
        if stored.card.state is CardState.VOIDED and deleted_at is None:
            # A voided card's final update went out with its void: nothing more is ever sent
            # to its devices (deleting it sends the anonymous pass, the last one).
            wallets = []
        notified = False
        if notify and wallets and self.notification_budget > 0:
            spent = store_outbox.notifications_since(conn, card.serial, now - BUDGET_WINDOW)
            if spent < self.notification_budget:
                store_outbox.spend_notification(conn, card.serial, now, reason)
                notified = True
        if card.holder != stored.card.holder:
            store_cards.update_holder(conn, stored.holder_id, card.holder)
        # The transaction's change tag, taken by the card's UPDATE (no lock: PostgreSQL's
        # transaction id, SQLite's single writer's counter) and a Last-Modified after the
        # previous version's: store/changes.py.
        tag = store_cards.update_card(
            conn,
            stored.card,
            card,
            stored.holder_id,
            now=now,
            previous=stored.updated_at,
            deleted_at=deleted_at,
            notified=notified,
        )
        store_outbox.insert_outbox(
            conn,
            [
                store_outbox.outbox_row(card.serial, p, reason, not notified, tag, now)
                for p in wallets
            ],
        )
        return Change(card, written, notified=notified, change_tag=tag)

    def _replay(
        self, conn: Connection, key: str, operation: str, serial: str | None, digest: str
    ) -> Change | None:
        row = store_idempotency.idempotent_result(conn, key)
        if row is None:
            return None
        if row["operation"] != operation or (serial is not None and row["serial"] != serial):
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was used for {row['operation']} on card "
                f"{row['serial']}, not {operation} on {serial or 'a new card'}"
            )
        if not hmac.compare_digest(row["request_digest"], digest):
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was used for {operation} with other arguments"
            )
        result = json.loads(row["result"])
        found = [entry(r) for r in store_journal.events_by_id(conn, result["event_ids"])]
        return Change(
            card=Card.model_validate(result["card"]),
            events=tuple(found),
            notified=bool(result["notified"]),
            change_tag=int(result["change_tag"]),
            replayed=True,
        )

    def _save_key(
        self,
        conn: Connection,
        key: str,
        operation: str,
        serial: str | None,
        digest: str,
        change: Change,
        now: datetime,
    ) -> None:
        result = {
            "card": change.card.model_dump(mode="json"),
            "event_ids": [e.id for e in change.events],
            "notified": change.notified,
            "change_tag": change.change_tag,
        }
        store_idempotency.save_idempotent_result(
            conn,
            key,
            operation=operation,
            request_digest=digest,
            serial=serial or change.card.serial,
            result=json.dumps(result),
            now=now,
        )
