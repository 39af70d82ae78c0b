"""The dispatcher's operations (the delivery worker in :mod:`passkit_stamps.delivery` calls
them): claim due outbox rows with a lease, acknowledge delivered ones, reschedule failed ones with
back-off and jitter or park them dead, give rows back unsent, what the senders need (the push
tokens of a batch, the cards' current state), dead-token pruning, and the outbox's figures.

Each operation is one store transaction; none holds SQL (that is :mod:`..store.outbox`'s).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from ..engine import Platform
from ..model import Card, CardTemplate
from ..store import cards as store_cards
from ..store import devices as store_devices
from ..store import outbox as store_outbox
from ..store.schema import utc
from .checks import check_text
from .core import ServiceCore

#: Cards a claim takes at most, each with all its due rows (a worker's batch).
DEFAULT_BATCH = 500
#: How long a claim holds its rows: a worker that dies leaves them due again after this.
DEFAULT_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again, and when it is parked dead.

    The n-th failed attempt waits ``backoff_base * 2**(n-1)`` seconds, at most ``backoff_max``,
    with full jitter over its upper half (so a burst of failures does not come back at once).
    A row is parked dead after ``max_attempts`` attempts or once older than ``max_age``."""

    max_attempts: int = 12
    max_age: timedelta = timedelta(hours=24)
    backoff_base: float = 2.0
    backoff_max: float = 1800.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_base <= 0 or self.backoff_max <= 0:
            from ..errors import CardInputError

            raise CardInputError(
                "retry policy: max_attempts >= 1, backoff_base > 0 and backoff_max > 0"
            )

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        doubling = float(2 ** min(max(attempts, 1) - 1, 40))
        ceiling = min(self.backoff_max, self.backoff_base * doubling)
        return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True)
class Delivery:
    """A claimed outbox row: a change of a card to bring to one platform."""

    id: int
    serial: str
    platform: str
    reason: str
    silent: bool
    change_tag: int
    created_at: datetime
    #: Attempts so far, this one included.
    attempts: int
    last_error: str | None = None


@dataclass(frozen=True)
class OutboxStats:
    """One platform's outbox: never-failed rows, rows waiting for a retry, parked rows, and when
    the oldest row not parked was written."""

    platform: str
    pending: int
    retrying: int
    dead: int
    oldest: datetime | None


@dataclass(frozen=True)
class AppleTarget:
    """A device registered for a card: where the Apple sender pushes."""

    serial: str
    pass_type_id: str
    push_token: str


@dataclass(frozen=True)
class PushTargets:
    """The devices to push for a batch of cards, and ``committed_below``: read in the same
    snapshot, every change tagged below it had committed, so a push sent after this read covers
    those changes (:class:`Coverage`)."""

    targets: list[AppleTarget]
    committed_below: int


@dataclass(frozen=True)
class Coverage:
    """What a delivery covered: every change of ``serials`` on ``platform`` tagged below
    ``below`` (committed before the state went out; :attr:`PushTargets.committed_below`).
    ``owner``: the worker that delivered (rows another worker holds under a live lease stay)."""

    platform: str
    serials: tuple[str, ...]
    below: int
    owner: str


@dataclass(frozen=True)
class CardState:
    """A card as it is now, with its template (what the Google sender brings the object to)."""

    card: Card
    template: CardTemplate
    deleted: bool
    #: Whether the card's last change was notified (the budget's decision; Google:
    #: notifyPreference / TEXT_AND_NOTIFY only then), and the id of the card's current message
    #: (Google's addMessage id, so a retried delivery does not add it twice).
    notified: bool = False
    message_id: str | None = None


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row["id"],
        serial=row["serial"],
        platform=row["platform"],
        reason=row["reason"],
        silent=bool(row["silent"]),
        change_tag=row["change_tag"],
        created_at=utc(row["created_at"]) or row["created_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


class DeliveryOperations(ServiceCore):
    async def claim_deliveries(
        self,
        owner: str,
        *,
        limit: int = DEFAULT_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        platforms: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Lease every due row of up to ``limit`` cards (those of the oldest due rows) to the
        worker ``owner``, skipping cards whose delivery is in flight; the attempt counts now, so
        a row that crashes every worker still ends up parked."""
        check_text(owner, "worker id", 64)
        now = self._now()
        wanted = None if platforms is None else [str(p) for p in platforms]
        if wanted is not None and not wanted:
            return []

        def body(conn: Connection) -> list[Delivery]:
            rows = store_outbox.claim(
                conn,
                owner=owner,
                now=now,
                lease_until=now + lease,
                limit=max(1, int(limit)),
                platforms=wanted,
            )
            return [_delivery(r) for r in rows]

        return await self.store.run_write(body)

    async def acknowledge_deliveries(
        self, ids: Iterable[int], *, covered: Coverage | None = None
    ) -> int:
        """Delivered: the rows leave the outbox; how many did. With ``covered``, also the
        rows of those cards committed while the delivery was in flight but before its state
        went out (docs/push.md, "Duplicates"); rows committed after stay, to be delivered
        again."""
        wanted = [int(i) for i in ids]
        if not wanted and (covered is None or not covered.serials):
            return 0
        now = self._now()
        fold = None
        if covered is not None and covered.serials:
            fold = (covered.platform, list(covered.serials), int(covered.below), covered.owner)
        return await self.store.run_write(
            lambda conn: store_outbox.acknowledge(conn, wanted, covered=fold, now=now)
        )

    async def fail_deliveries(
        self,
        failures: Sequence[tuple[Delivery, str]],
        policy: RetryPolicy = RetryPolicy(),
        *,
        rand: Callable[[], float] = random.random,
    ) -> int:
        """Failed attempts (each with its error): due again after the policy's back-off, or
        parked dead after its attempts or age. Returns how many were parked."""
        if not failures:
            return 0
        now = self._now()
        updates = []
        parked = 0
        for delivery, error in failures:
            dead = delivery.attempts >= policy.max_attempts or (
                now - delivery.created_at >= policy.max_age
            )
            parked += dead
            updates.append(
                {
                    "row_id": delivery.id,
                    "next_attempt_at": now
                    + timedelta(seconds=policy.delay(delivery.attempts, rand)),
                    "last_error": str(error)[:500],
                    "dead_at": now if dead else None,
                }
            )
        await self.store.run_write(lambda conn: store_outbox.reschedule(conn, updates))
        return parked

    async def release_deliveries(
        self, ids: Iterable[int], owner: str, *, note: str | None = None
    ) -> int:
        """Give claimed rows back unsent (a paused platform, a worker stopping): the attempt
        does not count; ``note`` says why (shown by ``passkit-stamps outbox``)."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0
        return await self.store.run_write(
            lambda conn: store_outbox.release(conn, wanted, owner=owner, note=note)
        )

    async def apple_targets(self, serials: Sequence[str]) -> list[AppleTarget]:
        """Every (card, pass type, push token) registered for the cards, in one read."""
        return (await self.push_targets(serials)).targets

    async def push_targets(self, serials: Sequence[str]) -> PushTargets:
        """Every (card, pass type, push token) registered for the cards and the tag bound of
        the same snapshot (what a push sent next covers), in one statement: read it just
        before pushing."""
        rows, below = await self.store.run_read(
            lambda conn: store_outbox.apple_targets(conn, list(serials))
        )
        return PushTargets([AppleTarget(*row) for row in rows], below)

    async def card_states(self, serials: Sequence[str]) -> dict[str, CardState]:
        """The cards as they are now (deleted ones included: they are served voided), with
        their templates; missing serials are left out."""
        if not serials:
            return {}

        def body(conn: Connection) -> dict[str, CardState]:
            found = {}
            for stored in store_cards.load_cards(conn, list(serials)):
                card = stored.card
                template = self._template(conn, card.template_id, card.template_version)
                found[card.serial] = CardState(
                    card,
                    template,
                    stored.deleted_at is not None,
                    notified=stored.notified,
                    message_id=stored.message_id,
                )
            return found

        return await self.store.run_read(body)

    async def prune_dead_token(self, push_token: str, timestamp: datetime | None) -> list[str]:
        """APNs said ``push_token`` is dead (410 since ``timestamp``, or 400 BadDeviceToken /
        DeviceTokenNotForTopic without one): remove the registrations of the devices holding
        it, except those made or renewed after ``timestamp`` (the device registered again). A
        card left without registrations is no longer in Apple Wallet: journal ``pass_removed``.
        Returns the serials whose registration was removed."""
        check_text(push_token, "push token", 256)
        now = self._now()
        since = None if timestamp is None else utc(timestamp)

        def body(conn: Connection) -> list[str]:
            removed = []
            for row in store_outbox.token_registrations(conn, push_token):
                renewed = [utc(row["created_at"]), utc(row["device_updated_at"])]
                if since is not None and any(t is not None and t > since for t in renewed):
                    continue
                # The card first, as every writer of a card does (no lock-order deadlock).
                stored = store_cards.load_card(conn, row["serial"], for_update=True)
                if not store_devices.remove_registration(
                    conn, row["device_library_id"], row["pass_type_id"], row["serial"]
                ):
                    continue
                removed.append(row["serial"])
                if stored is not None and not store_devices.registration_count(conn, row["serial"]):
                    self._set_platform(conn, stored, Platform.APPLE, False, now)
            return removed

        return await self.store.run_write(body)

    async def outbox_stats(self) -> list[OutboxStats]:
        """Per platform: pending, retrying, dead, and the oldest row not dead."""
        rows = await self.store.run_read(store_outbox.stats)
        return [
            OutboxStats(
                platform=r["platform"],
                pending=int(r["pending"]),
                retrying=int(r["retrying"]),
                dead=int(r["dead"]),
                oldest=utc(r["oldest"]),
            )
            for r in rows
        ]

    async def dead_deliveries(
        self, *, platform: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Parked rows, oldest first."""
        rows = await self.store.run_read(
            lambda conn: store_outbox.dead_rows(conn, platform, max(1, int(limit)))
        )
        return [_delivery(r) for r in rows]

    async def retry_dead_deliveries(self, *, platform: str | None = None) -> int:
        """Re-queue parked rows (attempts from 0, due now); how many."""
        now = self._now()
        return await self.store.run_write(lambda conn: store_outbox.retry_dead(conn, platform, now))
