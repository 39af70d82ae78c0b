"""A template stored before the stricter text checks still loads from the store (its texts fall
back when served) — the rules are still checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from passkit_stamps.errors import TemplateError
from passkit_stamps.model import Card, CardTemplate, card_text, text_context
from passkit_stamps.store.codec import EncodedTemplate, decode_template


def _stored_before_the_checks(coffee: CardTemplate) -> EncodedTemplate:
    # model_copy skips validation, as the texts of a template stored by an older release did.
    texts = coffee.texts["en"].model_copy(
        update={"next_reward_value": "{{ remainig }} {{ holder_name|truncate(1) }}"}
    )
    return EncodedTemplate(coffee.model_copy(update={"texts": {"en": texts}}))


def test_decode_loads_a_template_whose_text_no_longer_passes(coffee: CardTemplate) -> None:
    encoded = _stored_before_the_checks(coffee)
    template = decode_template(encoded.content, encoded.images)
    assert template.texts["en"].next_reward_value == "{{ remainig }} {{ holder_name|truncate(1) }}"
    # Served, the text falls back to its built-in label instead of failing.
    card = Card(
        serial="S1",
        template_id=template.id,
        template_version=template.version,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        authentication_token="t" * 32,
        stamps=1,
    )
    ctx = text_context(template, card, "en")
    assert card_text(template, "next_reward_value", "en", ctx) == "Free coffee in 7"


def test_decode_still_checks_the_rules(coffee: CardTemplate) -> None:
    encoded = _stored_before_the_checks(coffee)
    data = json.loads(encoded.content)
    data["stamps_required"] = 99
    with pytest.raises(TemplateError, match="stamps_required"):
        decode_template(json.dumps(data), encoded.images)
