"""Cards that exist only to be shown: ``build``, ``samples`` and the Google commands.

They are made by the engine's own operations (issue, set or add stamps, message, void), so a
preview card is one the service could have produced: random token, expiry, vouchers and all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..model import Card, CardTemplate

# The holder's bounds (model.Holder; tests/cli keeps them in agreement), stated in the options'
# help without importing the model.
MAX_NAME = 200
MAX_EMAIL = 320
MAX_PHONE = 40


def check_stamps(template: CardTemplate, stamps: int) -> None:
    """``--stamps`` in 0..stamps_required: one rule, one exit status (1) for every command."""
    if not 0 <= stamps <= template.stamps_required:
        raise click.ClickException(
            f"--stamps must be 0 to {template.stamps_required} for template {template.key}, "
            f"got {stamps}"
        )


def check_holder_name(name: str | None) -> None:
    if name is not None and not 0 < len(name.strip()) <= MAX_NAME:
        raise click.ClickException(f"--holder-name must be 1 to {MAX_NAME} characters")


def preview_card(
    template: CardTemplate,
    *,
    serial: str,
    stamps: int,
    now: datetime,
    holder_name: str | None = None,
    language: str | None = None,
) -> Card:
    """An active card of ``template`` with ``stamps`` stamps (an adjustment: no vouchers)."""
    from .. import engine
    from ..model import Holder

    check_stamps(template, stamps)
    check_holder_name(holder_name)
    card = engine.issue_card(
        template, Holder(name=holder_name), now=now, serial=serial, language=language
    ).card
    return engine.set_stamps(template, card, stamps, now=now).card


@dataclass(frozen=True)
class Sample:
    """One of the sample cards ``samples`` signs for each template."""

    name: str
    stamps: int
    voided: bool = False
    message: str | None = None


def samples(template: CardTemplate) -> list[Sample]:
    required = template.stamps_required
    some = max(1, required // 2 - 1)
    return [
        Sample("new", 0),
        Sample("progress", some, message="Thanks for visiting us!"),
        Sample("complete", required),  # every reward step reached: its vouchers are issued
        Sample("voided", some, voided=True),
    ]


def sample_card(template: CardTemplate, sample: Sample, now: datetime) -> Card:
    """The card of ``sample`` as its visits made it: issued, then stamped visit by visit (within
    the template's per-visit limit, spaced past its cooldown), the last visit at ``now``."""
    from .. import engine
    from ..model import Holder

    per_visit = min(
        template.limits.max_stamps_per_visit or engine.MAX_STAMPS_PER_ADD,
        engine.MAX_STAMPS_PER_ADD,
    )
    visits = [per_visit] * (sample.stamps // per_visit)
    if sample.stamps % per_visit:
        visits.append(sample.stamps % per_visit)
    gap = timedelta(minutes=(template.limits.cooldown_minutes or 0) + 1)
    at = now - gap * len(visits)
    card = engine.issue_card(
        template, Holder(name="Ada Lovelace"), now=at, serial=f"{template.id}-{sample.name}"
    ).card
    for count in visits:
        at += gap
        card = engine.add_stamps(template, card, count, now=at).card
    if sample.message is not None:
        card = engine.send_message(template, card, sample.message, now=now).card
    if sample.voided:
        card = engine.void_card(template, card, now=now).card
    return card
