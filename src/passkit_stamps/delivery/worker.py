"""The dispatcher: drains the outbox at least once, crash-safe.

One round: claim due rows with a lease (:meth:`StampService.claim_deliveries`), coalesce the rows
of one card and platform into one :class:`CardUpdate` (the sender brings the card to its state
NOW, so one delivery covers every change claimed), hand each platform's updates to its
:class:`Sender`, then acknowledge what was delivered and reschedule what failed (back-off with
jitter, parked dead after the policy's attempts or age). Nothing is acknowledged before the
sender says it was delivered, so a worker killed at any point leaves its rows leased; the lease
runs out and another worker (or the restarted one) delivers them again: at least once. A failing
card is rescheduled on its own and never holds up the rows behind it.

A :class:`SenderPaused` from a sender (bad certificate, wrong topic, a Google permission) pauses
that platform: its rows are given back unsent with the reason (``passkit-stamps outbox`` shows
it), the error is logged once, and the platform is tried again after ``pause_retry`` seconds; the
queue is not burnt through.

Wake-ups: a commit that writes outbox rows wakes the worker at once, in this process through
:func:`passkit_stamps.store.outbox.on_outbox_write`, from other processes through PostgreSQL
``LISTEN``; a short poll (``poll_interval``) covers SQLite writers in other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from ..service.delivery import DEFAULT_BATCH, DEFAULT_LEASE, Coverage, Delivery, RetryPolicy
from ..store import outbox as store_outbox
from .metrics import DeliveryMetrics

if TYPE_CHECKING:
    from ..service import StampService

logger = logging.getLogger(__name__)

#: After a wake-up, claim again every RECHECK_INTERVAL seconds for RECHECK_WINDOW seconds.
RECHECK_INTERVAL = 0.05
RECHECK_WINDOW = 2.0


@dataclass(frozen=True)
class CardUpdate:
    """The claimed rows of one card for one platform, delivered as one update of the card's
    current state. ``notify``: some change in it was notified (the rows' ``silent`` flag, which
    the service sets from the notification budget)."""

    serial: str
    platform: str
    rows: tuple[Delivery, ...]

    @property
    def notify(self) -> bool:
        return any(not row.silent for row in self.rows)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.reason for row in self.rows))


@dataclass(frozen=True)
class Sent:
    """What a sender may return instead of the bare failures: ``failed`` as ever, and
    ``covers_below``, a change-tag bound read just before the state went out (the service's
    :meth:`push_targets`): every change of the delivered cards tagged below it had committed,
    so their rows committed while the delivery was in flight are acknowledged with it
    (:class:`passkit_stamps.service.delivery.Coverage`). Only for a sender whose delivery
    brings the card's whole current state with nothing depending on the rows (Apple: the
    device fetches the pass as it is then)."""

    failed: Mapping[str, str]
    covers_below: int | None = None


class SenderPaused(Exception):
    """Raised by a sender when its platform cannot work until someone fixes its configuration
    (every further call would fail the same way). ``reason`` says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender(Protocol):
    """One channel of delivery (Apple, Google; e-mail and others plug in the same way).

    ``platform`` is the outbox's platform value the sender takes. ``deliver`` gets the updates
    of one batch (one per card) and returns the cards that FAILED, each with a short reason
    (``"503 ServiceUnavailable"``); every other card counts as delivered and its rows are
    acknowledged; or a :class:`Sent` with them and the change-tag bound its state covers. It
    raises :class:`SenderPaused` for a configuration error. It must not acknowledge anything
    itself, and may be called again with the same cards (at least once)."""

    platform: str

    async def deliver(self, updates: Sequence[CardUpdate]) -> Mapping[str, str] | Sent: ...


def coalesce(rows: Sequence[Delivery]) -> dict[str, list[CardUpdate]]:
    """The claimed rows as one update per (card, platform), per platform, oldest first."""
    grouped: dict[tuple[str, str], list[Delivery]] = {}
    for row in rows:
        grouped.setdefault((row.platform, row.serial), []).append(row)
    out: dict[str, list[CardUpdate]] = {}
    for (platform, serial), members in grouped.items():
        out.setdefault(platform, []).append(CardUpdate(serial, platform, tuple(members)))
    return out


def worker_id() -> str:
    """host:pid:random, at most 64 characters: the lease owner."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class DeliveryWorker:
    """Drains the outbox of one store through the given senders (one per platform).

    ``run()`` until cancelled, or ``start()``/``stop()`` next to other tasks (``serve``).
    ``drain()`` delivers everything due now and returns (tests, the demo).
    """

    def __init__(
        self,
        service: StampService,
        senders: Sequence[Sender],
        *,
        batch_size: int = DEFAULT_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        poll_interval: float = 1.0,
        retry: RetryPolicy | None = None,
        pause_retry: float = 60.0,
        metrics: DeliveryMetrics | None = None,
        stats_interval: float = 10.0,
        log_interval: float = 60.0,
        owner: str | None = None,
        sweep: Callable[[], Awaitable[object]] | None = None,
        sweep_interval: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        self.service = service
        self.senders = {s.platform: s for s in senders}
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.retry = retry or RetryPolicy()
        self.pause_retry = pause_retry
        self.metrics = metrics or DeliveryMetrics()
        self.stats_interval = stats_interval
        self.log_interval = log_interval
        self.owner = owner or worker_id()
        #: The expiry sweep (the service's), run every ``sweep_interval`` seconds when given.
        self.sweep = sweep
        self.sweep_interval = sweep_interval
        #: Batches in flight at once (claims overlap the previous batch's pushes).
        self.concurrency = max(1, concurrency)
        self._paused_until: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- running -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Deliver now (thread-safe: the store calls it from its writer thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Deliver until cancelled: ``concurrency`` lanes claim and send side by side (one
        batch's pushes are in flight while the next is claimed), and housekeeping (the expiry
        sweep, the queue figures, the log line) runs beside them."""
        self._loop = asyncio.get_running_loop()
        remove = store_outbox.on_outbox_write(self.wake)
        lanes: list[asyncio.Task[None]] = []
        try:
            async with store_outbox.listen_outbox(self.service.store.engine, self.wake):
                logger.info(
                    "delivery worker %s: %s", self.owner, ", ".join(sorted(self.senders)) or "-"
                )
                lanes = [self._loop.create_task(self._lane()) for _ in range(self.concurrency)]
                await self._housekeeping()
        finally:
            for lane in lanes:
                lane.cancel()
            for lane in lanes:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane
            remove()

    async def _housekeeping(self) -> None:
        next_stats = next_log = next_sweep = 0.0
        while True:
            now = time.monotonic()
            if self.sweep is not None and now >= next_sweep:
                next_sweep = now + self.sweep_interval
                await self._guard(self.sweep(), "expiry sweep")
            if now >= next_stats:
                next_stats = now + self.stats_interval
                await self._guard(self.refresh_stats(), "outbox stats")
            if now >= next_log:
                next_log = now + self.log_interval
                logger.info("%s", self.metrics.summary())
            await asyncio.sleep(min(1.0, self.stats_interval, self.log_interval))

    async def _lane(self) -> None:
        woken = time.monotonic()
        while True:
            self._wake.clear()
            try:
                busy = await self.run_once()
            except Exception:  # the store is down, a bug: log, wait, go on
                logger.exception("delivery round failed; retrying")
                busy = 0
                await asyncio.sleep(self.poll_interval)
            if busy:
                continue  # more may be due: claim again at once
            # After a wake-up, poll quickly for a while: on PostgreSQL a row is claimed only
            # once its change is below the visible horizon (store/changes.py), which a
            # transaction running elsewhere can hold back for a moment.
            quick = time.monotonic() - woken < RECHECK_WINDOW
            timeout = min(self.poll_interval, RECHECK_INTERVAL) if quick else self.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
                woken = time.monotonic()

    async def _guard(self, work: Awaitable[object], what: str) -> None:
        try:
            await work
        except Exception:
            logger.exception("%s failed", what)

    async def refresh_stats(self) -> None:
        self.metrics.update_queue(await self.service.outbox_stats())

    async def drain(self, *, max_rounds: int = 1_000_000) -> int:
        """Deliver every due row; the number of rows taken."""
        total = 0
        for _ in range(max_rounds):
            taken = await self.run_once()
            if not taken:
                break
            total += taken
        return total

    # -- one round -----------------------------------------------------------------------------

    def _active_platforms(self) -> list[str]:
        now = time.monotonic()
        return [p for p in self.senders if self._paused_until.get(p, 0.0) <= now]

    async def run_once(self) -> int:
        """Claim one batch and deliver it; the number of rows claimed."""
        platforms = self._active_platforms()
        if not platforms:
            return 0
        rows = await self.service.claim_deliveries(
            self.owner, limit=self.batch_size, lease=self.lease, platforms=platforms
        )
        if not rows:
            return 0
        groups = coalesce(rows)
        await asyncio.gather(*(self._deliver(p, updates) for p, updates in groups.items()))
        return len(rows)

    async def _deliver(self, platform: str, updates: list[CardUpdate]) -> None:
        sender = self.senders[platform]
        rows = [row for u in updates for row in u.rows]
        covers_below: int | None = None
        try:
            result = await sender.deliver(updates)
        except SenderPaused as exc:
            self._pause(platform, exc.reason)
            await self.service.release_deliveries(
                (r.id for r in rows), self.owner, note=f"{platform} paused: {exc.reason}"
            )
            return
        except Exception as exc:  # a sender bug must not lose or burn the rows
            logger.exception("%s sender failed", platform)
            result = {u.serial: f"{type(exc).__name__}" for u in updates}
        if isinstance(result, Sent):
            failed, covers_below = result.failed, result.covers_below
        else:
            failed = result
        if platform in self.metrics.paused:
            logger.warning("%s delivery works again", platform)
            del self.metrics.paused[platform]
        done = [r.id for u in updates if u.serial not in failed for r in u.rows]
        failures = [(r, failed[u.serial]) for u in updates if u.serial in failed for r in u.rows]
        covered = None
        if covers_below is not None:
            delivered = tuple(u.serial for u in updates if u.serial not in failed)
            covered = Coverage(platform, delivered, covers_below, self.owner)
        removed = 0
        if done or covered is not None:
            removed = await self.service.acknowledge_deliveries(done, covered=covered)
        if failures:
            parked = await self.service.fail_deliveries(failures, self.retry)
            self.metrics.dead[platform] += parked
            for reason in failed.values():
                self.metrics.failed(platform, reason)
        self.metrics.deliveries[platform] += len(updates) - len(failed)
        self.metrics.rows[platform] += removed

    def _pause(self, platform: str, reason: str) -> None:
        if self.metrics.paused.get(platform) != reason:
            logger.error(
                "%s delivery PAUSED (rows kept, retried in %.0f s): %s",
                platform,
                self.pause_retry,
                reason,
            )
        self.metrics.paused[platform] = reason
        self._paused_until[platform] = time.monotonic() + self.pause_retry
