"""Notification upkeep the delivery worker runs now and then: the expiry sweep and the pruning
of the notification budget's old rows.

* :meth:`MessageOperations.expire_due` expires the cards whose ``expires_at`` has passed: state
  ``expired``, journal ``card_expired``, a silent update to every wallet (Apple shows the pass
  expired, Google's object becomes EXPIRED). Bounded (``limit`` cards per call, one
  transaction) and idempotent: a card already expired, voided or deleted is not touched again,
  so two workers sweeping at once expire each card once (PostgreSQL: ``SKIP LOCKED``).
* :meth:`MessageOperations.prune_notification_budget` forgets spent notifications older than the
  budget window (24 h): they no longer count, and the table stays small.

Personal messages are :meth:`CardOperations.send_message` (the card's message, Apple's back
field with changeMessage ``%@``, Google's ``addMessage`` with the message id stored on the
card); broadcasts are :mod:`.campaigns`.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from .. import engine
from ..engine import EventType
from ..store import campaigns as store_campaigns
from ..store import cards as store_cards
from ..store import outbox as store_outbox
from .cards import CardOperations
from .core import BUDGET_WINDOW

#: Cards one sweep expires at most (one transaction).
DEFAULT_EXPIRY_BATCH = 500
#: Spent notifications one pruning call removes at most.
DEFAULT_PRUNE_BATCH = 10_000


def _check_limit(limit: object, what: str, high: int) -> int:
    from ..errors import CardInputError

    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= high:
        raise CardInputError(f"{what} must be 1 to {high}, got {limit!r}")
    return limit


class MessageOperations(CardOperations):
    async def expire_due(self, limit: int = DEFAULT_EXPIRY_BATCH) -> list[str]:
        """Expire up to ``limit`` cards whose expiry time has come (one transaction): state
        ``expired``, ``card_expired`` journalled, a silent outbox row per wallet. Returns their
        serials; call again while it returns ``limit`` of them."""
        wanted = _check_limit(limit, "limit", 10_000)
        now = self._now()

        def body(conn: Connection) -> list[str]:
            expired = []
            for serial in store_campaigns.due_to_expire(conn, now, wanted):
                stored = store_cards.load_card(conn, serial, for_update=True)
                if stored is None or stored.deleted_at is not None:
                    continue
                card = stored.card
                template = self._template(
                    conn, card.template_id, card.template_version, stored.template_digest
                )
                outcome = engine.expire_if_due(template, card, now=now)
                if not outcome.events:  # changed meanwhile (a stamp moved the expiry on)
                    continue
                self._persist(
                    conn,
                    stored,
                    template,
                    outcome.card,
                    outcome.events,
                    notify=False,
                    reason=EventType.CARD_EXPIRED.value,
                    actor=None,
                    now=now,
                )
                expired.append(serial)
            return expired

        return await self.store.run_write(body)

    async def prune_notification_budget(self, limit: int = DEFAULT_PRUNE_BATCH) -> int:
        """Forget up to ``limit`` spent notifications older than the budget window; how many
        (call again while it returns ``limit``)."""
        wanted = _check_limit(limit, "limit", 1_000_000)
        before = self._now() - BUDGET_WINDOW
        return await self.store.run_write(
            lambda conn: store_outbox.prune_notifications(conn, before, wanted)
        )
