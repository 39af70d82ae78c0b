"""The Google sender: each card's LoyaltyObject is brought to the card's CURRENT state through
the REST client (:meth:`WalletClient.upsert_object`: patch, or insert when missing, creating the
class first when that is missing too), so one call covers every change coalesced into the update.
``notifyPreference`` only when a change in it was notified (the outbox row's ``silent`` flag);
a card over Google's notification quota is updated silently. A voided or deleted card becomes
INACTIVE, an expired one EXPIRED (the builder maps the card's state). A permission or
credentials error pauses Google delivery (:class:`SenderPaused`); other errors fail that card
only (retried with back-off), never the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import (
    GoogleAlreadyExistsError,
    GoogleAuthError,
    GoogleConfigError,
    GoogleNotificationQuotaError,
    GooglePermissionError,
    GoogleWalletError,
)
from ..google.builders import (
    GoogleSettings,
    build_loyalty_class,
    build_loyalty_object,
    build_message,
)
from ..google.client import WalletClient
from .worker import CardUpdate, SenderPaused

if TYPE_CHECKING:
    from ..service import StampService
    from ..service.delivery import CardState

logger = logging.getLogger(__name__)

#: Outbox reasons whose change is a message on the card (sent with addMessage).
_MESSAGE_REASONS = {"message_sent", "campaign_sent"}


class GoogleSender:
    """Upserts through ``client`` (its own rate limiter paces the calls); at most
    ``concurrency`` cards at once."""

    platform = "google"

    def __init__(
        self,
        service: StampService,
        client: WalletClient,
        settings: GoogleSettings,
        *,
        concurrency: int = 8,
    ) -> None:
        self.service = service
        self.client = client
        self.settings = settings
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def deliver(self, updates: Sequence[CardUpdate]) -> Mapping[str, str]:
        states = await self.service.card_states([u.serial for u in updates])
        failed: dict[str, str] = {}
        paused: list[str] = []

        async def one(update: CardUpdate) -> None:
            state = states.get(update.serial)
            if state is None:  # no such card (never existed here): nothing to bring anywhere
                return
            async with self._slots:
                if paused:
                    failed[update.serial] = "paused"
                    return
                try:
                    await self._sync(update, state)
                except (GoogleAuthError, GoogleConfigError) as exc:
                    paused.append(str(exc))
                except GooglePermissionError as exc:
                    paused.append(str(exc))
                except GoogleWalletError as exc:
                    failed[update.serial] = f"{type(exc).__name__} {exc.status or ''}".strip()
                    logger.warning("google object of card %s: %s", update.serial, exc)

        await asyncio.gather(*(one(u) for u in updates))
        if paused:
            raise SenderPaused(paused[0])
        return failed

    async def _sync(self, update: CardUpdate, state: CardState) -> None:
        resource = build_loyalty_object(state.template, state.card, self.settings)
        if state.deleted:
            resource["state"] = "INACTIVE"
        loyalty_class = build_loyalty_class(state.template, self.settings)
        # A message (personal or broadcast) goes through addMessage, which notifies itself when
        # the change was notified: the patch then stays silent (one notification, not two).
        message = None
        if state.message_id and not state.deleted and _MESSAGE_REASONS & set(update.reasons):
            message = build_message(state.template, state.card, state.message_id)
        notify = update.notify and message is None
        try:
            await self.client.upsert_object(resource, loyalty_class=loyalty_class, notify=notify)
        except GoogleNotificationQuotaError:
            # Over Google's notification quota: the update still goes out, silently.
            await self.client.upsert_object(resource, loyalty_class=loyalty_class, notify=False)
        if message is not None:
            # Already there: added by an earlier attempt of this delivery (the id is the
            # message's). TEXT_AND_NOTIFY when notified, TEXT over Google's quota (the client).
            with contextlib.suppress(GoogleAlreadyExistsError):
                await self.client.add_message(
                    str(resource["id"]),
                    str(message["header"]),
                    str(message["body"]),
                    notify=update.notify,
                    message_id=str(message["id"]),
                )
        await self.service.save_google_object(
            state.card.serial,
            str(resource["id"]),
            str(resource["classId"]),
            str(resource["state"]),
            synced_at=datetime.now(UTC),
        )
