"""A NUL character in input is refused with a typed error on both backends.

PostgreSQL cannot store NUL in text (asyncpg raises a bare DBAPIError) and SQLite's FTS5 query
parser chokes on it, so these inputs used to escape as untyped database errors (HTTP 500).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from passkit_stamps import engine
from passkit_stamps.errors import CardInputError, CardNotFoundError
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.service import StampService


async def test_search_with_nul_is_refused(service: StampService) -> None:
    await service.issue_card("coffee", Holder(name="Ann"))
    for text in ("a\x00b", "ann\x00"):
        with pytest.raises(CardInputError):
            await service.list_cards(search=text)


async def test_serial_with_nul_is_not_found(service: StampService) -> None:
    serial = "AB\x00C"
    with pytest.raises(CardNotFoundError):
        await service.get_card(serial)
    with pytest.raises(CardNotFoundError):
        await service.card_history(serial)
    with pytest.raises(CardNotFoundError):
        await service.add_stamps(serial)
    assert await service.card_for_pass("pass.example.stamps", serial) is None


async def test_pass_type_with_nul_is_refused(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    with pytest.raises(CardInputError):
        await service.card_for_pass("pass.\x00", serial)


async def test_texts_with_nul_are_refused_and_write_nothing(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    with pytest.raises(CardInputError):
        await service.issue_coupon(serial, "Gi\x00ft")
    with pytest.raises(CardInputError):
        await service.issue_coupon(serial, "Gift", description="a\x00b")
    with pytest.raises(CardInputError):
        await service.send_message(serial, "hello\x00")
    assert (await service.get_card(serial)).vouchers == ()


def test_engine_refuses_nul_in_free_texts(coffee: CardTemplate) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    card = engine.issue_card(coffee, Holder(), now=now).card
    with pytest.raises(CardInputError):
        engine.send_message(coffee, card, "a\x00", now=now)
    with pytest.raises(CardInputError):
        engine.issue_coupon(coffee, card, "x\x00y", now=now)
    # Newlines stay allowed in a message.
    assert engine.send_message(coffee, card, "line 1\nline 2", now=now).card.message
