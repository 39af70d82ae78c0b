"""Wiring a worker from settings: the APNs client and the Google REST client, the senders, the
worker, the opt-in ``/metrics`` listener. Used by ``passkit-stamps worker`` and by ``serve``
(in-process worker); :func:`running_worker` runs one next to other tasks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..service.delivery import DEFAULT_BATCH, RetryPolicy
from .metrics import DeliveryMetrics, serve_metrics
from .worker import DeliveryWorker, Sender

if TYPE_CHECKING:
    from ..apple.apns import PushResult, TokenAuth
    from ..apple.credentials import SigningCredentials
    from ..google.builders import GoogleSettings
    from ..service import StampService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppleDelivery:
    """How to reach APNs: the pass type's certificate (``credentials``) or a token key
    (``token_auth`` with ``topic``); ``host``/``port``/``ca`` for tests and proxies."""

    credentials: SigningCredentials | None = None
    token_auth: TokenAuth | None = None
    topic: str | None = None
    host: str = "api.push.apple.com"
    port: int = 443
    ca: Path | bytes | None = None
    connections: int = 1


@dataclass(frozen=True)
class GoogleDelivery:
    """The issuer's settings (ids, image base URL), the service account, the API's base URL."""

    settings: GoogleSettings
    service_account: Any = None  # a ServiceAccount, a key file's dict, or a token provider
    base_url: str | None = None
    rate: float = 20.0


@dataclass(frozen=True)
class DeliveryConfig:
    apple: AppleDelivery | None = None
    google: GoogleDelivery | None = None
    batch_size: int = DEFAULT_BATCH
    lease: timedelta = timedelta(seconds=60)
    poll_interval: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pause_retry: float = 60.0
    log_interval: float = 60.0
    #: ``(host, port)`` to serve Prometheus text at ``/metrics``; None: off.
    metrics_address: tuple[str, int] | None = None
    #: Extra senders (other channels, e.g. e-mail), taken as they are.
    extra_senders: tuple[Sender, ...] = ()
    on_push: Callable[[PushResult, Any], None] | None = None


def _expiry_sweep(service: StampService) -> Callable[[], Awaitable[int]] | None:
    """The service's expiry sweep (``expire_due``, docs/push.md "Expiry"), called until a round
    expires fewer cards than its limit; None when the service has none."""
    expire_due = getattr(service, "expire_due", None)
    if not callable(expire_due):
        return None

    async def sweep() -> int:
        total = 0
        while True:
            expired = await expire_due(limit=EXPIRY_BATCH)
            total += len(expired)
            if len(expired) < EXPIRY_BATCH:
                if total:
                    logger.info("expired %d card(s)", total)
                break
        # The notifications' upkeep beside it (docs/push.md "Notifications"): forget budget
        # rows out of the window, finish broadcasts a crash interrupted.
        while await service.prune_notification_budget(DEFAULT_PRUNE_BATCH) >= DEFAULT_PRUNE_BATCH:
            pass
        resumed = await service.resume_campaigns()
        if resumed:
            logger.info("resumed campaign(s) %s", ", ".join(map(str, resumed)))
        return total

    return sweep


#: Cards one expiry transaction takes.
EXPIRY_BATCH = 500
#: Spent notifications one pruning transaction removes at most (service.messages).
DEFAULT_PRUNE_BATCH = 10_000


@asynccontextmanager
async def running_worker(
    service: StampService, config: DeliveryConfig, *, metrics: DeliveryMetrics | None = None
) -> AsyncIterator[DeliveryWorker]:
    """Build the clients and senders, start the worker (and ``/metrics`` when asked), yield the
    worker; on exit stop it and close the clients (pushes in flight are answered or, unanswered,
    their rows stay leased and come back: nothing is acknowledged unsent)."""
    metrics = metrics or DeliveryMetrics()
    senders: list[Sender] = list(config.extra_senders)
    async with contextlib.AsyncExitStack() as stack:
        if config.apple is not None:
            from ..apple.apns import APNsClient
            from .apple import AppleSender

            a = config.apple
            client = APNsClient(
                a.credentials,
                token_auth=a.token_auth,
                topic=a.topic,
                host=a.host,
                port=a.port,
                ca=a.ca,
                connections=a.connections,
            )
            await stack.enter_async_context(client)
            topic = a.topic or (a.credentials.pass_type_identifier if a.credentials else None)
            senders.append(
                AppleSender(service, client, topic=topic, metrics=metrics, on_result=config.on_push)
            )
        if config.google is not None:
            from ..google.client import DEFAULT_BASE_URL, WalletClient
            from .google import GoogleSender

            g = config.google
            wallet = WalletClient(
                g.service_account, base_url=g.base_url or DEFAULT_BASE_URL, rate=g.rate
            )
            await stack.enter_async_context(wallet)
            senders.append(GoogleSender(service, wallet, g.settings))
        worker = DeliveryWorker(
            service,
            senders,
            batch_size=config.batch_size,
            lease=config.lease,
            poll_interval=config.poll_interval,
            retry=config.retry,
            pause_retry=config.pause_retry,
            metrics=metrics,
            log_interval=config.log_interval,
            sweep=_expiry_sweep(service),
        )
        if config.metrics_address is not None:
            host, port = await stack.enter_async_context(
                serve_metrics(metrics, *config.metrics_address)
            )
            logger.info("metrics at http://%s:%d/metrics", host, port)
        if not senders:
            logger.warning("delivery worker: no platform configured (no APNs, no Google)")
        worker.start()
        try:
            yield worker
        finally:
            await worker.stop()
