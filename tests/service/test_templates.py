"""Template versions: publish, design-only updates, rules changes, migration."""

from __future__ import annotations

import pytest

from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import TemplateError, TemplateNotFoundError
from passkit_stamps.model import CardState, CardTemplate, Holder
from passkit_stamps.service import StampService

from .conftest import counts, outbox_rows, variant


async def test_round_trip_keeps_every_field_and_image(
    service: StampService, coffee: CardTemplate, salon: CardTemplate
) -> None:
    assert await service.get_template("coffee") == coffee
    assert await service.get_template("salon", 1) == salon
    assert (await service.get_template("salon")).design.stamp_filled == salon.design.stamp_filled
    assert [(t.id, t.version, t.name) for t in await service.list_templates()] == [
        ("coffee", 1, "Free Coffee"),
        ("salon", 1, salon.name),
    ]
    with pytest.raises(TemplateNotFoundError):
        await service.get_template("tea")


async def test_round_trip_keeps_the_default_language(
    service: StampService, salon: CardTemplate
) -> None:
    # Dict equality ignores order, but the first language is the template's default.
    fresh = StampService(service.store)  # no in-memory template cache
    stored = await fresh.get_template("salon", 1)
    assert stored.languages == salon.languages == ("en", "de")
    assert stored.default_language == "en"


async def test_identical_publish_is_a_no_op(service: StampService, coffee: CardTemplate) -> None:
    before = await counts(service.store)
    result = await service.publish_template(coffee)
    assert (result.status, result.cards_updated) == ("unchanged", 0)
    assert await counts(service.store) == before


async def test_design_change_updates_existing_cards_silently(
    service: StampService, coffee: CardTemplate
) -> None:
    saved = (await service.issue_card("coffee", Holder(name="A"))).card.serial
    unsaved = (await service.issue_card("coffee", Holder(name="B"))).card.serial
    await service.record_platform(saved, Platform.APPLE, True)
    await service.record_platform(saved, Platform.GOOGLE, True)
    tags = {s: (await service.get_card(s)).change_tag for s in (saved, unsaved)}
    redesigned = variant(
        coffee,
        design={**coffee.design.model_dump(), "background_color": "#102030"},
        name="Free Coffee!",
    )
    result = await service.publish_template(redesigned)
    assert (result.status, result.cards_updated) == ("design_updated", 2)
    for serial in (saved, unsaved):
        details = await service.get_card(serial)
        assert details.change_tag > tags[serial]
        assert details.template.design.background_color.hex() == "#102030"
        assert details.template_key == "coffee@v1"
    rows = await outbox_rows(service.store, saved)
    assert {(r["platform"], r["silent"], r["reason"]) for r in rows} == {
        ("apple", True, "template_design"),
        ("google", True, "template_design"),
    }
    assert await outbox_rows(service.store, unsaved) == []
    assert (await service.get_template("coffee")).name == "Free Coffee!"


async def test_rules_change_needs_a_new_version(
    service: StampService, coffee: CardTemplate
) -> None:
    before = await counts(service.store)
    for changed in (
        variant(coffee, limits={"max_stamps_per_visit": 5}),
        variant(coffee, expiry={"kind": "none"}),
        variant(coffee, after_last_reward="new_round"),
        variant(coffee, rewards=[{"at": 8, "title": "Free tea"}]),
    ):
        with pytest.raises(TemplateError, match=r"as version 2"):
            await service.publish_template(changed)
    assert await counts(service.store) == before
    assert await service.get_template("coffee") == coffee


async def test_versions_only_move_forward(service: StampService, coffee: CardTemplate) -> None:
    await service.publish_template(variant(coffee, version=3))
    with pytest.raises(TemplateError, match="greater than 3"):
        await service.publish_template(variant(coffee, version=2))
    assert (await service.get_template("coffee")).version == 3


async def test_new_version_is_for_new_cards_and_migration_is_explicit(
    service: StampService, coffee: CardTemplate
) -> None:
    old = (await service.issue_card("coffee", Holder(name="Old"))).card.serial
    await service.add_stamps(old, 3)
    gone = (await service.issue_card("coffee")).card.serial
    await service.void_card(gone)
    await service.record_platform(old, Platform.APPLE, True)
    v2 = variant(
        coffee,
        version=2,
        stamps_required=10,
        rewards=[{"at": 5, "title": "Cookie"}, {"at": 10, "title": "Free coffee"}],
    )
    assert (await service.publish_template(v2)).status == "created"
    new = (await service.issue_card("coffee")).card
    assert new.template_version == 2
    assert (await service.get_card(old)).template_key == "coffee@v1"

    tag = (await service.get_card(old)).change_tag
    assert await service.migrate_cards("coffee", 2) == 1  # the voided card stays on v1
    details = await service.get_card(old)
    assert details.template_key == "coffee@v2"
    assert (details.card.stamps, details.progress.required) == (3, 10)
    assert details.next_reward == "Cookie"
    assert details.change_tag > tag
    assert (await service.get_card(gone)).card.state is CardState.VOIDED
    assert (await service.get_card(gone)).template_key == "coffee@v1"
    last = (await service.card_history(old))[-1]
    assert last.type is EventType.STAMPS_ADJUSTED
    assert last.data["migrated_from"] == 1 and last.data["to"] == 2
    assert (await outbox_rows(service.store, old))[-1]["reason"] == "migrated"
    assert await service.migrate_cards("coffee", 2) == 0
    with pytest.raises(TemplateNotFoundError):
        await service.migrate_cards("coffee", 9)
