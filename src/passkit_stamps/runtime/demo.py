"""The served demo: sample templates published, a few sample cards, pushes logged not sent.

:func:`prepare_demo` is idempotent: restarting the demo finds the cards it made before and leaves
them (and whatever was done to them since) as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..errors import CardNotFoundError
from ..model import TEMPLATE_FILE, CardTemplate, Holder
from ..service import StampService, utcnow

logger = logging.getLogger(__name__)
push_logger = logging.getLogger("passkit_stamps.web.push")


@dataclass(frozen=True)
class DemoCard:
    """A sample card: its template, serial, holder, language and visits (stamps per visit)."""

    template_id: str
    serial: str
    holder: Holder
    visits: tuple[int, ...]
    language: str | None = None
    #: Redeem the first voucher afterwards (to show a redeemed reward).
    redeem_first: bool = False


DEMO_CARDS: tuple[DemoCard, ...] = (
    DemoCard("coffee", "DEMO-COFFEE-1", Holder(name="Ada Lovelace"), visits=(1, 2)),
    DemoCard(
        "coffee",
        "DEMO-COFFEE-2",
        Holder(name="Alan Turing", email="alan@example.com"),
        visits=(2, 3, 3, 1),
    ),
    DemoCard(
        "salon",
        "DEMO-SALON-1",
        Holder(name="Grete Müller"),
        visits=(1,) * 12,
        language="de",
        redeem_first=True,
    ),
)


async def publish_templates(service: StampService, templates_dir: Path) -> list[CardTemplate]:
    """Publish every template folder under ``templates_dir`` (unchanged ones are left alone)."""
    published = []
    for folder in sorted(p for p in templates_dir.iterdir() if (p / TEMPLATE_FILE).is_file()):
        template = CardTemplate.load(folder)
        result = await service.publish_template(template)
        logger.info("template %s: %s", template.key, result.status)
        published.append(template)
    return published


async def prepare_demo(
    service: StampService, templates_dir: Path, cards: Sequence[DemoCard] = DEMO_CARDS
) -> list[str]:
    """Publish the sample templates and issue the sample cards that do not exist yet; the
    serials of the sample cards."""
    templates = {t.id for t in await publish_templates(service, templates_dir)}
    serials = []
    for demo in cards:
        if demo.template_id not in templates:
            continue
        serials.append(demo.serial)
        try:
            await service.get_card(demo.serial)
            continue
        except CardNotFoundError:
            pass
        await _issue(service, demo)
    return serials


async def _issue(service: StampService, demo: DemoCard) -> None:
    # The visits happened over the last days, one a day (templates may have a cool-down), so the
    # card reads like a real one ("last stamp on ...").
    moment = utcnow() - timedelta(days=len(demo.visits) + 1)

    def clock() -> datetime:
        return moment

    seeding = StampService(service.store, clock=clock)
    await seeding.issue_card(
        demo.template_id, demo.holder, serial=demo.serial, language=demo.language
    )
    for n in demo.visits:
        moment += timedelta(days=1)
        await seeding.add_stamps(demo.serial, n)
    if demo.redeem_first:
        details = await seeding.get_card(demo.serial)
        if details.card.vouchers_ready:
            moment += timedelta(hours=1)
            await seeding.redeem_voucher(demo.serial, details.card.vouchers_ready[0].code)
    logger.info("issued demo card %s", demo.serial)


class LoggingPushWorker:
    """Consumes the outbox and logs what a push worker would send (no APNs or Google calls).

    Stands in for the real senders when no push credentials are configured, so the demo's
    outbox does not grow and an integrator sees which devices a change would reach.
    """

    def __init__(self, service: StampService, *, interval: float = 1.0) -> None:
        self.service = service
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> int:
        """Log and remove every pending update; how many there were."""
        total = 0
        while entries := await self.service.pending_updates(limit=100):
            for entry in entries:
                silent = ", silent" if entry.silent else ""
                if entry.platform.value == "apple":
                    tokens = await self.service.push_tokens(entry.serial)
                    push_logger.info(
                        "would push card %s (%s%s) to %d Apple device(s)%s",
                        entry.serial,
                        entry.reason,
                        silent,
                        len(tokens),
                        "".join(f" {t[:8]}…" for t in tokens),
                    )
                else:
                    push_logger.info(
                        "would update the %s pass of card %s (%s%s)",
                        entry.platform.value,
                        entry.serial,
                        entry.reason,
                        silent,
                    )
            total += await self.service.complete_updates(e.id for e in entries)
        self.delivered += total
        return total

    async def _run(self) -> None:
        while True:
            try:
                await self.drain()
            except Exception:  # keep the demo running; the next round retries
                logger.exception("demo push worker failed")
            await asyncio.sleep(self.interval)
