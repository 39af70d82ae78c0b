"""What the service returns: frozen dataclasses only (no tuples, no pydantic models), so a
result is immutable, compares by value and is documented field by field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeVar

from ..engine import Event, Platform
from ..model import Card, CardState, CardTemplate, Holder, Progress, Voucher

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class JournalEntry(Event):
    """One row of the journal ("Card Events"): the engine's :class:`Event` as stored, with its
    sequence id, who did it, the template name and the holder (None once the card is deleted)."""

    id: int
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
class TemplateSummary:
    """One published template version."""

    id: str
    version: int
    name: str


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
    #: The position after this page's last item when more follow: pass it back as ``cursor``
    #: for the next page (a keyset page: as fast at any depth; ``total`` is then -1, not
    #: counted). None on the last page.
    next_cursor: str | None = None

    @property
    def has_more(self) -> bool:
        if self.next_cursor is not None:
            return True
        if self.total < 0:  # a keyset page without a next cursor is the last
            return False
        # A capped total was counted past the page (see list_cards), so more exist.
        return self.offset + len(self.items) < self.total or not self.total_exact


@dataclass(frozen=True)
class PassContent:
    """What the Apple web service needs to answer for a pass."""

    card: Card
    template: CardTemplate
    last_modified: datetime
    #: Whether to build the pass with ``notify=notified`` (changeMessage) for the asking
    #: device: the card's last change was notified, or a notified change came after the
    #: version the device holds (``card_for_pass(held_since=...)``). A silent
    #: change's pass carries no changeMessage.
    notified: bool = True


@dataclass(frozen=True)
class PassState:
    """The little the 304 path needs: the token to check and when the pass last changed."""

    authentication_token: str
    last_modified: datetime


@dataclass(frozen=True)
class UpdatedSerials:
    """Apple's "which of my passes changed?" answer: the serials (empty: HTTP 204) and the tag
    to hand back as ``lastUpdated``."""

    serials: list[str] = field(default_factory=list)
    last_updated: str = "0"


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
