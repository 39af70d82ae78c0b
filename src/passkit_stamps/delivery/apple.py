"""The Apple sender: one APNs push per registered push token.

Wallet answers a push by asking the web service which of the device's passes of that pass type
changed since its last tag, and fetches them all; so a device holding several changed cards of one
pass type gets ONE push per batch (the push carries nothing but "ask"). Dead tokens (410
Unregistered/ExpiredToken, 400 BadDeviceToken/DeviceTokenNotForTopic) are pruned through the
service, honouring the 410 timestamp. A push that APNs could not take (RetryLater, Failed) fails
every card of that device in this batch (they are retried with back-off; the device's other
pushes are unaffected). A configuration error pauses Apple delivery (:class:`SenderPaused`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..apple.apns import APNsClient, DeadToken, Delivered, PushResult, RetryLater
from ..errors import APNsClosedError, APNsConfigurationError, APNsInputError
from .metrics import DeliveryMetrics
from .worker import CardUpdate, SenderPaused, Sent

if TYPE_CHECKING:
    from ..service import StampService

logger = logging.getLogger(__name__)


class AppleSender:
    """Pushes through ``client``. ``topic``: the pass type this server pushes for (with
    certificate auth, the certificate's): registrations for other pass types are skipped (and
    logged) instead of stopping the client with a topic error. ``on_result`` sees every push
    result (the demo logs them)."""

    platform = "apple"

    def __init__(
        self,
        service: StampService,
        client: APNsClient,
        *,
        topic: str | None = None,
        metrics: DeliveryMetrics | None = None,
        on_result: Callable[[PushResult, Sequence[str]], None] | None = None,
    ) -> None:
        self.service = service
        self.client = client
        self.topic = topic
        self.metrics = metrics
        self.on_result = on_result

    async def deliver(self, updates: Sequence[CardUpdate]) -> Sent:
        serials = [u.serial for u in updates]
        # Read just before pushing: the pushes below cover every change of these cards
        # committed by then, claimed or not (the worker acknowledges those rows with them).
        found = await self.service.push_targets(serials)
        targets = found.targets
        # (pass type, token) -> the cards of this batch on that device
        devices: dict[str, dict[str, list[str]]] = {}
        for target in targets:
            if self.topic is not None and target.pass_type_id != self.topic:
                logger.warning(
                    "card %s: a registration for pass type %s, not %s: not pushed",
                    target.serial,
                    target.pass_type_id,
                    self.topic,
                )
                continue
            devices.setdefault(target.pass_type_id, {}).setdefault(target.push_token, []).append(
                target.serial
            )
        failed: dict[str, str] = {}
        for pass_type, tokens in devices.items():
            try:
                async for result in self.client.push_many(list(tokens), topic=pass_type):
                    cards = tokens.get(result.token, [])
                    await self._result(result, cards, failed)
            except (APNsConfigurationError, APNsClosedError) as exc:
                raise SenderPaused(str(exc)) from None
            except APNsInputError as exc:  # a malformed token stored by an old version
                logger.warning("pass type %s: %s", pass_type, exc)
                for cards in tokens.values():
                    for serial in cards:
                        failed.setdefault(serial, "APNsInputError")
        return Sent(failed, covers_below=found.committed_below)

    async def _result(
        self, result: PushResult, cards: Sequence[str], failed: dict[str, str]
    ) -> None:
        if self.metrics is not None:
            self.metrics.pushes[type(result).__name__] += 1
        if self.on_result is not None:
            self.on_result(result, cards)
        if isinstance(result, Delivered):
            return
        if isinstance(result, DeadToken):
            removed = await self.service.prune_dead_token(result.token, result.timestamp)
            if self.metrics is not None:
                self.metrics.pruned += len(removed)
            return
        if isinstance(result, RetryLater):
            reason = f"RetryLater {result.status or '-'} {result.reason}"
        else:
            reason = f"Failed {result.status} {result.reason}"
        for serial in cards:
            failed.setdefault(serial, reason[:60])
