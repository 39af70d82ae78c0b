"""StampService: the merchant's operations on a store, each one atomic.

Every state change runs in ONE transaction that locks the card, applies the engine's rules
(:mod:`passkit_stamps.engine`; this module has none of its own), and writes the card, its journal
events, a new pass change tag and one outbox row per wallet the card is saved in. A refused
operation raises a typed error and writes nothing, with one exception: a card found past its
expiry time is expired (persisted, journalled) before the operation is refused.

Idempotency: operations that change a card take ``idempotency_key``. The key is stored with the
operation's result in the same transaction; a replay returns that first result and writes
nothing, and a key reused for another operation, card or arguments raises
IdempotencyConflictError.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import engine
from .engine import Event, EventType, Outcome, Platform
from .errors import (
    CardInputError,
    CardNotFoundError,
    IdempotencyConflictError,
    PasskitStampsError,
    Problem,
    StoreError,
    TemplateError,
    TemplateNotFoundError,
)
from .model import Card, CardState, CardTemplate, Holder, Progress, Voucher, localized, progress
from .store import codec
from .store import queries as q
from .store.schema import (
    SQLITE_SEARCH_TABLE,
    card_platforms,
    cards,
    devices,
    events,
    google_objects,
    holders,
    outbox,
    registrations,
    templates,
    utc,
    vouchers,
)
from .store.store import Store

__all__ = [
    "CardDetails",
    "CardSummary",
    "Change",
    "GoogleObject",
    "JournalEntry",
    "OutboxEntry",
    "Page",
    "PassContent",
    "PublishResult",
    "StampService",
    "utcnow",
]

T = TypeVar("T")

#: Notifications per card per 24 hours (Google's limit; Apple gets the same budget).
DEFAULT_NOTIFICATION_BUDGET = 3
BUDGET_WINDOW = timedelta(hours=24)
WALLETS = (Platform.APPLE.value, Platform.GOOGLE.value)
MAX_PAGE = 500
MAX_KEY_LENGTH = 200
SORT_KEYS = ("created_at", "last_stamp_at", "stamps", "serial", "name")


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalEntry:
    """One row of the journal ("Card Events"), with the template name and the holder."""

    id: int
    type: EventType
    at: datetime
    serial: str
    template_id: str
    template_version: int
    stamps: int
    required: int
    code: str | None = None
    reward: str | None = None
    voucher_code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None
    template_name: str | None = None
    holder_name: str | None = None
    holder_email: str | None = None


@dataclass(frozen=True)
class Change:
    """What an operation did: the card after it, the journal entries it wrote, whether the
    holder will be notified (budget allowing), and the card's pass change tag."""

    card: Card
    events: tuple[JournalEntry, ...]
    notified: bool
    change_tag: int
    #: True when this is the stored result of an earlier call with the same idempotency key.
    replayed: bool = False


@dataclass(frozen=True)
class PublishResult:
    template_id: str
    version: int
    #: ``created`` (new version), ``design_updated`` (same version, design/texts changed, applied
    #: to its cards) or ``unchanged`` (identical content: nothing written).
    status: Literal["created", "design_updated", "unchanged"]
    cards_updated: int = 0


@dataclass(frozen=True)
class CardDetails:
    """The card details panel: the card, its template version, where it is saved, progress."""

    card: Card
    template: CardTemplate
    platforms: frozenset[Platform]
    progress: Progress
    #: Title of the highest reward reached in this round, and of the next one to earn.
    current_reward: str | None
    next_reward: str | None
    change_tag: int
    updated_at: datetime

    @property
    def holder(self) -> Holder:
        return self.card.holder

    @property
    def vouchers(self) -> tuple[Voucher, ...]:
        return self.card.vouchers

    @property
    def template_key(self) -> str:
        return self.template.key


@dataclass(frozen=True)
class CardSummary:
    """One row of the issued-cards list."""

    serial: str
    holder: Holder
    template_id: str
    template_version: int
    template_name: str
    stamps: int
    required: int
    state: CardState
    platforms: frozenset[Platform]
    created_at: datetime
    last_stamp_at: datetime | None
    vouchers_ready: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the total number matching."""

    items: tuple[T, ...]
    #: The number matching; with ``total_exact`` False, a lower bound (the count was capped).
    total: int
    offset: int
    limit: int
    total_exact: bool = True

    @property
    def has_more(self) -> bool:
        # A capped total was counted past the page (see list_cards), so more exist.
        return self.offset + len(self.items) < self.total or not self.total_exact


class PassContent(NamedTuple):
    """What the Apple web service needs to answer for a pass."""

    card: Card
    template: CardTemplate
    last_modified: datetime


@dataclass(frozen=True)
class GoogleObject:
    serial: str
    object_id: str
    class_id: str
    state: str
    last_synced: datetime | None


@dataclass(frozen=True)
class OutboxEntry:
    """A pending pass update for the push worker."""

    id: int
    serial: str
    platform: Platform
    reason: str
    silent: bool
    change_tag: int
    created_at: datetime
    attempts: int


# -- the service ----------------------------------------------------------------------------------

Apply = Callable[[CardTemplate, Card, datetime], Outcome]


class StampService:
    """The merchant's and the web app's operations on one :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        notification_budget: int = DEFAULT_NOTIFICATION_BUDGET,
        pass_type_identifier: str | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.notification_budget = notification_budget
        #: When set, the Apple methods answer only for this pass type.
        self.pass_type_identifier = pass_type_identifier
        self._templates: dict[tuple[str, int], tuple[str, CardTemplate]] = {}

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    # -- templates --------------------------------------------------------------------------------

    async def publish_template(self, template: CardTemplate) -> PublishResult:
        """Store a template version.

        * A new id, or a version above the latest: stored (``created``); cards keep theirs.
        * A version already stored with identical content: nothing happens (``unchanged``).
        * A version already stored whose rules are the same but whose design or texts changed:
          stored over it and applied to every card of that version (``design_updated``): their
          change tags move and each wallet gets a silent update.
        * A version already stored with different rules, or a version below the latest that was
          never published: TemplateError (publish the rules change as a new version).
        """
        if not isinstance(template, CardTemplate):
            raise CardInputError(f"expected a CardTemplate, got {type(template).__name__}")
        encoded = codec.EncodedTemplate(template)
        now = self._now()

        def body(conn: Connection) -> PublishResult:
            versions = q.template_versions(conn, template.id)
            same = next((v for v in versions if v["version"] == template.version), None)
            if same is not None:
                if same["content_digest"] == encoded.content_digest:
                    return PublishResult(template.id, template.version, "unchanged")
                if same["rules_digest"] != encoded.rules_digest:
                    raise TemplateError(
                        [
                            Problem(
                                "version",
                                f"{template.key} is already published with other rules "
                                "(stamps required, rewards, expiry, limits or after_last_reward); "
                                f"publish the change as version {versions[-1]['version'] + 1} "
                                "and migrate cards with migrate_cards",
                            )
                        ],
                        source=template.id,
                    )
                q.replace_template(conn, encoded, now)
                count = self._touch_template_cards(conn, template, now)
                return PublishResult(template.id, template.version, "design_updated", count)
            if versions and template.version < versions[-1]["version"]:
                raise TemplateError(
                    [
                        Problem(
                            "version",
                            f"must be greater than {versions[-1]['version']}, the latest "
                            f"published version of {template.id!r}",
                        )
                    ],
                    source=template.id,
                )
            q.insert_template(conn, encoded, now)
            return PublishResult(template.id, template.version, "created")

        result = await self.store.run_write(body)
        if result.status != "unchanged":
            # Committed: cache the version as published (a design update replaces the old copy).
            self._templates[(template.id, template.version)] = (encoded.content_digest, template)
        return result

    def _touch_template_cards(self, conn: Connection, template: CardTemplate, now: datetime) -> int:
        """Move the change tag of every card of this version and queue silent updates."""
        where = (
            cards.c.template_id == template.id,
            cards.c.template_version == template.version,
            cards.c.deleted_at.is_(None),
        )
        locked = sa.select(cards.c.serial).where(*where)
        if self.store.is_postgres:
            locked = locked.with_for_update()
        serials = list((conn.scalars(locked)).all())
        if not serials:
            return 0
        tag = q.next_change_tag(conn)  # last lock taken: see next_change_tag
        conn.execute(cards.update().where(*where).values(change_tag=tag, updated_at=now))
        source = (
            sa.select(
                card_platforms.c.serial,
                card_platforms.c.platform,
                sa.literal("template_design"),
                sa.true(),
                sa.literal(tag, sa.BigInteger),
                sa.literal(now, sa.DateTime(timezone=True)),
                sa.literal(0),
            )
            .join(cards, cards.c.serial == card_platforms.c.serial)
            .where(*where, card_platforms.c.platform.in_(WALLETS))
        )
        conn.execute(
            outbox.insert().from_select(
                ["serial", "platform", "reason", "silent", "change_tag", "created_at", "attempts"],
                source,
            )
        )
        return len(serials)

    async def get_template(self, template_id: str, version: int | None = None) -> CardTemplate:
        """A published template (the latest version when ``version`` is None).
        Raises TemplateNotFoundError."""

        def body(conn: Connection) -> CardTemplate:
            wanted = version
            if wanted is None:
                wanted = q.latest_version(conn, template_id)
                if wanted is None:
                    raise TemplateNotFoundError(f"no template {template_id!r} was published")
            return self._template(conn, template_id, wanted)

        return await self.store.run_read(body)

    async def list_templates(self) -> list[tuple[str, int, str]]:
        """Every published template version: (id, version, name), by id and version."""

        def body(conn: Connection) -> list[tuple[str, int, str]]:
            rows = conn.execute(
                sa.select(templates.c.id, templates.c.version, templates.c.name).order_by(
                    templates.c.id, templates.c.version
                )
            )
            return [(r.id, r.version, r.name) for r in rows]

        return await self.store.run_read(body)

    def _template(
        self,
        conn: Connection,
        template_id: str,
        version: int,
        digest: str | None = None,
    ) -> CardTemplate:
        # Templates are cached by content digest: a design update replaces the cached copy.
        # ``digest``: already read with the card (saves a round trip).
        if digest is None:
            digest = q.template_digest(conn, template_id, version)
        if digest is None:
            raise TemplateNotFoundError(f"no template {template_id}@v{version} was published")
        cached = self._templates.get((template_id, version))
        if cached is not None and cached[0] == digest:
            return cached[1]
        found = q.template_content(conn, template_id, version)
        if found is None:  # pragma: no cover - deleted between the two reads
            raise TemplateNotFoundError(f"no template {template_id}@v{version} was published")
        content, digest, images = found
        template = codec.decode_template(content, images)
        self._templates[(template_id, version)] = (digest, template)
        return template

    async def migrate_cards(
        self,
        template_id: str,
        to_version: int,
        *,
        from_version: int | None = None,
        actor: str | None = None,
    ) -> int:
        """Move the active and completed cards of ``template_id`` (of every other version, or
        only ``from_version``) to ``to_version``, keeping their stamps (engine.migrate_card).
        Voided, expired and deleted cards stay where they are. Returns the number moved."""
        now = self._now()

        def body(conn: Connection) -> int:
            moved = 0
            target = self._template(conn, template_id, to_version)
            where = [
                cards.c.template_id == template_id,
                cards.c.template_version != to_version,
                cards.c.deleted_at.is_(None),
                cards.c.state.in_([CardState.ACTIVE.value, CardState.COMPLETED.value]),
            ]
            if from_version is not None:
                self._template(conn, template_id, from_version)
                where.append(cards.c.template_version == from_version)
            query = sa.select(cards.c.serial).where(*where).order_by(cards.c.serial)
            if self.store.is_postgres:
                query = query.with_for_update()
            serials = list((conn.scalars(query)).all())
            if not serials:
                return 0
            pending: list[tuple[q.StoredCard, Card, CardTemplate, list[Event]]] = []
            for batch in q.chunks(serials, 500):
                for stored in q.load_cards(conn, batch):
                    old = self._template(
                        conn, stored.card.template_id, stored.card.template_version
                    )
                    expired = engine.expire_if_due(old, stored.card, now=now)
                    if expired.events:
                        pending.append((stored, expired.card, old, list(expired.events)))
                        continue
                    outcome = engine.migrate_card(old, target, stored.card, now=now)
                    after = engine.expire_if_due(target, outcome.card, now=now)
                    pending.append((stored, after.card, target, [*outcome.events, *after.events]))
                    moved += 1
            rows = [_event_row(e, actor) for _, _, _, evs in pending for e in evs]
            q.insert_events(conn, rows)
            found = q.platforms(conn, serials)
            tag = q.next_change_tag(conn)
            for stored, card, _, _ in pending:
                q.update_card(conn, stored.card, card, stored.holder_id, change_tag=tag, now=now)
            q.insert_outbox(
                conn,
                [
                    _outbox_row(stored.card.serial, p, "migrated", True, tag, now)
                    for stored, _, _, _ in pending
                    for p in sorted(found.get(stored.card.serial, set()) & set(WALLETS))
                ],
            )
            return moved

        return await self.store.run_write(body)

    # -- card operations ---------------------------------------------------------------------

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
        key = _check_key(idempotency_key)
        request = {
            "template_id": template_id,
            "version": version,
            "holder": holder.model_dump(mode="json"),
            "serial": serial,
            "language": language,
        }
        digest = _request_digest("issue_card", None, request)
        for attempt in range(3):
            try:
                return await self._issue_once(
                    template_id, holder, version, serial, language, key, digest, actor
                )
            except sa.exc.IntegrityError:
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
                wanted = q.latest_version(conn, template_id)
                if wanted is None:
                    raise TemplateNotFoundError(f"no template {template_id!r} was published")
            template = self._template(conn, template_id, wanted)
            now = self._now()
            outcome = engine.issue_card(template, holder, now=now, serial=serial, language=language)
            if serial is not None and q.load_card(conn, serial) is not None:
                raise CardInputError(f"card {serial} already exists")
            holder_id = q.insert_holder(conn, holder, now)
            ids = q.insert_events(conn, [_event_row(e, actor) for e in outcome.events])
            tag = q.next_change_tag(conn)
            q.insert_card(conn, outcome.card, holder_id, change_tag=tag, now=now)
            change = Change(
                card=outcome.card,
                events=_entries(outcome.events, ids, template, actor, outcome.card.holder),
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
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Put a personal message on the card (back of the pass) and notify the holder in every
        wallet, budget allowing. Journal: ``message_sent``."""
        return await self._operate(
            "send_message",
            serial,
            {"text": text},
            lambda t, c, now: engine.send_message(t, c, text, now=now),
            idempotency_key=idempotency_key,
            actor=actor,
        )

    async def update_holder(
        self, serial: str, holder: Holder, *, actor: str | None = None
    ) -> Change:
        """Edit the customer's details (name, email, phone, birthday). The pass shows the name,
        so the wallets get a silent update. The engine has no event for it: none is written."""
        if not isinstance(holder, Holder):
            raise CardInputError(f"holder must be a Holder, got {type(holder).__name__}")

        def apply(template: CardTemplate, card: Card, now: datetime) -> Outcome:
            return Outcome(card.model_copy(update={"holder": holder}), (), notify=False)

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

        def apply(template: CardTemplate, card: Card, now: datetime) -> Outcome:
            evs: list[Event] = []
            if card.state is not CardState.VOIDED:
                voided = engine.void_card(template, card, now=now)
                card, evs = voided.card, list(voided.events)
            evs.append(engine.record(template, card, EventType.CARD_DELETED, now=now))
            anonymous = card.model_copy(update={"holder": Holder(), "message": None})
            return Outcome(anonymous, tuple(evs), notify=False)

        return await self._operate(
            "delete_card",
            serial,
            {},
            apply,
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
    ) -> Change:
        _check_serial(serial)
        key = _check_key(idempotency_key)
        digest = _request_digest(operation, serial, request)

        def body(conn: Connection) -> Change | PasskitStampsError:
            """The change, or the error to raise AFTER committing the card's expiry."""
            stored = q.load_card(conn, serial, for_update=True)
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
        stored: q.StoredCard,
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
        ids = q.insert_events(conn, [_event_row(e, actor) for e in evs])
        entries = _entries(evs, ids, template, actor, card.holder)
        if card == stored.card and deleted_at is None:
            return Change(card, entries, notified=False, change_tag=stored.change_tag)
        if stored.platforms is not None:
            saved = set(stored.platforms)
        else:
            saved = (q.platforms(conn, [card.serial])).get(card.serial, set())
        wallets = sorted(saved & set(WALLETS))
        notified = False
        if notify and wallets and self.notification_budget > 0:
            spent = q.notifications_since(conn, card.serial, now - BUDGET_WINDOW)
            if spent < self.notification_budget:
                q.spend_notification(conn, card.serial, now, reason)
                notified = True
        if card.holder != stored.card.holder:
            q.update_holder(conn, stored.holder_id, card.holder)
        tag = q.next_change_tag(conn)  # last lock taken: see next_change_tag
        q.update_card(
            conn,
            stored.card,
            card,
            stored.holder_id,
            change_tag=tag,
            now=now,
            deleted_at=deleted_at,
        )
        q.insert_outbox(
            conn, [_outbox_row(card.serial, p, reason, not notified, tag, now) for p in wallets]
        )
        return Change(card, entries, notified=notified, change_tag=tag)

    def _replay(
        self, conn: Connection, key: str, operation: str, serial: str | None, digest: str
    ) -> Change | None:
        row = q.idempotent_result(conn, key)
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
        entries = self._entries_by_id(conn, result["event_ids"])
        return Change(
            card=Card.model_validate(result["card"]),
            events=tuple(entries),
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
        q.save_idempotent_result(
            conn,
            key,
            operation=operation,
            request_digest=digest,
            serial=serial or change.card.serial,
            result=json.dumps(result),
            now=now,
        )

    # -- reading cards -----------------------------------------------------------------------

    async def get_card(self, serial: str) -> CardDetails:
        """The card details panel. Raises CardNotFoundError (unknown or deleted)."""
        _check_serial(serial)

        def body(conn: Connection) -> CardDetails:
            stored = q.load_card(conn, serial)
            if stored is None or stored.deleted_at is not None:
                raise CardNotFoundError(f"no card {serial}")
            return self._details(conn, stored)

        return await self.store.run_read(body)

    async def card_page(self, serial: str, *, token: str | None = None) -> CardDetails:
        """The card as its customer sees it (the web page). With ``token``, the card's
        authentication token must match (compared in constant time); a mismatch is reported as
        CardNotFoundError so a guess learns nothing."""
        details = await self.get_card(serial)
        if token is not None and not hmac.compare_digest(
            token.encode(), details.card.authentication_token.encode()
        ):
            raise CardNotFoundError(f"no card {serial}")
        return details

    def _details(self, conn: Connection, stored: q.StoredCard) -> CardDetails:
        card = stored.card
        # load_card read the template digest and platforms with the card: no more round trips.
        template = self._template(
            conn, card.template_id, card.template_version, stored.template_digest
        )
        if stored.platforms is not None:
            saved = set(stored.platforms)
        else:
            saved = q.platforms(conn, [card.serial]).get(card.serial, set())
        lang = card.language if card.language in template.texts else template.default_language
        p = progress(template, card)

        def title(step: Any) -> str | None:
            return localized(step.title, lang, template.default_language) if step else None

        return CardDetails(
            card=card,
            template=template,
            platforms=frozenset(Platform(x) for x in saved),
            progress=p,
            current_reward=title(p.current_reward),
            next_reward=title(p.next_reward),
            change_tag=stored.change_tag,
            updated_at=stored.updated_at,
        )

    async def list_cards(
        self,
        *,
        search: str | None = None,
        template_id: str | None = None,
        template_version: int | None = None,
        platform: Platform | str | None = None,
        state: CardState | str | None = None,
        min_stamps: int | None = None,
        max_stamps: int | None = None,
        has_vouchers_ready: bool | None = None,
        sort: str = "-created_at",
        offset: int = 0,
        limit: int = 50,
        count_limit: int | None = None,
    ) -> Page[CardSummary]:
        """The issued cards: search (card number, name, email or phone; a substring, any case),
        filters, sorted by ``sort`` (one of created_at, last_stamp_at, stamps, serial, name;
        ``-`` for descending), one page of ``limit`` (<= 500) from ``offset``, with the total.

        ``count_limit`` (e.g. 1000 for a search box): count at most that many cards past
        ``offset`` (``Page.total_exact`` False when more match, ``total`` then a lower bound).
        Counting every match of an unselective search is most of its time."""
        offset, limit = _check_page(offset, limit)
        if count_limit is not None and (
            not isinstance(count_limit, int) or isinstance(count_limit, bool) or count_limit < 1
        ):
            raise CardInputError(f"count_limit must be a whole number >= 1, got {count_limit!r}")
        filters: dict[str, Any] = {
            "search": search,
            "template_id": template_id,
            "template_version": template_version,
            "platform": platform,
            "state": state,
            "min_stamps": min_stamps,
            "max_stamps": max_stamps,
            "has_vouchers_ready": has_vouchers_ready,
        }
        where = self._card_filters(**filters)
        searching = bool(_search_text(search))
        order = _card_order(sort)
        count = sa.select(sa.func.count()).select_from(cards).where(*where)
        cap: int | None = None
        if count_limit is not None:
            # Count at most past the page: total stays exact for every page it reaches.
            cap = offset + max(count_limit, limit)
            capped = sa.select(cards.c.serial).where(*where).limit(cap + 1).subquery()
            count = sa.select(sa.func.count()).select_from(capped)
        # SQLite + FTS: with many matches, walking the created_at (or serial) index and checking
        # each card against the match list beats looking every match up and sorting them.
        can_walk = self._uses_search_index(search) and sort.removeprefix("-") in (
            "created_at",
            "serial",
        )

        def body(
            conn: Connection,
        ) -> tuple[int, list[Any], dict[str, set[str]], dict[str, int]]:
            if searching and conn.dialect.name == "postgresql":
                # Prepared statements switch to a generic plan after five runs; one plan cannot
                # fit both "ada" (10% of the cards) and a full email (one card): the generic
                # plan for the email scanned the whole table. Plan each search for its text.
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            if can_walk:
                total = int(conn.scalar(count) or 0)
                if not total:
                    return 0, [], {}, {}
                rows_ever = int(conn.scalar(_CARDS_ROWS_EVER) or 0)
                # Walked rows ~ rows_ever / total * (offset + limit); looked-up rows ~ total
                # (a count that hit its cap: at least that many, walk).
                dense = (cap is not None and total > cap) or total * total >= rows_ever * (
                    offset + limit
                )
                chosen = self._card_filters(**filters, dense_search=True) if dense else where
                rows = list(conn.execute(_summary_select(chosen, order, offset, limit)).mappings())
            else:
                rows = list(conn.execute(_summary_select(where, order, offset, limit)).mappings())
                if len(rows) < limit and (rows or not offset):
                    total = offset + len(rows)  # the last page: no count needed
                else:
                    total = int(conn.scalar(count) or 0)
            serials = [r["serial"] for r in rows]
            return total, rows, q.platforms(conn, serials), _vouchers_ready(conn, serials)

        total, rows, found, ready = await self.store.run_read(body)
        exact = cap is None or total <= cap
        total = total if exact or cap is None else cap
        items = tuple(
            CardSummary(
                serial=r["serial"],
                holder=codec.decode_holder(r),
                template_id=r["template_id"],
                template_version=r["template_version"],
                template_name=r["template_name"],
                stamps=r["stamps"],
                required=r["stamps_required"],
                state=CardState(r["state"]),
                platforms=frozenset(Platform(x) for x in found.get(r["serial"], set())),
                created_at=utc(r["created_at"]) or r["created_at"],
                last_stamp_at=utc(r["last_stamp_at"]),
                vouchers_ready=ready.get(r["serial"], 0),
            )
            for r in rows
        )
        return Page(items, total, offset, limit, total_exact=exact)

    def _card_filters(
        self,
        *,
        search: str | None,
        template_id: str | None,
        template_version: int | None = None,
        platform: Platform | str | None = None,
        state: CardState | str | None = None,
        min_stamps: int | None = None,
        max_stamps: int | None = None,
        has_vouchers_ready: bool | None = None,
        dense_search: bool = False,
    ) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = [cards.c.deleted_at.is_(None)]
        text = _search_text(search)
        if text and self._uses_search_index(text):
            # FTS5 trigram phrase = the exact substring, any case (quotes doubled inside).
            phrase = '"' + text.replace('"', '""') + '"'
            matching = sa.select(_FTS.c.rowid).where(
                sa.literal_column(SQLITE_SEARCH_TABLE).op("MATCH")(phrase)
            )
            # ``holder_id + 0`` hides the column from the planner: it then walks the sort
            # index and probes the match list instead of looking each match up.
            key = cards.c.holder_id + sa.literal_column("0") if dense_search else cards.c.holder_id
            where.append(key.in_(matching))
        elif text:
            where.append(cards.c.search_text.like(q.like_pattern(text), escape="\\"))
        if template_id is not None:
            where.append(cards.c.template_id == template_id)
        if template_version is not None:
            where.append(cards.c.template_version == template_version)
        if platform is not None:
            value = _enum(Platform, platform, "platform")
            where.append(
                sa.exists().where(
                    card_platforms.c.serial == cards.c.serial,
                    card_platforms.c.platform == value,
                )
            )
        if state is not None:
            where.append(cards.c.state == _enum(CardState, state, "state"))
        for bound, op in ((min_stamps, "ge"), (max_stamps, "le")):
            if bound is None:
                continue
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                raise CardInputError(f"stamp bounds must be whole numbers >= 0, got {bound!r}")
            where.append(cards.c.stamps >= bound if op == "ge" else cards.c.stamps <= bound)
        if has_vouchers_ready is not None:
            ready = sa.exists().where(
                vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None)
            )
            where.append(ready if has_vouchers_ready else ~ready)
        return where

    def _uses_search_index(self, search: str | None) -> bool:
        """Whether a search for this text runs on SQLite's FTS5 trigram index (3 characters
        or more: a trigram index cannot answer shorter texts, which scan instead)."""
        text = _search_text(search)
        return bool(text) and self.store.has_search_index and len(text or "") >= 3

    async def card_history(self, serial: str) -> list[JournalEntry]:
        """The card's events, oldest first (also for a deleted card: the journal is kept).
        Raises CardNotFoundError when no card ever had this serial."""
        _check_serial(serial)

        def body(conn: Connection) -> list[JournalEntry]:
            if q.load_card(conn, serial) is None:
                raise CardNotFoundError(f"no card {serial}")
            query = _journal_select().where(events.c.serial == serial).order_by(events.c.id)
            return [_entry(r) for r in conn.execute(query).mappings()]

        return await self.store.run_read(body)

    async def journal(
        self,
        *,
        types: Iterable[EventType | str] | EventType | str | None = None,
        template_id: str | None = None,
        serial: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[JournalEntry]:
        """Every event ("Card Events"), filtered by type(s), template, card and time range
        (``since <= at < until``), newest first by default, paginated with the total."""
        offset, limit = _check_page(offset, limit)
        where: list[sa.ColumnElement[bool]] = []
        if types is not None:
            wanted = [types] if isinstance(types, str) else list(types)
            where.append(events.c.type.in_([_enum(EventType, t, "event type") for t in wanted]))
        if template_id is not None:
            where.append(events.c.template_id == template_id)
        if serial is not None:
            where.append(events.c.serial == serial)
        for bound, name in ((since, "since"), (until, "until")):
            if bound is not None and not isinstance(bound, datetime):
                raise CardInputError(f"{name} must be a datetime, got {type(bound).__name__}")
        if since is not None:
            where.append(events.c.at >= _aware(since))
        if until is not None:
            where.append(events.c.at < _aware(until))
        order = events.c.id.desc() if newest_first else events.c.id.asc()
        query = _journal_select().where(*where).order_by(order).offset(offset).limit(limit)
        count = sa.select(sa.func.count()).select_from(events).where(*where)

        def body(conn: Connection) -> Page[JournalEntry]:
            total = int(conn.scalar(count) or 0)
            items = tuple(_entry(r) for r in conn.execute(query).mappings())
            return Page(items, total, offset, limit)

        return await self.store.run_read(body)

    def _entries_by_id(self, conn: Connection, ids: Sequence[int]) -> list[JournalEntry]:
        if not ids:
            return []
        query = _journal_select().where(events.c.id.in_(list(ids))).order_by(events.c.id)
        return [_entry(r) for r in (conn.execute(query)).mappings()]

    async def export_csv(
        self,
        *,
        template_id: str | None = None,
        state: CardState | str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[str]:
        """The customer data as CSV text, one chunk per batch of cards (keyset pagination by
        serial, so memory stays flat for any number of cards). Cells that a spreadsheet would
        run as a formula are prefixed with ``'``."""
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise CardInputError(f"batch_size must be 1 to 10000, got {batch_size!r}")
        where = self._card_filters(search=None, template_id=template_id, state=state)
        header = [
            "serial",
            "name",
            "email",
            "phone",
            "birthday",
            "template_id",
            "template_version",
            "state",
            "stamps",
            "required",
            "rounds_completed",
            "vouchers_ready",
            "platforms",
            "created_at",
            "last_stamp_at",
            "expires_at",
        ]
        yield _csv_rows([header])
        # One query per batch: platforms and ready vouchers as correlated subqueries (each is an
        # index lookup), instead of three queries per batch.
        on = [
            sa.exists()
            .where(card_platforms.c.serial == cards.c.serial, card_platforms.c.platform == p)
            .label(f"on_{p}")
            for p in q.PLATFORMS
        ]
        ready = (
            sa.select(sa.func.count())
            .where(vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None))
            .scalar_subquery()
            .label("vouchers_ready")
        )
        query = (
            sa.select(
                cards.c.serial,
                holders.c.name,
                holders.c.email,
                holders.c.phone,
                holders.c.birthday,
                cards.c.template_id,
                cards.c.template_version,
                cards.c.state,
                cards.c.stamps,
                templates.c.stamps_required,
                cards.c.rounds_completed,
                ready,
                *on,
                cards.c.created_at,
                cards.c.last_stamp_at,
                cards.c.expires_at,
            )
            .join(holders, holders.c.id == cards.c.holder_id)
            .join(
                templates,
                sa.and_(
                    templates.c.id == cards.c.template_id,
                    templates.c.version == cards.c.template_version,
                ),
            )
            .where(*where, cards.c.serial > sa.bindparam("last"))
            .order_by(cards.c.serial)
            .limit(batch_size)
        )

        def batch(conn: Connection, last: str) -> tuple[str, str | None]:
            """The CSV text of the next batch after ``last`` and its last serial (None: done).
            Formatting runs here too, off the event loop."""
            rows = list(conn.execute(query, {"last": last}))
            if not rows:
                return "", None
            text = _csv_rows(
                [
                    _csv_safe(r.serial),
                    _csv_safe(r.name),
                    _csv_safe(r.email),
                    r.phone or "",
                    r.birthday.isoformat() if r.birthday else "",
                    r.template_id,
                    r.template_version,
                    r.state,
                    r.stamps,
                    r.stamps_required,
                    r.rounds_completed,
                    r.vouchers_ready,
                    " ".join(sorted(p for p in q.PLATFORMS if getattr(r, f"on_{p}"))),
                    _iso(r.created_at),
                    _iso(r.last_stamp_at),
                    _iso(r.expires_at),
                ]
                for r in rows
            )
            return text, rows[-1].serial

        last: str | None = ""
        while last is not None:
            text, last = await self.store.run_read(functools.partial(batch, last=last))
            if text:
                yield text

    # -- for the web app (Apple web service, card page, Google) ------------------------------

    def _check_pass_type(self, pass_type_identifier: str) -> bool:
        if (
            not isinstance(pass_type_identifier, str)
            or not 1 <= len(pass_type_identifier) <= 255
            or "\x00" in pass_type_identifier  # PostgreSQL refuses NUL in text
        ):
            raise CardInputError("pass type identifier must be 1 to 255 characters, without NUL")
        wanted = self.pass_type_identifier
        return wanted is None or hmac.compare_digest(wanted, pass_type_identifier)

    async def card_for_pass(self, pass_type_identifier: str, serial: str) -> PassContent | None:
        """The card, its template and Last-Modified for the pass web service; None when there
        is no such pass. A deleted card is still served (voided, anonymous) so devices that
        hold it learn it was invalidated."""
        if not self._check_pass_type(pass_type_identifier) or not _valid_serial(serial):
            return None

        def body(conn: Connection) -> PassContent | None:
            stored = q.load_card(conn, serial)
            if stored is None:
                return None
            card = stored.card
            template = self._template(
                conn, card.template_id, card.template_version, stored.template_digest
            )
            return PassContent(card, template, stored.updated_at)

        return await self.store.run_read(body)

    async def register_device(
        self, device_id: str, push_token: str, pass_type_identifier: str, serial: str
    ) -> bool:
        """Register a device for a pass's updates; True when new (HTTP 201), False when it was
        already registered (200; a changed push token is stored). The first registration
        marks the card as saved in Apple Wallet (``pass_added``). Raises CardNotFoundError."""
        _check_text(device_id, "device library identifier", 128)
        _check_text(push_token, "push token", 256)
        if not self._check_pass_type(pass_type_identifier) or not _valid_serial(serial):
            raise CardNotFoundError(f"no pass {pass_type_identifier}/{serial}")
        now = self._now()

        def body(conn: Connection) -> bool:
            stored = q.load_card(conn, serial, for_update=True)
            if stored is None or stored.deleted_at is not None:
                raise CardNotFoundError(f"no pass {pass_type_identifier}/{serial}")
            self._upsert_device(conn, device_id, push_token, now)
            exists = conn.scalar(
                sa.select(sa.literal(1)).where(
                    registrations.c.device_library_id == device_id,
                    registrations.c.pass_type_id == pass_type_identifier,
                    registrations.c.serial == serial,
                )
            )
            if exists:
                return False
            conn.execute(
                registrations.insert().values(
                    device_library_id=device_id,
                    pass_type_id=pass_type_identifier,
                    serial=serial,
                    created_at=now,
                )
            )
            self._set_platform(conn, stored, Platform.APPLE, True, now)
            return True

        return await self.store.run_write(body)

    def _upsert_device(
        self, conn: Connection, device_id: str, push_token: str, now: datetime
    ) -> None:
        current = conn.scalar(
            sa.select(devices.c.push_token).where(devices.c.device_library_id == device_id)
        )
        if current is None:
            conn.execute(
                devices.insert().values(
                    device_library_id=device_id,
                    push_token=push_token,
                    created_at=now,
                    updated_at=now,
                )
            )
        elif current != push_token:
            conn.execute(
                devices.update()
                .where(devices.c.device_library_id == device_id)
                .values(push_token=push_token, updated_at=now)
            )

    async def unregister_device(
        self, device_id: str, pass_type_identifier: str, serial: str
    ) -> bool:
        """Remove a registration; False when there was none. A device with no registrations
        left is forgotten; a card with none left is no longer in Apple Wallet (``pass_removed``).
        Works for deleted cards too (devices clean up)."""
        _check_text(device_id, "device library identifier", 128)
        if not self._check_pass_type(pass_type_identifier) or not _valid_serial(serial):
            return False
        now = self._now()

        def body(conn: Connection) -> bool:
            stored = q.load_card(conn, serial, for_update=True)
            result = conn.execute(
                registrations.delete().where(
                    registrations.c.device_library_id == device_id,
                    registrations.c.pass_type_id == pass_type_identifier,
                    registrations.c.serial == serial,
                )
            )
            if not result.rowcount:
                return False
            left = conn.scalar(
                sa.select(sa.func.count())
                .select_from(registrations)
                .where(registrations.c.device_library_id == device_id)
            )
            if not left:
                conn.execute(devices.delete().where(devices.c.device_library_id == device_id))
            others = conn.scalar(
                sa.select(sa.func.count())
                .select_from(registrations)
                .where(registrations.c.serial == serial)
            )
            if not others and stored is not None:
                self._set_platform(conn, stored, Platform.APPLE, False, now)
            return True

        return await self.store.run_write(body)

    async def push_tokens(self, serial: str) -> list[str]:
        """The push tokens of every device registered for the card (for the push worker)."""

        def body(conn: Connection) -> list[str]:
            rows = conn.scalars(
                sa.select(devices.c.push_token)
                .join(
                    registrations,
                    registrations.c.device_library_id == devices.c.device_library_id,
                )
                .where(registrations.c.serial == serial)
                .distinct()
            )
            return sorted(rows)

        return await self.store.run_read(body)

    async def serials_updated_since(
        self, device_id: str, pass_type_identifier: str, tag: str | None
    ) -> tuple[list[str], str]:
        """The serials registered to the device whose pass changed after ``tag`` (all of them
        when ``tag`` is None or not one of ours), and the tag to hand back as ``lastUpdated``.
        An empty list means "no updates" (HTTP 204)."""
        _check_text(device_id, "device library identifier", 128)
        since = parse_update_tag(tag)
        if not self._check_pass_type(pass_type_identifier):
            return [], tag or "0"
        query = (
            sa.select(cards.c.serial, cards.c.change_tag)
            .join(registrations, registrations.c.serial == cards.c.serial)
            .where(
                registrations.c.device_library_id == device_id,
                registrations.c.pass_type_id == pass_type_identifier,
            )
            .order_by(cards.c.serial)
        )
        if since is not None:
            query = query.where(cards.c.change_tag > since)

        def body(conn: Connection) -> list[tuple[str, int]]:
            return [(r.serial, r.change_tag) for r in conn.execute(query)]

        return updated_serials_answer(await self.store.run_read(body), tag)

    async def record_platform(self, serial: str, platform: Platform | str, added: bool) -> bool:
        """Note that the card was saved to (or removed from) a wallet or opened on the web;
        journal ``pass_added`` / ``pass_removed``. Returns whether anything changed."""
        value = Platform(_enum(Platform, platform, "platform"))
        _check_serial(serial)
        now = self._now()

        def body(conn: Connection) -> bool:
            stored = q.load_card(conn, serial, for_update=True)
            if stored is None or (stored.deleted_at is not None and added):
                raise CardNotFoundError(f"no card {serial}")
            return self._set_platform(conn, stored, value, bool(added), now)

        return await self.store.run_write(body)

    def _set_platform(
        self,
        conn: Connection,
        stored: q.StoredCard,
        platform: Platform,
        added: bool,
        now: datetime,
    ) -> bool:
        if not q.set_platform(conn, stored.card.serial, platform.value, added, now):
            return False
        card = stored.card
        template = self._template(
            conn, card.template_id, card.template_version, stored.template_digest
        )
        kind = EventType.PASS_ADDED if added else EventType.PASS_REMOVED
        event = engine.record(template, card, kind, now=now, platform=platform.value)
        q.insert_events(conn, [_event_row(event, None)])
        return True

    async def save_google_object(
        self,
        serial: str,
        object_id: str,
        class_id: str,
        state: str,
        *,
        synced_at: datetime | None = None,
    ) -> None:
        """Remember the card's Google Wallet object (id, class, state, last sync)."""
        _check_serial(serial)
        for value, what in ((object_id, "object id"), (class_id, "class id"), (state, "state")):
            _check_text(value, what, 255)

        def body(conn: Connection) -> None:
            stored = q.load_card(conn, serial)
            if stored is None:
                raise CardNotFoundError(f"no card {serial}")
            values = {
                "object_id": object_id,
                "class_id": class_id,
                "state": state,
                "last_synced": _aware(synced_at) if synced_at else None,
            }
            updated = conn.execute(
                google_objects.update().where(google_objects.c.serial == serial).values(**values)
            )
            if not updated.rowcount:
                conn.execute(google_objects.insert().values(serial=serial, **values))

        return await self.store.run_write(body)

    async def google_object(self, serial: str) -> GoogleObject | None:
        def body(conn: Connection) -> Any:
            query = sa.select(google_objects).where(google_objects.c.serial == serial)
            return conn.execute(query).first()

        row = await self.store.run_read(body)
        if row is None:
            return None
        return GoogleObject(
            row.serial, row.object_id, row.class_id, row.state, utc(row.last_synced)
        )

    async def pending_updates(
        self, *, platform: Platform | str | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """The oldest pending pass updates (for the push worker)."""
        _, limit = _check_page(0, limit)
        query = sa.select(outbox).order_by(outbox.c.id).limit(limit)
        if platform is not None:
            query = query.where(outbox.c.platform == _enum(Platform, platform, "platform"))

        def body(conn: Connection) -> list[Any]:
            return list(conn.execute(query).mappings())

        rows = await self.store.run_read(body)
        return [
            OutboxEntry(
                id=r["id"],
                serial=r["serial"],
                platform=Platform(r["platform"]),
                reason=r["reason"],
                silent=bool(r["silent"]),
                change_tag=r["change_tag"],
                created_at=utc(r["created_at"]) or r["created_at"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    async def complete_updates(self, ids: Iterable[int]) -> int:
        """Remove delivered updates from the outbox; how many were removed."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0

        def body(conn: Connection) -> int:
            result = conn.execute(outbox.delete().where(outbox.c.id.in_(wanted)))
            return int(result.rowcount or 0)

        return await self.store.run_write(body)


# -- helpers --------------------------------------------------------------------------------------


def parse_update_tag(tag: str | None) -> int | None:
    """The change tag a device sent as ``passesUpdatedSince``; None when absent or not ours
    (then every registered pass is listed, so a device never misses an update)."""
    if isinstance(tag, str) and tag.isascii() and tag.isdigit() and len(tag) <= 18:
        return int(tag)
    return None


def updated_serials_answer(
    rows: Sequence[tuple[str, int]], tag: str | None
) -> tuple[list[str], str]:
    """Apple's answer from the (serial, change tag) rows changed since ``tag``: the serials and
    the tag to hand back as ``lastUpdated`` (an opaque string that only moves forward)."""
    if not rows:
        return [], tag if parse_update_tag(tag) is not None and tag is not None else "0"
    return [serial for serial, _ in rows], str(max(change_tag for _, change_tag in rows))


def _event_row(e: Event, actor: str | None) -> dict[str, Any]:
    return {
        "type": e.type.value,
        "at": e.at,
        "serial": e.serial,
        "template_id": e.template_id,
        "template_version": e.template_version,
        "code": e.code,
        "stamps": e.stamps,
        "required": e.required,
        "reward": e.reward,
        "voucher_code": e.voucher_code,
        "data": dict(e.data),
        "actor": actor,
    }


def _entries(
    evs: Sequence[Event],
    ids: Sequence[int],
    template: CardTemplate,
    actor: str | None,
    holder: Holder,
) -> tuple[JournalEntry, ...]:
    return tuple(
        JournalEntry(
            id=i,
            type=e.type,
            at=e.at,
            serial=e.serial,
            template_id=e.template_id,
            template_version=e.template_version,
            stamps=e.stamps,
            required=e.required,
            code=e.code,
            reward=e.reward,
            voucher_code=e.voucher_code,
            data=dict(e.data),
            actor=actor,
            template_name=template.name,
            holder_name=holder.name,
            holder_email=holder.email,
        )
        for e, i in zip(evs, ids, strict=True)
    )


def _journal_select() -> sa.Select[Any]:
    return (
        sa.select(
            events,
            templates.c.name.label("template_name"),
            holders.c.name.label("holder_name"),
            holders.c.email.label("holder_email"),
        )
        .outerjoin(
            templates,
            sa.and_(
                templates.c.id == events.c.template_id,
                templates.c.version == events.c.template_version,
            ),
        )
        .outerjoin(cards, cards.c.serial == events.c.serial)
        .outerjoin(holders, holders.c.id == cards.c.holder_id)
    )


def _entry(r: Any) -> JournalEntry:
    return JournalEntry(
        id=r["id"],
        type=EventType(r["type"]),
        at=utc(r["at"]) or r["at"],
        serial=r["serial"],
        template_id=r["template_id"],
        template_version=r["template_version"],
        stamps=r["stamps"],
        required=r["required"],
        code=r["code"],
        reward=r["reward"],
        voucher_code=r["voucher_code"],
        data=dict(r["data"] or {}),
        actor=r["actor"],
        template_name=r["template_name"],
        holder_name=r["holder_name"],
        holder_email=r["holder_email"],
    )


def _outbox_row(
    serial: str, platform: str, reason: str, silent: bool, tag: int, now: datetime
) -> dict[str, Any]:
    return {
        "serial": serial,
        "platform": platform,
        "reason": reason[:32],
        "silent": silent,
        "change_tag": tag,
        "created_at": now,
        "attempts": 0,
    }


#: SQLite's FTS5 search table (see store.schema); its rowid is the card's holder_id.
_FTS = sa.table(SQLITE_SEARCH_TABLE, sa.column("rowid", sa.Integer))
#: SQLite: the largest rowid of cards, about how many cards were ever stored (an index lookup).
_CARDS_ROWS_EVER: sa.Select[Any] = sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(
    cards
)


def _search_text(search: object) -> str | None:
    """The search text, trimmed and lower-cased (None or "" for no search)."""
    if search is None:
        return None
    # NUL: PostgreSQL cannot take it in text and SQLite's FTS5 query parser chokes on it.
    if not isinstance(search, str) or len(search) > 200 or "\x00" in search:
        raise CardInputError("search must be a text of at most 200 characters, without NUL")
    return search.strip().lower()


def _summary_select(
    where: Sequence[sa.ColumnElement[bool]],
    order: Sequence[sa.ColumnElement[Any]],
    offset: int,
    limit: int,
) -> sa.Select[Any]:
    """One page of the issued-cards list. Platforms and ready vouchers are read afterwards for
    the page's serials: as subqueries here PostgreSQL would run them for every row an OFFSET
    skips too."""
    return (
        sa.select(
            cards.c.serial,
            cards.c.template_id,
            cards.c.template_version,
            cards.c.stamps,
            cards.c.state,
            cards.c.created_at,
            cards.c.last_stamp_at,
            holders.c.name,
            holders.c.email,
            holders.c.phone,
            holders.c.birthday,
            templates.c.name.label("template_name"),
            templates.c.stamps_required,
        )
        .join(holders, holders.c.id == cards.c.holder_id)
        .join(
            templates,
            sa.and_(
                templates.c.id == cards.c.template_id,
                templates.c.version == cards.c.template_version,
            ),
        )
        .where(*where)
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )


def _vouchers_ready(conn: Connection, serials: Sequence[str]) -> dict[str, int]:
    if not serials:
        return {}
    query = (
        sa.select(vouchers.c.serial, sa.func.count())
        .where(vouchers.c.serial.in_(serials), vouchers.c.redeemed_at.is_(None))
        .group_by(vouchers.c.serial)
    )
    return {serial: int(n) for serial, n in conn.execute(query)}


def _card_order(sort: str) -> list[sa.ColumnElement[Any]]:
    if not isinstance(sort, str):
        raise CardInputError(f"sort must be a text, got {type(sort).__name__}")
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    columns: dict[str, sa.ColumnElement[Any]] = {
        "created_at": cards.c.created_at,
        "last_stamp_at": cards.c.last_stamp_at,
        "stamps": cards.c.stamps,
        "serial": cards.c.serial,
        "name": holders.c.name,
    }
    if key not in columns:
        raise CardInputError(f"cannot sort by {sort!r}: use one of {', '.join(SORT_KEYS)}")
    column = columns[key]
    # NULLS LAST only where NULLs exist: on a NOT NULL column it would stop PostgreSQL from
    # walking the index backwards (DESC NULLS LAST is not the index's order), forcing a sort.
    nullable = key in ("last_stamp_at", "name")
    if descending:
        primary = column.desc().nulls_last() if nullable else column.desc()
        tie = cards.c.serial.desc()
    else:
        primary = column.asc().nulls_last() if nullable else column.asc()
        tie = cards.c.serial.asc()
    return [primary] if key == "serial" else [primary, tie]


def _check_page(offset: object, limit: object) -> tuple[int, int]:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise CardInputError(f"offset must be a whole number >= 0, got {offset!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise CardInputError(f"limit must be 1 to {MAX_PAGE}, got {limit!r}")
    return offset, limit


def _enum(kind: Any, value: object, what: str) -> str:
    try:
        return str(kind(value).value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise CardInputError(f"unknown {what} {value!r}: use one of {allowed}") from None


#: What a card serial can be (the Card model's rule): anything else names no card. Checked before
#: a query because PostgreSQL refuses some characters (NUL) with an untyped database error.
_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _valid_serial(serial: object) -> bool:
    return isinstance(serial, str) and _SERIAL.fullmatch(serial) is not None


def _check_serial(serial: object) -> None:
    if not isinstance(serial, str):
        raise CardInputError(f"serial must be a text, got {type(serial).__name__}")
    if not _valid_serial(serial):
        raise CardNotFoundError(f"no card {serial!r:.80}")


def _check_text(value: object, what: str, high: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= high or not value.isprintable():
        raise CardInputError(f"{what} must be 1 to {high} printable characters")


def _check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise CardInputError(f"idempotency key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def _request_digest(operation: str, serial: str | None, request: dict[str, Any]) -> str:
    body = json.dumps([operation, serial, request], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str:
    found = utc(value)
    return found.isoformat() if found else ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv_rows(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(rows)
    return buf.getvalue()
