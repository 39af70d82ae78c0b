"""The API's request and response bodies and query strings: pydantic models, the one source of
both the handlers' parsing/serialising and the OpenAPI document (:mod:`.openapi`)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Literal, get_args, get_origin

import typing_extensions
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..engine import MAX_MESSAGE_LENGTH, EventType, Platform
from ..model import SERIAL_PATTERN, CardState, Holder, Voucher, VoucherKind

TEMPLATE_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SERIAL = rf"^{SERIAL_PATTERN}$"
LANGUAGE = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}$"
#: A code a till attaches to a stamp (a receipt number): printable, bounded.
CODE = r"^[^\x00-\x1f\x7f]{1,200}$"

SortKey = Literal[
    "created_at",
    "-created_at",
    "last_stamp_at",
    "-last_stamp_at",
    "stamps",
    "-stamps",
    "serial",
    "-serial",
    "name",
    "-name",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- requests ------------------------------------------------------------------------------------


class IssueRequest(_Body):
    """Issue a card of the template's latest version (or ``version``)."""

    template_id: str = Field(pattern=TEMPLATE_ID)
    version: int | None = Field(default=None, ge=1, le=1_000_000)
    holder: Holder = Holder()
    serial: str | None = Field(default=None, pattern=SERIAL)
    language: str | None = Field(default=None, pattern=LANGUAGE, max_length=35)


class StampRequest(_Body):
    """Add stamps in one visit; ``code`` e.g. the receipt number."""

    count: int = Field(default=1, ge=1, le=100)
    code: str | None = Field(default=None, pattern=CODE)


class SetStampsRequest(_Body):
    """Set the stamp count (an adjustment; the holder is not notified)."""

    stamps: int = Field(ge=0, le=10_000)
    code: str | None = Field(default=None, pattern=CODE)


class RedeemRequest(_Body):
    """Redeem the voucher with this scanned code (on ``serial`` when given)."""

    code: str = Field(min_length=1, max_length=64)
    serial: str | None = Field(default=None, pattern=SERIAL)


class CouponRequest(_Body):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)


class MessageRequest(_Body):
    text: str = Field(min_length=1, max_length=1000)


class BroadcastRequest(_Body):
    """One message to every reachable card matching the filters (those of the cards list)."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH)
    search: str | None = Field(default=None, max_length=200)
    template: str | None = Field(default=None, pattern=TEMPLATE_ID)
    version: int | None = Field(default=None, ge=1, le=1_000_000)
    platform: Platform | None = None
    state: CardState | None = None
    min_stamps: int | None = Field(default=None, ge=0, le=1_000_000)
    max_stamps: int | None = Field(default=None, ge=0, le=1_000_000)
    vouchers_ready: bool | None = None


# -- query strings -------------------------------------------------------------------------------


class BarcodeQuery(_Body):
    message: str = Field(min_length=1, max_length=200, description="the scanned barcode")


class CardsQuery(_Body):
    search: str | None = Field(
        default=None, max_length=200, description="card number, name, e-mail or phone"
    )
    template: str | None = Field(default=None, pattern=TEMPLATE_ID)
    version: int | None = Field(default=None, ge=1, le=1_000_000)
    platform: Platform | None = None
    state: CardState | None = None
    min_stamps: int | None = Field(default=None, ge=0, le=1_000_000)
    max_stamps: int | None = Field(default=None, ge=0, le=1_000_000)
    vouchers_ready: bool | None = None
    sort: SortKey = "-created_at"
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(
        default=None,
        max_length=1000,
        description="a page's next_cursor: the next page by keyset (offset 0, total -1)",
    )


class JournalQuery(_Body):
    type: list[EventType] | None = Field(default=None, max_length=20)
    template: str | None = Field(default=None, pattern=TEMPLATE_ID)
    serial: str | None = Field(default=None, pattern=SERIAL)
    since: datetime | None = Field(default=None, description="events at or after")
    until: datetime | None = Field(default=None, description="events before")
    order: Literal["newest", "oldest"] = "newest"
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    limit: int = Field(default=50, ge=1, le=500)


class ExportQuery(_Body):
    template: str | None = Field(default=None, pattern=TEMPLATE_ID)
    state: CardState | None = None
    bom: bool = Field(default=False, description="start with a UTF-8 BOM (for Excel)")


# -- responses -----------------------------------------------------------------------------------


class CardOut(_Body):
    """A card as an operation left it."""

    serial: str
    template_id: str
    template_version: int
    state: CardState
    stamps: int
    rounds_completed: int
    holder: Holder
    vouchers: list[Voucher]
    message: str | None
    language: str | None
    created_at: datetime
    last_stamp_at: datetime | None
    expires_at: datetime | None
    #: The customer's card page and its .pkpass (None when the API has no web config).
    card_page_url: str | None
    pass_url: str | None


class CardDetailsOut(CardOut):
    """A card looked up: with its template's name, progress and where it is saved."""

    template_name: str
    required: int
    remaining: int
    current_reward: str | None
    next_reward: str | None
    platforms: list[Platform]


class EventOut(_Body):
    """One journal entry."""

    id: int
    type: EventType
    at: datetime
    serial: str
    template_id: str
    template_version: int
    template_name: str | None
    stamps: int
    required: int
    code: str | None
    reward: str | None
    voucher_code: str | None
    data: dict[str, Any]
    actor: str | None
    holder_name: str | None
    holder_email: str | None


class ChangeOut(_Body):
    """What an operation did: the card after it and the journal entries it wrote."""

    card: CardOut
    events: list[EventOut]
    notified: bool
    #: True when this answers a repeated Idempotency-Key (nothing was done again).
    replayed: bool


class CardSummaryOut(_Body):
    serial: str
    holder: Holder
    template_id: str
    template_version: int
    template_name: str
    stamps: int
    required: int
    state: CardState
    platforms: list[Platform]
    created_at: datetime
    last_stamp_at: datetime | None
    vouchers_ready: int


class CardPageOut(_Body):
    items: list[CardSummaryOut]
    #: The number matching (with ``total_exact`` false, a lower bound).
    total: int
    total_exact: bool
    offset: int
    limit: int
    has_more: bool
    #: Pass as ``cursor`` for the next page (keyset: as fast at any depth); None on the last.
    next_cursor: str | None


class JournalPageOut(_Body):
    items: list[EventOut]
    total: int
    offset: int
    limit: int
    has_more: bool


class HistoryOut(_Body):
    items: list[EventOut]


class BroadcastReachOut(_Body):
    """What a broadcast would reach now (the dry run)."""

    cards: int
    devices: int
    google_objects: int
    notified: int
    silent: int
    no_wallet: int
    warning: str


class PlatformReportOut(_Body):
    platform: str
    targeted: int
    notified: int
    silent: int
    delivered: int
    pending: int
    failed: int


class CampaignOut(_Body):
    """A broadcast as sent: its figures, per platform too."""

    id: int
    message: str
    state: str
    cards: int
    notified: int
    silent: int
    created_at: datetime
    finished_at: datetime | None
    actor: str | None
    platforms: list[PlatformReportOut]


class InvalidField(_Body):
    #: Where: ``body.holder.email``, ``query.limit``, ``header.Idempotency-Key``.
    field: str
    rule: str


class Problem(_Body):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Problem")

    type: str
    title: str
    status: int
    detail: str
    errors: list[InvalidField] | None = None


# -- answers as JSON -----------------------------------------------------------------------------


def _wire_annotation(annotation: Any) -> Any:
    """An answer field's type with the API's own models replaced by their mirrors."""
    if isinstance(annotation, type) and issubclass(annotation, _Body):
        return _mirror(annotation)
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, _Body):
            return list[_mirror(item)]  # type: ignore[misc]
    return annotation


@cache
def _mirror(model: type[BaseModel]) -> Any:
    """A TypedDict with ``model``'s fields (derived, so it cannot drift from the model)."""
    fields = {name: _wire_annotation(f.annotation) for name, f in model.model_fields.items()}
    make: Any = typing_extensions.TypedDict
    return make(f"{model.__name__}Wire", fields)


@cache
def wire(model: type[BaseModel]) -> TypeAdapter[Any]:
    """Serialises a plain dict shaped as ``model`` to JSON by ``model``'s schema, the same bytes
    as ``model.model_dump_json()`` without building the model first (the answer of every stamp:
    building three models cost more than serialising them). Values are not validated: they come
    typed from the service; tests/api checks the answers against the document."""
    return TypeAdapter(_mirror(model))


__all__ = [
    "CardDetailsOut",
    "CardOut",
    "CardPageOut",
    "CardsQuery",
    "ChangeOut",
    "CouponRequest",
    "EventOut",
    "ExportQuery",
    "HistoryOut",
    "IssueRequest",
    "JournalPageOut",
    "JournalQuery",
    "MessageRequest",
    "Problem",
    "RedeemRequest",
    "SetStampsRequest",
    "StampRequest",
    "VoucherKind",
    "wire",
]
