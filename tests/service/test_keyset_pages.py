"""Keyset pages (issue 11): walking a list by ``next_cursor`` gives exactly what offset pages
give, in every sort order and direction; a forged or damaged cursor is a CardInputError."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passkit_stamps.errors import CardInputError, CardNotFoundError
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService, cursors
from passkit_stamps.service.reads import SORT_KEYS
from passkit_stamps.service.results import CardSummary


async def _seed(service: StampService) -> list[str]:
    serials = []
    for i in range(23):
        # Some cards without a name and without a stamp: NULLs in the nullable sort keys;
        # repeated names and stamp counts: ties broken by the serial.
        holder = Holder(name=None if i % 5 == 0 else f"Name {i % 4}")
        serial = (await service.issue_card("coffee", holder)).card.serial
        if i % 3:
            await service.add_stamps(serial, 1 + i % 2)
        if i % 4 == 1:  # saved in a wallet, a voucher ready: the page's other columns
            await service.record_platform(serial, "apple", True)
            await service.issue_coupon(serial, "Cake")
        serials.append(serial)
    return serials


async def test_cursor_pages_walk_the_list_as_offset_pages_do(service: StampService) -> None:
    serials = await _seed(service)
    for key in SORT_KEYS:
        for sort in (key, "-" + key):
            expected = list((await service.list_cards(sort=sort, limit=500)).items)
            assert sorted(c.serial for c in expected) == sorted(serials)
            assert any(c.platforms for c in expected) and any(c.vouchers_ready for c in expected)
            walked: list[CardSummary] = []
            page = await service.list_cards(sort=sort, limit=4)
            walked += page.items
            while page.next_cursor is not None:
                assert page.has_more
                page = await service.list_cards(sort=sort, limit=4, cursor=page.next_cursor)
                assert page.total == -1
                walked += page.items
            assert not page.has_more
            assert walked == expected, sort


async def test_cursor_pages_keep_the_filters(service: StampService) -> None:
    await _seed(service)
    first = await service.list_cards(search="name 1", limit=2, sort="serial")
    expected = [c.serial for c in (await service.list_cards(search="name 1", limit=500)).items]
    walked = [c.serial for c in first.items]
    page = first
    while page.next_cursor:
        page = await service.list_cards(
            search="name 1", limit=2, sort="serial", cursor=page.next_cursor
        )
        walked += [c.serial for c in page.items]
    assert sorted(walked) == sorted(expected)


async def test_journal_and_history_by_cursor(service: StampService) -> None:
    serials = await _seed(service)
    for newest_first in (True, False):
        everything = await service.journal(limit=500, newest_first=newest_first)
        walked = []
        page = await service.journal(limit=7, newest_first=newest_first)
        walked += [e.id for e in page.items]
        while page.next_cursor:
            page = await service.journal(
                limit=7, newest_first=newest_first, cursor=page.next_cursor
            )
            walked += [e.id for e in page.items]
        assert walked == [e.id for e in everything.items]
    serial = serials[1]
    history = [e.id for e in await service.card_history(serial)]
    walked = []
    page = await service.card_history_page(serial, limit=1)
    walked += [e.id for e in page.items]
    while page.next_cursor:
        page = await service.card_history_page(serial, limit=1, cursor=page.next_cursor)
        walked += [e.id for e in page.items]
    assert walked == history
    with pytest.raises(CardNotFoundError):
        await service.card_history_page("NO-SUCH-CARD")


def _forge(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x" * 700,
        "!!!",
        "bm90IGpzb24",  # "not json"
        _forge({"c1": 1}),
        _forge(["c1", "created_at", True, "2026-01-01T00:00:00+00:00"]),  # too short
        _forge(["c1", "stamps", True, 3, "ABC"]),  # another sort
        _forge(["c1", "created_at", "yes", "2026-01-01T00:00:00+00:00", "ABC"]),
        _forge(["c1", "created_at", True, "2026-01-01T00:00:00", "ABC"]),  # no zone
        _forge(["c1", "created_at", True, 12, "ABC"]),
        _forge(["c1", "created_at", True, None, "ABC"]),  # NULL on a NOT NULL key
        _forge(["c1", "created_at", True, "2026-01-01T00:00:00+00:00", "a b\x00"]),
        _forge(["j1", True, 5]),  # a journal cursor for cards
        12,
    ],
)
async def test_a_forged_cursor_is_a_typed_error(service: StampService, cursor: object) -> None:
    await _seed(service)
    with pytest.raises(CardInputError, match="cursor"):
        await service.list_cards(cursor=cursor, sort="-created_at")  # type: ignore[arg-type]


async def test_forged_journal_cursors_and_offsets(service: StampService) -> None:
    for cursor in (_forge(["j1", False, 5]), _forge(["j1", True, -1]), _forge(["j1", True, 1.5])):
        with pytest.raises(CardInputError, match="cursor"):
            await service.journal(cursor=cursor)
    with pytest.raises(CardInputError, match="cursor"):
        await service.journal(cursor=cursors.journal_cursor(True, 3), offset=5)
    with pytest.raises(CardInputError, match="cursor"):
        await service.list_cards(cursor=cursors.card_cursor("serial", False, "A", "A"), offset=1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: _b64(b)))
def test_any_text_is_a_position_or_a_cursor_error(text: str) -> None:
    for key in SORT_KEYS:
        with contextlib.suppress(CardInputError):
            cursors.read_card_cursor(text, key, True)
    with contextlib.suppress(CardInputError):
        cursors.read_journal_cursor(text, True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
