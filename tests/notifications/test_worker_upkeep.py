"""The delivery worker's housekeeping runs the notifications' upkeep: the expiry sweep, the
budget's pruning and the broadcasts a crash interrupted."""

from __future__ import annotations

from conftest import Clock  # tests/conftest.py
from passkit_stamps.delivery.runner import _expiry_sweep
from passkit_stamps.engine import Platform
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService

from .conftest import spent_rows


async def test_the_sweep_prunes_the_budget_and_resumes_campaigns(
    service: StampService, clock: Clock
) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.APPLE, True)
    assert (await service.send_message(serial, "Hello")).notified
    campaign_id = await service.start_campaign("Spring menu", {})
    clock.advance(hours=25)
    sweep = _expiry_sweep(service)
    assert sweep is not None
    await sweep()
    assert await spent_rows(service.store) == 1  # the campaign's notification, just spent
    report = await service.campaign_report(campaign_id)
    assert report.finished and report.cards == 1 and report.notified == 1
