"""Issue 12 item 17: the card page's facts rows, the German page's heading and the next
reward's unit; and a merchant text that fails to render falls back like pass.json does."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import pytest

from passkit_stamps.model import Card, CardTemplate
from passkit_stamps.web.cardpage import CardPageLinks, page_context, render_card_page

LINKS = CardPageLinks(stamp_grid="/g.png", logo="/l.png", apple_pass="/p.pkpass")


def _card(template: CardTemplate, **changes: object) -> Card:
    values: dict[str, object] = {
        "serial": "113772",
        "template_id": template.id,
        "template_version": template.version,
        "created_at": datetime(2026, 5, 1, tzinfo=UTC),
        "authentication_token": "t" * 32,
    }
    values.update(changes)
    return Card.model_validate(values)


def _facts(html: str) -> dict[str, str]:
    """The facts list as {dt: dd}, markup stripped."""
    block = html.split('<dl class="facts">', 1)[1].split("</dl>", 1)[0]
    return {
        dt.strip(): dd.strip()
        for dt, dd in re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", block, re.S)
    }


def test_no_fact_row_has_an_empty_value(coffee: CardTemplate) -> None:
    card = _card(
        coffee,
        stamps=2,
        last_stamp_at=datetime(2026, 5, 12, 9, tzinfo=UTC),
        expires_at=datetime(2030, 5, 12, 9, tzinfo=UTC),
    )
    html = render_card_page(coffee, card, LINKS)
    assert "<dd></dd>" not in html
    facts = _facts(html)
    assert facts["Last stamp"] == "12 May 2026"
    assert facts["Valid until"] == "12 May 2030"
    assert all(facts.values()), facts


def test_german_fact_rows(salon: CardTemplate) -> None:
    card = _card(
        salon,
        stamps=2,
        language="de",
        last_stamp_at=datetime(2026, 3, 2, tzinfo=UTC),
        expires_at=datetime(2030, 3, 2, tzinfo=UTC),
    )
    facts = _facts(render_card_page(salon, card, LINKS))
    assert facts["Letzter Stempel"] == "2. März 2026"
    assert facts["Gültig bis"] == "2. März 2030"


def test_german_salon_page_has_no_english_heading(salon: CardTemplate) -> None:
    html = render_card_page(salon, _card(salon, language="de", stamps=2), LINKS)
    heading = re.search(r"<h1>(.*?)</h1>", html, re.S)
    assert heading is not None
    assert salon.name not in heading.group(1)  # "Free Beauty Service" is English
    assert heading.group(1) == "Stempelkarte"
    assert salon.name not in html.split("<title>")[1].split("</title>")[0]
    # The template's own language keeps the template's name.
    english = render_card_page(salon, _card(salon, stamps=2), LINKS)
    assert f"<h1>{salon.name}</h1>" in english


@pytest.mark.parametrize(
    ("language", "stamps", "expected"),
    [
        ("de", 2, "Gratis Haarkur in 3 Stempeln"),
        ("de", 4, "Gratis Haarkur in 1 Stempel"),
        ("en", 2, "Free hair treatment in 3 stamps"),
        ("en", 4, "Free hair treatment in 1 stamp"),
    ],
)
def test_next_reward_has_a_unit(
    salon: CardTemplate, language: str, stamps: int, expected: str
) -> None:
    card = _card(salon, language=language, stamps=stamps)
    assert page_context(salon, card, LINKS)["next_reward"] == expected
    assert expected in render_card_page(salon, card, LINKS)


def test_merchant_next_reward_text_is_kept(coffee: CardTemplate) -> None:
    # The coffee template writes its own next-reward text (with its unit): the page uses it.
    assert page_context(coffee, _card(coffee, stamps=1), LINKS)["next_reward"] == (
        "Free coffee in 7 stamps"
    )


def test_a_failing_text_falls_back_like_the_pass(
    coffee: CardTemplate, caplog: pytest.LogCaptureFixture
) -> None:
    # A text stored before the stricter checks (model_copy skips validation): the page shows
    # the built-in label or the text without markup, as pass.json does, instead of nothing.
    texts = coffee.texts["en"].model_copy(
        update={"progress_label": "{{ remainig }} left", "terms": "Terms for {{ nope }} you."}
    )
    broken = coffee.model_copy(update={"texts": {"en": texts}})
    with caplog.at_level(logging.WARNING):
        ctx = page_context(broken, _card(broken, stamps=1), LINKS)
    assert ctx["progress_label"] == "Stamps"
    assert ctx["terms"] == "Terms for you."
