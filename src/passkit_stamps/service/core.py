"""What every part of the service shares: the store, the clock, the template cache, the journal
entries of engine events, and the one way a card's platforms change."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from .. import engine
from ..engine import Event, EventType, Platform
from ..errors import CardInputError, TemplateNotFoundError
from ..model import CardTemplate, Holder
from ..store import cards as store_cards
from ..store import codec
from ..store import journal as store_journal
from ..store import templates as store_templates
from ..store.hotreads import HotReads
from ..store.schema import utc
from ..store.store import Store
from .checks import utcnow
from .results import JournalEntry

#: Notifications per card per 24 hours (Google's limit; Apple gets the same budget).
DEFAULT_NOTIFICATION_BUDGET = 3
BUDGET_WINDOW = timedelta(hours=24)
WALLETS = (Platform.APPLE.value, Platform.GOOGLE.value)


class ServiceCore:
    """The state every concern of :class:`StampService` works on."""

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
        self._hot_reads: HotReads | None = None

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @property
    def hot_reads(self) -> HotReads:
        """The 304 and serials reads without a transaction (see :mod:`..store.hotreads`)."""
        if self._hot_reads is None:
            self._hot_reads = HotReads(self.store)
        return self._hot_reads

    @hot_reads.setter
    def hot_reads(self, reads: HotReads) -> None:
        self._hot_reads = reads

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
            digest = store_templates.template_digest(conn, template_id, version)
        if digest is None:
            raise TemplateNotFoundError(f"no template {template_id}@v{version} was published")
        cached = self._templates.get((template_id, version))
        if cached is not None and cached[0] == digest:
            return cached[1]
        found = store_templates.template_content(conn, template_id, version)
        if found is None:  # pragma: no cover - deleted between the two reads
            raise TemplateNotFoundError(f"no template {template_id}@v{version} was published")
        content, digest, images = found
        template = codec.decode_template(content, images)
        self._templates[(template_id, version)] = (digest, template)
        return template

    def _set_platform(
        self,
        conn: Connection,
        stored: store_cards.StoredCard,
        platform: Platform,
        added: bool,
        now: datetime,
    ) -> bool:
        """Add or remove a platform of the card and journal ``pass_added``/``pass_removed``."""
        if not store_cards.set_platform(conn, stored.card.serial, platform.value, added, now):
            return False
        card = stored.card
        template = self._template(
            conn, card.template_id, card.template_version, stored.template_digest
        )
        kind = EventType.PASS_ADDED if added else EventType.PASS_REMOVED
        event = engine.record(template, card, kind, now=now, platform=platform.value)
        store_journal.insert_events(conn, [store_journal.event_row(event, None)])
        return True

    def _check_pass_type(self, pass_type_identifier: str) -> bool:
        if (
            not isinstance(pass_type_identifier, str)
            or not 1 <= len(pass_type_identifier) <= 255
            or "\x00" in pass_type_identifier  # PostgreSQL refuses NUL in text
        ):
            raise CardInputError("pass type identifier must be 1 to 255 characters, without NUL")
        wanted = self.pass_type_identifier
        return wanted is None or hmac.compare_digest(wanted, pass_type_identifier)


def entries(
    evs: Sequence[Event],
    ids: Sequence[int],
    template: CardTemplate,
    actor: str | None,
    holder: Holder,
) -> tuple[JournalEntry, ...]:
    """The journal entries of events just written (ids in order)."""
    return tuple(
        JournalEntry(
            **_event_fields(e),
            id=i,
            actor=actor,
            template_name=template.name,
            holder_name=holder.name,
            holder_email=holder.email,
        )
        for e, i in zip(evs, ids, strict=True)
    )


def _event_fields(e: Event) -> dict[str, Any]:
    fields = {f.name: getattr(e, f.name) for f in dataclasses.fields(Event)}
    fields["data"] = dict(e.data)
    return fields


def entry(r: Mapping[Any, Any]) -> JournalEntry:
    """A journal entry from a stored row (see :mod:`..store.journal`)."""
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
