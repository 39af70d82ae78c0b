"""The stamp rules: (template, card, now) in, a new card and typed events out.

Pure: no I/O and no clock reads. Every operation takes ``now`` and returns an :class:`Outcome`
(the new :class:`~passkit_stamps.model.Card`, the journal :class:`Event` values it produced, and
whether the holder should be notified). The service persists the outcome in one transaction; a
refused operation raises a typed error from :mod:`passkit_stamps.errors` and changes nothing.

Rules worth knowing (see ``docs/engine.md`` for the full account):

* A round ends at the template's last reward step. The card then *sits full* (e.g. 8/8, the
  reward ready) until the next stamp, which starts the next round. ``after_last_reward`` decides
  what happens to stamps beyond the last step within one add: ``carry_over`` keeps them in the
  next round, ``new_round`` drops them, ``complete`` drops them and completes the card.
* Adjustments (:func:`set_stamps`, :func:`migrate_card`) never issue vouchers.
* Times are normalised to aware UTC; a naive datetime is taken to be UTC.

One module of about 750 lines on purpose: the whole rule set (rounds, rewards, expiry, limits,
vouchers, deletion) reads top to bottom in one place, and its operations share private checks.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from .errors import (
    CardInactiveError,
    CardInputError,
    InvalidStampCountError,
    StampLimitError,
    VoucherError,
)
from .model import (
    AfterLastReward,
    Card,
    CardState,
    CardTemplate,
    ExpiryKind,
    Holder,
    RewardStep,
    Voucher,
    VoucherKind,
    localized,
)

__all__ = [
    "CODE_ALPHABET",
    "MAX_STAMPS_PER_ADD",
    "SERIAL_LENGTH",
    "TOKEN_BYTES",
    "VOUCHER_CODE_LENGTH",
    "Event",
    "EventType",
    "Outcome",
    "Platform",
    "add_stamps",
    "card_at",
    "compute_expires_at",
    "expire_if_due",
    "is_due_to_expire",
    "issue_card",
    "issue_coupon",
    "migrate_card",
    "new_serial",
    "new_token",
    "new_voucher_code",
    "normalize_code",
    "record",
    "redeem_voucher",
    "send_message",
    "set_stamps",
    "state_at",
    "void_card",
]

# -- identifiers ----------------------------------------------------------------------------------

#: Crockford's base32 alphabet: digits and upper-case letters without I, L, O and U, so a code
#: read aloud or typed from a screen cannot be confused (0/O, 1/I/L) or spell common words.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 16 characters x 5 bits = 80 bits. With a million cards the chance that any two collide is
#: about n^2 / 2^81 = 4e-13, and a guess hits some card with probability 1e6 / 2^80 = 8e-19.
SERIAL_LENGTH = 16
#: 10 characters x 5 bits = 50 bits. A voucher is redeemed on its own card, so a guess must match
#: one of that card's few codes: 2^-50 per try. Codes are unique per card (checked here); across
#: a million vouchers two would collide with probability about n^2 / 2^51 = 4e-4, so a store that
#: indexes codes globally must use a unique constraint and retry the operation on conflict.
VOUCHER_CODE_LENGTH = 10
#: 24 random bytes = 192 bits, 32 URL-safe characters (Apple requires >= 16).
TOKEN_BYTES = 24
#: A sane bound on one add: more than a few rounds at once is a typo, not a visit.
MAX_STAMPS_PER_ADD = 100
#: Bounds on free texts given to operations.
MAX_CODE_LENGTH = 200
MAX_MESSAGE_LENGTH = 1000

_CROCKFORD_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CODE_SEPARATORS = re.compile(r"[\s-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _random_code(length: int) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def new_serial() -> str:
    """A new card number: 16 random Crockford base32 characters (80 bits), e.g. ``7K3QX9...``."""
    return _random_code(SERIAL_LENGTH)


def new_token() -> str:
    """A new authentication token for Apple's web service: 32 URL-safe random characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_voucher_code() -> str:
    """A new redeem code: 10 random Crockford base32 characters (50 bits)."""
    return _random_code(VOUCHER_CODE_LENGTH)


def normalize_code(code: str) -> str:
    """A typed redeem code in canonical form: upper case, spaces and hyphens removed, and the
    look-alikes O, I, L read as 0, 1, 1 (as Crockford's base32 specifies)."""
    return _CODE_SEPARATORS.sub("", code).upper().translate(_CROCKFORD_ALIASES)


# -- events ---------------------------------------------------------------------------------------


class EventType(StrEnum):
    """Everything that appears in the journal ("Card Events")."""

    CARD_ISSUED = "card_issued"
    STAMP_ADDED = "stamp_added"
    STAMPS_ADJUSTED = "stamps_adjusted"
    GOAL_REACHED = "goal_reached"
    VOUCHER_ISSUED = "voucher_issued"
    VOUCHER_REDEEMED = "voucher_redeemed"
    COUPON_ISSUED = "coupon_issued"
    CARD_VOIDED = "card_voided"
    CARD_EXPIRED = "card_expired"
    CARD_DELETED = "card_deleted"
    MESSAGE_SENT = "message_sent"
    CAMPAIGN_SENT = "campaign_sent"
    PASS_ADDED = "pass_added"
    PASS_REMOVED = "pass_removed"


class Platform(StrEnum):
    """Where a holder keeps the card."""

    WEB = "web"
    APPLE = "apple"
    GOOGLE = "google"


#: The event types :func:`record` creates: they note something that happened around the card
#: without changing its rules state.
RECORDABLE = frozenset(
    {
        EventType.MESSAGE_SENT,
        EventType.CAMPAIGN_SENT,
        EventType.PASS_ADDED,
        EventType.PASS_REMOVED,
        EventType.CARD_DELETED,
    }
)


@dataclass(frozen=True)
class Event:
    """One journal entry. ``stamps``/``required`` are the progress after the event ("2/8")."""

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
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The result of an operation: the new card, its events in order, and whether to notify.

    The pass must be updated whenever ``card`` differs from the card passed in; ``notify`` says
    whether that update should also alert the holder (see "Notification policy").
    """

    card: Card
    events: tuple[Event, ...]
    notify: bool


def _event(
    type_: EventType,
    template: CardTemplate,
    card: Card,
    now: datetime,
    *,
    stamps: int | None = None,
    code: str | None = None,
    reward: str | None = None,
    voucher_code: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Event:
    return Event(
        type=type_,
        at=now,
        serial=card.serial,
        template_id=template.id,
        template_version=template.version,
        stamps=card.stamps if stamps is None else stamps,
        required=template.stamps_required,
        code=code,
        reward=reward,
        voucher_code=voucher_code,
        data=dict(data or {}),
    )


# -- checks ---------------------------------------------------------------------------------------


def _utc(value: datetime, what: str = "now") -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC (SQLite hands them back naive)."""
    if not isinstance(value, datetime):
        raise CardInputError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _check_template(template: CardTemplate, card: Card) -> None:
    if card.template_id != template.id or card.template_version != template.version:
        raise CardInputError(
            f"card {card.serial} belongs to {card.template_id}@v{card.template_version}, "
            f"not {template.key}"
        )


def is_due_to_expire(card: Card, now: datetime) -> bool:
    """Whether the card's expiry time has come (``now >= expires_at``) while it is still
    active or completed. The service applies :func:`expire_if_due` to such a card."""
    if card.state not in (CardState.ACTIVE, CardState.COMPLETED) or card.expires_at is None:
        return False
    return _utc(now) >= _utc(card.expires_at, "expires_at")


def state_at(card: Card, now: datetime) -> CardState:
    """The state a read at ``now`` shows: ``expired`` once the expiry time has come, whether or
    not :func:`expire_if_due` has written it yet (the stored state changes only with a write or
    the expiry sweep, which journals ``card_expired``)."""
    return CardState.EXPIRED if is_due_to_expire(card, now) else card.state


def card_at(card: Card, now: datetime) -> Card:
    """``card`` as a read at ``now`` shows it (its state from :func:`state_at`)."""
    if not is_due_to_expire(card, now):
        return card
    return card.model_copy(update={"state": CardState.EXPIRED})


def _require_state(card: Card, now: datetime, *allowed: CardState) -> None:
    if card.state not in allowed:
        raise CardInactiveError(f"card {card.serial} is {card.state.value}")
    if is_due_to_expire(card, now):
        raise CardInactiveError(
            f"card {card.serial} expired at {_utc(card.expires_at or now).isoformat()}"
        )


def _check_code(code: str | None) -> str | None:
    if code is None:
        return None
    if not isinstance(code, str):
        raise CardInputError(f"code must be a string, got {type(code).__name__}")
    code = code.strip()
    if not code or len(code) > MAX_CODE_LENGTH or _CONTROL.search(code):
        raise CardInputError(
            f"code must be 1 to {MAX_CODE_LENGTH} printable characters, got {code!r:.60}"
        )
    return code


def _check_count(n: object, *, low: int, high: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise InvalidStampCountError(f"{what} must be a whole number, got {n!r:.40}")
    if not low <= n <= high:
        raise InvalidStampCountError(f"{what} must be {low} to {high}, got {n}")
    return n


def _check_text(value: object, what: str, *, low: int, high: int) -> str:
    if not isinstance(value, str):
        raise CardInputError(f"{what} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not low <= len(value) <= high:
        raise CardInputError(f"{what} must be {low} to {high} characters, got {len(value)}")
    if "\x00" in value:  # PostgreSQL cannot store NUL in text; no backend should accept it
        raise CardInputError(f"{what} must not contain NUL characters")
    return value


def _language(template: CardTemplate, card: Card) -> str:
    return card.language if card.language in template.texts else template.default_language


def _title(template: CardTemplate, card: Card, step: RewardStep) -> tuple[str, str]:
    lang = _language(template, card)
    # Templates do not bound reward texts; a voucher does (200/2000), so clip rather than let a
    # wordy template make every stamp fail.
    return (
        localized(step.title, lang, template.default_language)[:200],
        localized(step.description, lang, template.default_language)[:2000],
    )


def _unique_code(taken: set[str]) -> str:
    # 2^-50 per draw: the loop practically never repeats, but a duplicate on one card would
    # make redeeming ambiguous, so it is excluded outright.
    while (code := new_voucher_code()) in taken:
        pass  # pragma: no cover - astronomically unlikely
    taken.add(code)
    return code


# -- expiry ---------------------------------------------------------------------------------------


def compute_expires_at(
    template: CardTemplate, *, created_at: datetime, last_stamp_at: datetime | None
) -> datetime | None:
    """When a card expires under the template's rule; None for ``none``.

    ``fixed_date``: the rule's date (a plain date means 23:59:59 that day, UTC).
    ``days_after_issue``: ``created_at + days``. ``days_after_last_stamp``: ``last_stamp_at +
    days``, or ``created_at + days`` before the first stamp.
    """
    rule = template.expiry
    if rule.kind is ExpiryKind.NONE:
        return None
    if rule.kind is ExpiryKind.FIXED_DATE:
        assert rule.date is not None  # the model guarantees it
        return _utc(rule.date, "expiry date")
    assert rule.days is not None  # the model guarantees it
    after_issue = rule.kind is ExpiryKind.DAYS_AFTER_ISSUE
    start = created_at if after_issue else (last_stamp_at or created_at)
    return _utc(start, "start") + timedelta(days=rule.days)


def expire_if_due(template: CardTemplate, card: Card, *, now: datetime) -> Outcome:
    """Expire the card when ``now >= card.expires_at``: state ``expired``, event
    ``card_expired``, silent. Otherwise the card unchanged and no events.

    Completed cards expire too: their unredeemed rewards expire with them. Voided and already
    expired cards are left as they are.
    """
    _check_template(template, card)
    now = _utc(now)
    if not is_due_to_expire(card, now):
        return Outcome(card, (), notify=False)
    new = card.model_copy(update={"state": CardState.EXPIRED})
    event = _event(
        EventType.CARD_EXPIRED,
        template,
        new,
        now,
        data={"expires_at": _utc(card.expires_at or now).isoformat()},
    )
    return Outcome(new, (event,), notify=False)


# -- issuing --------------------------------------------------------------------------------------


def issue_card(
    template: CardTemplate,
    holder: Holder,
    *,
    now: datetime,
    serial: str | None = None,
    language: str | None = None,
) -> Outcome:
    """Issue a new card at 0 stamps with a random serial (unless given) and a random token.

    ``language`` must be one of the template's languages (None: the template's default).
    Silent: the holder has no pass yet.
    """
    now = _utc(now)
    if not isinstance(holder, Holder):
        raise CardInputError(f"holder must be a Holder, got {type(holder).__name__}")
    if language is not None and language not in template.texts:
        raise CardInputError(
            f"language {language!r} is not one of the template's: {', '.join(template.texts)}"
        )
    try:
        card = Card(
            serial=new_serial() if serial is None else serial,
            template_id=template.id,
            template_version=template.version,
            holder=holder,
            created_at=now,
            authentication_token=new_token(),
            expires_at=compute_expires_at(template, created_at=now, last_stamp_at=None),
            language=language,
        )
    except CardInputError as exc:  # the model names the field; keep the one-line rule
        raise CardInputError(
            f"invalid serial {serial!r:.80}: 1 to 64 characters of A-Z a-z 0-9 . _ -"
        ) from exc
    return Outcome(card, (_event(EventType.CARD_ISSUED, template, card, now),), notify=False)


# -- stamps ---------------------------------------------------------------------------------------


def add_stamps(
    template: CardTemplate, card: Card, n: int, *, now: datetime, code: str | None = None
) -> Outcome:
    """Add ``n`` stamps (1..MAX_STAMPS_PER_ADD) in one visit; ``code`` is e.g. a receipt id.

    Events, in order: ``stamp_added`` (stamps after the add; data ``count``, ``old``, ``new``,
    ``dropped``, ``new_round``), then for each reward step reached ``goal_reached`` and
    ``voucher_issued`` (stamps at the step). One notification for the whole visit.

    Raises InvalidStampCountError (n not a whole number in range), CardInactiveError (card not
    active, or past its expiry time: the service applies :func:`expire_if_due` first),
    StampLimitError (more than ``limits.max_stamps_per_visit``, or within
    ``limits.cooldown_minutes`` of the last stamp).
    """
    _check_template(template, card)
    now = _utc(now)
    n = _check_count(n, low=1, high=MAX_STAMPS_PER_ADD, what="stamps to add")
    code = _check_code(code)
    _require_state(card, now, CardState.ACTIVE)
    limits = template.limits
    if limits.max_stamps_per_visit is not None and n > limits.max_stamps_per_visit:
        raise StampLimitError(
            f"at most {limits.max_stamps_per_visit} stamp(s) per visit, asked for {n}"
        )
    if limits.cooldown_minutes is not None and card.last_stamp_at is not None:
        ready = _utc(card.last_stamp_at, "last_stamp_at") + timedelta(
            minutes=limits.cooldown_minutes
        )
        if now < ready:
            raise StampLimitError(
                f"next stamp allowed at {ready.isoformat()} "
                f"({limits.cooldown_minutes} min cool-down after the last stamp)"
            )

    last = template.last_step
    mode = template.after_last_reward
    stamps = card.stamps
    rounds = card.rounds_completed
    state = card.state
    new_round = False
    if stamps >= last:  # the card sat full: this visit starts the next round
        stamps = 0
        new_round = True
    taken = {v.code for v in card.vouchers}
    vouchers: list[Voucher] = []
    reached: list[tuple[int, str, str]] = []  # (step, title, voucher code)
    remaining = n
    while remaining:
        stamps += 1
        remaining -= 1
        step = template.reward_at(stamps)
        if step is not None:
            title, description = _title(template, card, step)
            voucher = Voucher(
                code=_unique_code(taken),
                kind=VoucherKind.REWARD,
                title=title,
                description=description,
                issued_at=now,
                reward_at=step.at,
            )
            vouchers.append(voucher)
            reached.append((step.at, title, voucher.code))
        if stamps >= last:
            rounds += 1
            if mode is AfterLastReward.COMPLETE:
                state = CardState.COMPLETED
                break
            if mode is AfterLastReward.NEW_ROUND:
                break
            if remaining:  # carry_over: the rest starts the next round
                stamps = 0
                new_round = True
    new = card.model_copy(
        update={
            "stamps": stamps,
            "rounds_completed": rounds,
            "state": state,
            "vouchers": (*card.vouchers, *vouchers),
            "last_stamp_at": now,
            "expires_at": (
                compute_expires_at(template, created_at=card.created_at, last_stamp_at=now)
                if template.expiry.kind is ExpiryKind.DAYS_AFTER_LAST_STAMP
                else card.expires_at
            ),
        }
    )
    events = [
        _event(
            EventType.STAMP_ADDED,
            template,
            new,
            now,
            code=code,
            data={
                "count": n,
                "old": card.stamps,
                "new": stamps,
                "dropped": remaining,
                "new_round": new_round,
            },
        )
    ]
    for at, title, voucher_code in reached:
        events.append(
            _event(EventType.GOAL_REACHED, template, new, now, stamps=at, code=code, reward=title)
        )
        events.append(
            _event(
                EventType.VOUCHER_ISSUED,
                template,
                new,
                now,
                stamps=at,
                code=code,
                reward=title,
                voucher_code=voucher_code,
            )
        )
    return Outcome(new, tuple(events), notify=True)


def set_stamps(
    template: CardTemplate, card: Card, n: int, *, now: datetime, code: str | None = None
) -> Outcome:
    """Set the stamp count directly (the merchant's "edit punches"), 0..stamps_required.

    An adjustment: event ``stamps_adjusted`` with data ``{"old", "new"}``; no vouchers are
    issued even when ``n`` is a reward step (a correction is not a visit: issuing would hand out
    a second reward whenever a mistake is corrected back and forth; owed rewards are given with
    :func:`issue_coupon`), ``last_stamp_at`` and limits are untouched, and it is silent. Setting
    the current value is a no-op (no event). Only active cards.
    """
    _check_template(template, card)
    now = _utc(now)
    n = _check_count(n, low=0, high=template.stamps_required, what="stamp count")
    code = _check_code(code)
    _require_state(card, now, CardState.ACTIVE)
    if n == card.stamps:
        return Outcome(card, (), notify=False)
    new = card.model_copy(update={"stamps": n})
    event = _event(
        EventType.STAMPS_ADJUSTED,
        template,
        new,
        now,
        code=code,
        data={"old": card.stamps, "new": n},
    )
    return Outcome(new, (event,), notify=False)


# -- vouchers -------------------------------------------------------------------------------------


def redeem_voucher(
    template: CardTemplate, card: Card, voucher_code: str, *, now: datetime
) -> Outcome:
    """Redeem a voucher of this card once. The code is compared in canonical form
    (:func:`normalize_code`) and in constant time.

    Allowed on active and completed cards (a completed card's last reward must stay
    redeemable). Raises VoucherError for an unknown code (including another card's) or one
    already redeemed, CardInactiveError for a voided, expired or past-expiry card. The pass is
    updated silently.
    """
    _check_template(template, card)
    now = _utc(now)
    if not isinstance(voucher_code, str):
        raise VoucherError(f"voucher code must be a string, got {type(voucher_code).__name__}")
    _require_state(card, now, CardState.ACTIVE, CardState.COMPLETED)
    if len(voucher_code) > MAX_CODE_LENGTH:  # bound the work on hostile input
        raise VoucherError(f"no voucher with this code on card {card.serial}")
    wanted = normalize_code(voucher_code).encode()
    found: int | None = None
    for i, voucher in enumerate(card.vouchers):
        # Compare against every voucher so timing does not reveal which one matched.
        if hmac.compare_digest(normalize_code(voucher.code).encode(), wanted) and found is None:
            found = i
    if found is None:
        raise VoucherError(f"no voucher with this code on card {card.serial}")
    voucher = card.vouchers[found]
    if voucher.redeemed_at is not None:
        raise VoucherError(f"voucher already redeemed at {_utc(voucher.redeemed_at).isoformat()}")
    redeemed = voucher.model_copy(update={"redeemed_at": now})
    vouchers = (*card.vouchers[:found], redeemed, *card.vouchers[found + 1 :])
    new = card.model_copy(update={"vouchers": vouchers})
    event = _event(
        EventType.VOUCHER_REDEEMED,
        template,
        new,
        now,
        reward=voucher.title,
        voucher_code=voucher.code,
        data={"kind": voucher.kind.value, "reward_at": voucher.reward_at},
    )
    return Outcome(new, (event,), notify=False)


def issue_coupon(
    template: CardTemplate, card: Card, title: str, *, description: str = "", now: datetime
) -> Outcome:
    """Issue a personal voucher (kind ``coupon``: a gift or compensation, not tied to stamps).

    Event ``coupon_issued``; notifies (a voucher is what the holder wants to hear about).
    Only active cards. Title 1..200 characters, description up to 2000.
    """
    _check_template(template, card)
    now = _utc(now)
    title = _check_text(title, "coupon title", low=1, high=200)
    description = _check_text(description, "coupon description", low=0, high=2000)
    _require_state(card, now, CardState.ACTIVE)
    voucher = Voucher(
        code=_unique_code({v.code for v in card.vouchers}),
        kind=VoucherKind.COUPON,
        title=title,
        description=description,
        issued_at=now,
    )
    new = card.model_copy(update={"vouchers": (*card.vouchers, voucher)})
    event = _event(
        EventType.COUPON_ISSUED, template, new, now, reward=title, voucher_code=voucher.code
    )
    return Outcome(new, (event,), notify=True)


# -- card life ------------------------------------------------------------------------------------


def void_card(template: CardTemplate, card: Card, *, now: datetime) -> Outcome:
    """Void (invalidate) the card: Apple shows it voided, Google marks it inactive.

    Works from any state but ``voided`` (CardInactiveError), including an expired card.
    Event ``card_voided``; silent (the pass is updated without an alert).
    """
    _check_template(template, card)
    now = _utc(now)
    if card.state is CardState.VOIDED:
        raise CardInactiveError(f"card {card.serial} is already voided")
    new = card.model_copy(update={"state": CardState.VOIDED})
    event = _event(
        EventType.CARD_VOIDED, template, new, now, data={"previous_state": card.state.value}
    )
    return Outcome(new, (event,), notify=False)


def delete_card(template: CardTemplate, card: Card, *, now: datetime) -> Outcome:
    """Delete the card: voided first (unless it already is, so every wallet shows it invalid),
    then anonymised (the holder's name, email, phone, birthday and the card's message erased).
    Events ``card_voided`` (when it was not voided) and ``card_deleted``; silent."""
    evs: list[Event] = []
    if card.state is not CardState.VOIDED:
        voided = void_card(template, card, now=now)
        card, evs = voided.card, list(voided.events)
    evs.append(record(template, card, EventType.CARD_DELETED, now=now))
    anonymous = card.model_copy(update={"holder": Holder(), "message": None})
    return Outcome(anonymous, tuple(evs), notify=False)


def update_holder(template: CardTemplate, card: Card, holder: Holder, *, now: datetime) -> Outcome:
    """Replace the customer's details. The pass shows the name, so the wallets get a silent
    update; there is no event for it (the journal records stamps and rewards, not contacts)."""
    _check_template(template, card)
    return Outcome(card.model_copy(update={"holder": holder}), (), notify=False)


def migrate_card(old: CardTemplate, new: CardTemplate, card: Card, *, now: datetime) -> Outcome:
    """Move a card to another version of its template (a rules change).

    Keeps stamps (clamped to the new ``stamps_required``), rounds, vouchers and state; recomputes
    ``expires_at`` under the new expiry rule. No vouchers are issued even if the clamped count
    lands on a reward step. Event ``stamps_adjusted`` with data ``{"migrated_from": v1,
    "to": v2, "old": s1, "new": s2}``; silent. Active and completed cards only (voided and
    expired ones stay on the version they ended with). If the new expiry time has already
    passed, the service applies :func:`expire_if_due` afterwards.
    """
    _check_template(old, card)
    now = _utc(now)
    if new.id != old.id:
        raise CardInputError(f"cannot migrate a card of {old.id!r} to another template {new.id!r}")
    if new.version == old.version:
        raise CardInputError(f"card {card.serial} is already on {new.key}")
    if card.state not in (CardState.ACTIVE, CardState.COMPLETED):
        raise CardInactiveError(f"card {card.serial} is {card.state.value}")
    stamps = min(card.stamps, new.stamps_required)
    moved = card.model_copy(
        update={
            "template_version": new.version,
            "stamps": stamps,
            "expires_at": compute_expires_at(
                new, created_at=card.created_at, last_stamp_at=card.last_stamp_at
            ),
        }
    )
    event = _event(
        EventType.STAMPS_ADJUSTED,
        new,
        moved,
        now,
        data={
            "migrated_from": old.version,
            "to": new.version,
            "old": card.stamps,
            "new": stamps,
        },
    )
    return Outcome(moved, (event,), notify=False)


def send_message(template: CardTemplate, card: Card, text: str, *, now: datetime) -> Outcome:
    """Put a personal message on the card (shown on the back of the pass) and record
    ``message_sent`` with data ``{"message": text}``. Notifies (the service spends the budget).
    Active and completed cards."""
    _check_template(template, card)
    now = _utc(now)
    text = _check_text(text, "message", low=1, high=MAX_MESSAGE_LENGTH)
    _require_state(card, now, CardState.ACTIVE, CardState.COMPLETED)
    new = card.model_copy(update={"message": text})
    event = _event(EventType.MESSAGE_SENT, template, new, now, data={"message": text})
    return Outcome(new, (event,), notify=True)


def record(
    template: CardTemplate,
    card: Card,
    type: EventType,
    *,
    now: datetime,
    code: str | None = None,
    **data: Any,
) -> Event:
    """An event that changes no rules state: ``message_sent``, ``campaign_sent``,
    ``pass_added``/``pass_removed`` (need ``platform``: apple, google or web) and
    ``card_deleted``. Extra keyword arguments become the event's data."""
    _check_template(template, card)
    now = _utc(now)
    try:
        kind = EventType(type)
    except ValueError:
        raise CardInputError(f"unknown event type {type!r}") from None
    if kind not in RECORDABLE:
        raise CardInputError(
            f"{kind.value} comes from its operation, not record(); record takes "
            + ", ".join(sorted(t.value for t in RECORDABLE))
        )
    if kind in (EventType.PASS_ADDED, EventType.PASS_REMOVED):
        try:
            data["platform"] = Platform(str(data.get("platform"))).value
        except ValueError:
            raise CardInputError(
                f"{kind.value} needs platform= one of apple, google, web; "
                f"got {data.get('platform')!r}"
            ) from None
    try:  # the journal stores data as JSON: refuse what it could not write
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise CardInputError(f"event data must be JSON values: {exc}") from None
    return _event(kind, template, card, now, code=_check_code(code), data=data)
