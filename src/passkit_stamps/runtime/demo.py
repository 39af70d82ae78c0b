"""The served demo: sample templates published, a few sample cards, and the real delivery
path: the worker pushes over HTTP/2 to a fake APNs on loopback, which logs what it receives.

:func:`prepare_demo` is idempotent: restarting the demo finds the cards it made before and leaves
them (and whatever was done to them since) as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CardNotFoundError
from ..model import TEMPLATE_FILE, CardTemplate, Holder
from ..service import StampService, utcnow

if TYPE_CHECKING:
    from ..delivery.runner import DeliveryConfig
    from ..testing import FakeAPNs
    from .devpki import DevPKI

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


@asynccontextmanager
async def demo_delivery(
    pki: DevPKI, *, poll_interval: float = 0.5
) -> AsyncIterator[DeliveryConfig]:
    """The demo's real delivery path: a fake APNs on loopback (``passkit_stamps.testing``) that
    requires the development Pass Type ID certificate like APNs does, and the settings for a
    worker that sends real HTTP/2 pushes to it. Each push is logged as the fake received it
    (logger ``passkit_stamps.web.push``: token, topic, status)."""
    from ..delivery.runner import AppleDelivery, DeliveryConfig
    from ..testing import FakeAPNs

    async with FakeAPNs(client_ca_pem=pki.wwdr_cert.read_bytes()) as apns:
        logger.info("fake APNs listening on %s:%d", apns.host, apns.port)
        log = PushLog(apns)
        tail = asyncio.get_running_loop().create_task(log.follow())
        try:
            yield DeliveryConfig(
                apple=AppleDelivery(
                    credentials=pki.credentials(), host=apns.host, port=apns.port, ca=apns.ca_file
                ),
                poll_interval=poll_interval,
            )
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
            log.flush()


class PushLog:
    """Logs each push a fake APNs received, once."""

    def __init__(self, apns: FakeAPNs) -> None:
        self.apns = apns
        self.seen = 0

    def flush(self) -> None:
        pushes = self.apns.pushes
        for push in pushes[self.seen :]:
            push_logger.info(
                "fake APNs received a push for device token %s… topic %s: %d %s",
                push.token[:8],
                push.topic,
                push.status,
                push.reason or "OK",
            )
        self.seen = len(pushes)

    async def follow(self, interval: float = 0.1) -> None:
        while True:
            self.flush()
            await asyncio.sleep(interval)
