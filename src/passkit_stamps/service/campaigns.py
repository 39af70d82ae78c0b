"""Broadcasts: one message to many holders (the seeds' "Broadcast message"), as a stored
campaign with a report.

``broadcast(message, filters…)`` stores the campaign (its message and the cards' filter, the
same filters as the issued-cards list) and enqueues it in batches of ``batch_size`` cards in
serial order, ONE transaction per batch: the batch's cards are locked, get the message (the back
field whose changeMessage is ``%@`` on Apple, Google's message through ``addMessage``) and a
journal ``campaign_sent``, spend a notification when their budget allows (else they update
silently), and get one outbox row per wallet tagged with the campaign; then the campaign's cursor
moves past the batch. Memory stays flat whatever the number of cards, and a crash loses at most
the batch in flight, which rolled back: ``resume_campaign`` (or ``resume_campaigns``, what a
worker calls) goes on after the cursor and never enqueues a card twice.

Reached: live cards that are active or completed and not past their expiry time, issued before
the campaign started (a card issued during the enqueue is not part of it).

The report counts per platform the rows enqueued (targeted), of which notified and silent, the
rows the dispatcher acknowledged (delivered), those still waiting (pending) and those parked dead
(failed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from ..engine import MAX_MESSAGE_LENGTH, Event, EventType, Platform
from ..errors import CardInputError, CardNotFoundError
from ..model import CardState
from ..store import campaigns as store_campaigns
from ..store import cards as store_cards
from ..store import journal as store_journal
from ..store import outbox as store_outbox
from ..store.schema import utc
from .core import BUDGET_WINDOW, WALLETS
from .reads import CardReads

#: Cards per enqueue transaction.
DEFAULT_CAMPAIGN_BATCH = 1000
MAX_CAMPAIGN_BATCH = 10_000

#: What the seed platform tells a merchant before a broadcast, with Google's limit.
BROADCAST_WARNING = (
    "Excessive use of broadcasts may lead to blocking of your cards: holders who get too many "
    "messages remove the card from their wallet. Google Wallet notifies at most 3 times per "
    "card per 24 hours; beyond that, and beyond this store's notification budget, the message "
    "still reaches the card, silently."
)


@dataclass(frozen=True)
class BroadcastReach:
    """What a broadcast would reach now (the dry run): cards, Apple devices, Google objects;
    of the cards saved in a wallet how many would be notified and how many updated silently
    because their notification budget is spent; cards saved in no wallet (nothing to send)."""

    cards: int
    devices: int
    google_objects: int
    notified: int
    silent: int
    no_wallet: int
    warning: str = BROADCAST_WARNING


@dataclass(frozen=True)
class PlatformReport:
    """One platform's figures of a campaign: outbox rows enqueued (targeted) of which notified
    and silent, delivered (acknowledged by the dispatcher), pending and failed (parked dead)."""

    platform: str
    targeted: int
    notified: int
    silent: int
    delivered: int
    pending: int
    failed: int


@dataclass(frozen=True)
class CampaignReport:
    """A campaign: its message and filter, state (``sending`` until every batch is enqueued,
    then ``sent``), cards reached, notified and updated silently, and the per-platform figures."""

    id: int
    message: str
    filters: Mapping[str, Any]
    state: str
    cards: int
    notified: int
    silent: int
    created_at: datetime
    finished_at: datetime | None
    actor: str | None
    platforms: tuple[PlatformReport, ...]

    @property
    def finished(self) -> bool:
        return self.state == "sent"


#: The filters a campaign takes, as :meth:`CardReads.list_cards` (stored as JSON).
FILTER_KEYS = (
    "search",
    "template_id",
    "template_version",
    "platform",
    "state",
    "min_stamps",
    "max_stamps",
    "has_vouchers_ready",
)


def _check_message(message: object) -> str:
    if not isinstance(message, str):
        raise CardInputError(f"message must be a string, got {type(message).__name__}")
    text = message.strip()
    if not 1 <= len(text) <= MAX_MESSAGE_LENGTH:
        raise CardInputError(
            f"message must be 1 to {MAX_MESSAGE_LENGTH} characters, got {len(text)}"
        )
    if "\x00" in text:
        raise CardInputError("message must not contain NUL characters")
    return text


def _check_batch(batch_size: object) -> int:
    if (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= MAX_CAMPAIGN_BATCH
    ):
        raise CardInputError(f"batch_size must be 1 to {MAX_CAMPAIGN_BATCH}, got {batch_size!r}")
    return batch_size


class CampaignOperations(CardReads):
    async def broadcast(
        self,
        message: str,
        *,
        search: str | None = None,
        template_id: str | None = None,
        template_version: int | None = None,
        platform: Platform | str | None = None,
        state: CardState | str | None = None,
        min_stamps: int | None = None,
        max_stamps: int | None = None,
        has_vouchers_ready: bool | None = None,
        dry_run: bool = False,
        batch_size: int = DEFAULT_CAMPAIGN_BATCH,
        actor: str | None = None,
    ) -> CampaignReport | BroadcastReach:
        """Send ``message`` to every reachable card matching the filters (those of
        :meth:`list_cards`). ``dry_run``: store and send nothing, return the
        :class:`BroadcastReach`. Otherwise the campaign is stored, enqueued batch by batch, and
        its :class:`CampaignReport` returned (journal: ``campaign_sent`` per card)."""
        text = _check_message(message)
        filters: dict[str, Any] = {
            "search": search,
            "template_id": template_id,
            "template_version": template_version,
            "platform": None if platform is None else str(getattr(platform, "value", platform)),
            "state": None if state is None else str(getattr(state, "value", state)),
            "min_stamps": min_stamps,
            "max_stamps": max_stamps,
            "has_vouchers_ready": has_vouchers_ready,
        }
        f = self._card_filter(**filters)  # every bad value a CardInputError naming it
        batch = _check_batch(batch_size)
        if dry_run:
            now = self._now()
            budget = self.notification_budget

            def reach(conn: Connection) -> Mapping[str, int]:
                return store_campaigns.reach(
                    conn, f, now=now, since=now - BUDGET_WINDOW, budget=budget
                )

            found = await self.store.run_read(reach)
            return BroadcastReach(
                cards=found["cards"],
                devices=found["devices"],
                google_objects=found["google"],
                notified=found["notified"],
                silent=found["silent"],
                no_wallet=found["no_wallet"],
            )
        campaign_id = await self.start_campaign(text, filters, actor=actor)
        return await self.resume_campaign(campaign_id, batch_size=batch)

    async def start_campaign(
        self, message: str, filters: Mapping[str, Any], *, actor: str | None = None
    ) -> int:
        """Store a campaign (nothing enqueued yet); its id. :meth:`resume_campaign` sends it."""
        text = _check_message(message)
        unknown = set(filters) - set(FILTER_KEYS)
        if unknown:
            raise CardInputError(f"unknown campaign filter(s): {', '.join(sorted(unknown))}")
        wanted = {k: filters.get(k) for k in FILTER_KEYS}
        self._card_filter(**wanted)
        encoded = json.dumps(wanted, sort_keys=True)
        now = self._now()
        return await self.store.run_write(
            lambda conn: store_campaigns.insert_campaign(
                conn, message=text, filters=encoded, actor=actor, now=now
            )
        )

    async def resume_campaign(
        self,
        campaign_id: int,
        *,
        batch_size: int = DEFAULT_CAMPAIGN_BATCH,
        max_batches: int | None = None,
    ) -> CampaignReport:
        """Enqueue the campaign's remaining cards, a transaction per batch, from its cursor
        (``max_batches``: stop after that many, e.g. to share a worker's time). A finished
        campaign is left as it is. Raises CardNotFoundError for an unknown campaign."""
        batch = _check_batch(batch_size)
        done = 0
        while max_batches is None or done < max_batches:
            finished = await self.store.run_write(
                lambda conn: self._enqueue_batch(conn, int(campaign_id), batch)
            )
            done += 1
            if finished:
                break
        return await self.campaign_report(campaign_id)

    async def resume_campaigns(self, *, batch_size: int = DEFAULT_CAMPAIGN_BATCH) -> list[int]:
        """Finish every campaign still sending (one a crash interrupted); their ids. What a
        worker calls on start and now and then."""
        rows = await self.store.run_read(lambda conn: store_campaigns.list_campaigns(conn, 1000))
        open_ids = sorted(int(r["id"]) for r in rows if r["state"] == "sending")
        for campaign_id in open_ids:
            await self.resume_campaign(campaign_id, batch_size=batch_size)
        return open_ids

    def _enqueue_batch(self, conn: Connection, campaign_id: int, batch: int) -> bool:
        """One batch of a campaign; True when the campaign is (now) finished."""
        row = store_campaigns.campaign(conn, campaign_id, for_update=True)
        if row is None:
            raise CardNotFoundError(f"no campaign {campaign_id}")
        if row["state"] != "sending":
            return True
        now = self._now()
        filters = json.loads(row["filters"])
        f = self._card_filter(**{k: filters.get(k) for k in FILTER_KEYS})
        created = utc(row["created_at"]) or now
        rows = store_campaigns.next_cards(
            conn, f, after=row["cursor"] or "", created_before=created, now=now, limit=batch
        )
        if not rows:
            store_campaigns.finish(conn, campaign_id, now)
            return True
        serials = [r["serial"] for r in rows]
        saved = store_cards.platforms(conn, serials)
        wallets = {s: sorted(saved.get(s, set()) & set(WALLETS)) for s in serials}
        reachable = [s for s in serials if wallets[s]]
        budget = self.notification_budget
        if budget > 0:
            spent = store_outbox.notifications_by_card(conn, reachable, now - BUDGET_WINDOW)
            notified = [s for s in reachable if spent.get(s, 0) < budget]
        else:
            notified = []
        reason = EventType.CAMPAIGN_SENT.value
        store_outbox.spend_notifications(conn, notified, now, reason)
        actor = row["actor"]
        events = [
            Event(
                type=EventType.CAMPAIGN_SENT,
                at=now,
                serial=r["serial"],
                template_id=r["template_id"],
                template_version=r["template_version"],
                stamps=r["stamps"],
                required=r["stamps_required"],
                data={"campaign_id": campaign_id},
            )
            for r in rows
        ]
        store_journal.insert_events(conn, [store_journal.event_row(e, actor) for e in events])
        # Taken after the cards' locks, as every writer of a card does (no lock-order deadlock).
        tag = store_journal.next_change_tag(conn)
        store_campaigns.write_message(
            conn,
            serials,
            notified,
            message=row["message"],
            message_id=f"c{campaign_id}",
            change_tag=tag,
            changed_at=store_campaigns.change_time(rows, now),
        )
        loud = set(notified)
        outbox_rows = [
            {
                **store_outbox.outbox_row(s, p, reason, s not in loud, tag, now),
                "campaign_id": campaign_id,
            }
            for s in reachable
            for p in wallets[s]
        ]
        store_outbox.insert_outbox(conn, outbox_rows)
        per_platform: dict[str, tuple[int, int, int]] = {}
        targeted = Counter(r["platform"] for r in outbox_rows)
        quiet = Counter(r["platform"] for r in outbox_rows if r["silent"])
        for platform, n in targeted.items():
            per_platform[platform] = (n, n - quiet[platform], quiet[platform])
        store_campaigns.advance(
            conn,
            campaign_id,
            cursor=serials[-1],
            cards_count=len(serials),
            notified=len(notified),
            silent=len(reachable) - len(notified),
            per_platform=per_platform,
        )
        if len(rows) < batch:
            store_campaigns.finish(conn, campaign_id, now)
            return True
        return False

    async def campaign_report(self, campaign_id: int) -> CampaignReport:
        """The campaign and its per-platform figures. Raises CardNotFoundError when unknown."""
        if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
            raise CardInputError(f"campaign id must be a whole number, got {campaign_id!r}")

        def body(conn: Connection) -> CampaignReport:
            row = store_campaigns.campaign(conn, campaign_id)
            if row is None:
                raise CardNotFoundError(f"no campaign {campaign_id}")
            return _report(row, store_campaigns.stats(conn, campaign_id))

        return await self.store.run_read(body)

    async def list_campaigns(self, *, limit: int = 50) -> list[CampaignReport]:
        """The latest campaigns first, each with its figures."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
            raise CardInputError(f"limit must be 1 to 500, got {limit!r}")

        def body(conn: Connection) -> list[CampaignReport]:
            return [
                _report(r, store_campaigns.stats(conn, int(r["id"])))
                for r in store_campaigns.list_campaigns(conn, limit)
            ]

        return await self.store.run_read(body)


def _report(row: Mapping[str, Any], stats: list[Mapping[str, Any]]) -> CampaignReport:
    created = utc(row["created_at"])
    assert created is not None
    return CampaignReport(
        id=int(row["id"]),
        message=row["message"],
        filters={k: v for k, v in json.loads(row["filters"]).items() if v is not None},
        state=row["state"],
        cards=int(row["cards"]),
        notified=int(row["notified"]),
        silent=int(row["silent"]),
        created_at=created,
        finished_at=utc(row["finished_at"]),
        actor=row["actor"],
        platforms=tuple(
            PlatformReport(
                platform=s["platform"],
                targeted=int(s["targeted"]),
                notified=int(s["notified"]),
                silent=int(s["silent"]),
                delivered=int(s["delivered"]),
                pending=int(s["pending"]),
                failed=int(s["failed"]),
            )
            for s in stats
        ),
    )
