"""Journal pages (issue 11) against the journal's rows read directly: every filter, both orders,
by cursor and by offset; several types at once are merged from one range per type; a capped
count says "more"."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.store.schema import events

from .test_card_pages import _plans


async def _seed(service: StampService) -> list[str]:
    serials = []
    for i in range(12):
        template = "salon" if i % 3 == 2 else "coffee"
        serial = (await service.issue_card(template, Holder(name=f"N{i}"))).card.serial
        serials.append(serial)
        if i % 2:
            await service.add_stamps(serial, 1)
        if i % 4 == 1:
            await service.issue_coupon(serial, "Cake")
        if i % 5 == 3:
            await service.void_card(serial)
    # Interleave: more stamps after the others were issued (ids of one type far apart).
    for serial in serials[::3]:
        if serial != serials[3]:
            await service.add_stamps(serial, 1)
    return serials


async def _ids(service: StampService, keep: Any, newest_first: bool) -> list[int]:
    async with service.store.read() as conn:
        rows = (await conn.execute(sa.select(events))).mappings().all()
    return sorted((int(r["id"]) for r in rows if keep(r)), reverse=newest_first)


CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "all": ({}, lambda r: True),
    "one type": ({"types": "stamp_added"}, lambda r: r["type"] == "stamp_added"),
    "three types": (
        {"types": ["card_voided", "stamp_added", "coupon_issued"]},
        lambda r: r["type"] in ("card_voided", "stamp_added", "coupon_issued"),
    ),
    "types and template": (
        {"types": ["card_issued", "stamp_added"], "template_id": "salon"},
        lambda r: r["type"] in ("card_issued", "stamp_added") and r["template_id"] == "salon",
    ),
    "template": ({"template_id": "coffee"}, lambda r: r["template_id"] == "coffee"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_journal_pages_match_the_rows(service: StampService, case: str) -> None:
    await _seed(service)
    given, keep = CASES[case]
    for newest_first in (True, False):
        expected = await _ids(service, keep, newest_first)
        page = await service.journal(limit=3, newest_first=newest_first, **given)
        assert page.total == len(expected)
        walked = [e.id for e in page.items]
        while page.next_cursor is not None:
            page = await service.journal(
                limit=3, newest_first=newest_first, cursor=page.next_cursor, **given
            )
            assert page.total == -1
            walked += [e.id for e in page.items]
        assert walked == expected, (case, newest_first)
        by_offset: list[int] = []
        for offset in range(0, len(expected) + 3, 3):
            page = await service.journal(limit=3, offset=offset, newest_first=newest_first, **given)
            assert page.total == len(expected)
            by_offset += [e.id for e in page.items]
        assert by_offset == expected, (case, newest_first)


async def test_a_capped_count_says_more(service: StampService) -> None:
    await _seed(service)
    everything = await service.journal(limit=500)
    assert everything.total_exact and everything.total == len(everything.items) > 12
    page = await service.journal(limit=5, count_limit=10)
    assert not page.total_exact and page.total == 10 and page.has_more
    small = await service.journal(limit=5, types="card_voided", count_limit=10)
    assert small.total_exact and small.total == len(small.items) <= 5
    wide = await service.journal(limit=5, count_limit=1000)
    assert wide.total_exact and wide.total == everything.total


@pytest.mark.parametrize(
    "given",
    [{}, {"types": "stamp_added"}, {"types": ["card_voided", "stamp_added"]}, {"serial": None}],
    ids=["all", "one type", "two types", "one card"],
)
async def test_journal_pages_are_index_ranges(service: StampService, given: dict[str, Any]) -> None:
    """Without statistics, as in the field: a cursor page of the journal, of a type, of several
    types (one range each) or of one card (its history) reads index ranges, never a scan of
    the journal or a sort of more than the merged pages."""
    serials = await _seed(service)
    if "serial" in given:
        given = {"serial": serials[1]}
    dialect = service.store.engine.dialect.name
    for newest_first in (True, False):
        first = await service.journal(limit=2, newest_first=newest_first, **given)
        assert first.next_cursor is not None
        with _plans(dialect) as plans:
            await service.journal(
                limit=2, newest_first=newest_first, cursor=first.next_cursor, **given
            )
        assert plans
        for statement, plan in plans:
            text = " | ".join(plan)
            merging = "UNION ALL" in statement
            if dialect == "sqlite":
                assert "SCAN events" not in text, text
                assert merging or "TEMP B-TREE" not in text, text
            else:
                assert "Seq Scan on events" not in text, text
                sorts = [line for line in plan if "Sort" in line and "Sort Key" not in line]
                assert merging or not sorts, text
