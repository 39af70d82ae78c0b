"""The issued-cards list page by page (issue 11), against an oracle computed in Python from the
cards' rows: every filter the API offers, every sort key in both directions, by cursor and by
offset, on both ways a keyset page can run (walking the sort index past the cards that do not
match, or looking a sparse filter's matches up and sorting them: forced here by moving the
sparse threshold), and the plans: a page of the whole list, of a state or of a template is one
index range, never a sort of the table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Clock
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.service.reads import SORT_KEYS
from passkit_stamps.store import search
from passkit_stamps.store.schema import card_platforms, cards, holders, vouchers

#: A few names, repeated (ties broken by the holder), and no name at all (sorted last).
NAMES = ["Ann", "Bob", None, "Cy", "Ann", "Dee", "bob", None, "Eve", "Ann"]


async def _seed(service: StampService, now: datetime) -> None:
    """34 cards of both templates: stamps and none, names and none, saved in wallets, vouchers
    ready, voided, stored expired, due to expire (not swept yet), one deleted."""
    for i in range(34):
        template = "salon" if i % 3 == 2 else "coffee"
        serial = (
            await service.issue_card(template, Holder(name=NAMES[i % len(NAMES)]))
        ).card.serial
        if i % 4:
            await service.add_stamps(serial, 1 if template == "salon" else 1 + i % 3)
        if i % 5 == 1:
            await service.record_platform(serial, "apple", True)
        if i % 7 == 3:
            await service.record_platform(serial, "google", True)
        if i % 6 == 4:
            await service.issue_coupon(serial, "Cake")
        if i % 6 == 5:
            await service.void_card(serial)
        if i == 33:
            await service.delete_card(serial)
        async with service.store.write() as conn:
            if i % 9 == 7:  # stored expired (the sweep ran)
                await conn.execute(
                    cards.update().where(cards.c.serial == serial).values(state="expired")
                )
            if i % 8 == 6:  # past its expiry time, not swept yet: reads as expired
                await conn.execute(
                    cards.update()
                    .where(cards.c.serial == serial)
                    .values(expires_at=now - timedelta(days=1))
                )


@dataclass(frozen=True)
class Row:
    serial: str
    holder_id: int
    name: str | None
    template_id: str
    stamps: int
    state: str
    created_at: datetime
    last_stamp_at: datetime | None
    search_text: str
    platforms: frozenset[str]
    ready: int


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def _rows(service: StampService, now: datetime) -> list[Row]:
    """Every live card as the store holds it, read without the list's code."""
    async with service.store.read() as conn:
        found = (
            (
                await conn.execute(
                    sa.select(cards, holders.c.name)
                    .join(holders, holders.c.id == cards.c.holder_id)
                    .where(cards.c.deleted_at.is_(None))
                )
            )
            .mappings()
            .all()
        )
        saved = (await conn.execute(sa.select(card_platforms))).mappings().all()
        ready = (
            await conn.execute(sa.select(vouchers.c.serial).where(vouchers.c.redeemed_at.is_(None)))
        ).all()
    out = []
    for r in found:
        expires = _utc(r["expires_at"])
        due = r["state"] in ("active", "completed") and expires is not None and expires <= now
        out.append(
            Row(
                serial=r["serial"],
                holder_id=r["holder_id"],
                name=r["name"],
                template_id=r["template_id"],
                stamps=r["stamps"],
                state="expired" if due else r["state"],
                created_at=_utc(r["created_at"]) or r["created_at"],
                last_stamp_at=_utc(r["last_stamp_at"]),
                search_text=r["search_text"],
                platforms=frozenset(p["platform"] for p in saved if p["serial"] == r["serial"]),
                ready=sum(1 for (s,) in ready if s == r["serial"]),
            )
        )
    return out


#: Filters as list_cards takes them, each with the oracle's test of a row.
FILTERS: dict[str, tuple[dict[str, Any], Any]] = {
    "all": ({}, lambda r: True),
    "active": ({"state": "active"}, lambda r: r.state == "active"),
    "expired": ({"state": "expired"}, lambda r: r.state == "expired"),
    "voided": ({"state": "voided"}, lambda r: r.state == "voided"),
    "completed": ({"state": "completed"}, lambda r: r.state == "completed"),
    "voided salon": (
        {"template_id": "salon", "state": "voided"},
        lambda r: r.template_id == "salon" and r.state == "voided",
    ),
    "salon": ({"template_id": "salon"}, lambda r: r.template_id == "salon"),
    "salon active": (
        {"template_id": "salon", "state": "active"},
        lambda r: r.template_id == "salon" and r.state == "active",
    ),
    "apple": ({"platform": "apple"}, lambda r: "apple" in r.platforms),
    "search ann": ({"search": "ANN"}, lambda r: "ann" in r.search_text),
    "search bo": ({"search": "bo"}, lambda r: "bo" in r.search_text),
    "2+ stamps": ({"min_stamps": 2}, lambda r: r.stamps >= 2),
    "vouchers": ({"has_vouchers_ready": True}, lambda r: r.ready > 0),
    "no vouchers": ({"has_vouchers_ready": False}, lambda r: r.ready == 0),
}


def _expected(rows: list[Row], sort: str, keep: Any) -> list[str]:
    key = sort.removeprefix("-")
    descending = sort.startswith("-")
    chosen = [r for r in rows if keep(r)]
    if key == "serial":
        return sorted((r.serial for r in chosen), reverse=descending)
    tie = (lambda r: r.holder_id) if key == "name" else (lambda r: r.serial)
    valued = [r for r in chosen if getattr(r, key) is not None]
    nulls = [r for r in chosen if getattr(r, key) is None]
    valued.sort(key=lambda r: (getattr(r, key), tie(r)), reverse=descending)
    nulls.sort(key=tie, reverse=descending)  # NULLs last in both directions
    return [r.serial for r in valued + nulls]


@pytest.fixture(params=["walk", "look up"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way the pages that choose run: every filter dense (walk the sort index) or
    every filter sparse (look the matches up and sort them)."""
    threshold = 0 if request.param == "walk" else 10**6
    monkeypatch.setattr(search, "SPARSE_MATCHES", threshold)
    monkeypatch.setattr(search, "SPARSE_NAME_MATCHES", threshold)
    return str(request.param)


@pytest.mark.parametrize("name", list(FILTERS))
async def test_cursor_and_offset_pages_match_the_oracle(
    service: StampService, clock: Clock, way: str, name: str
) -> None:
    await _seed(service, clock.now)
    rows = await _rows(service, clock.now)
    given, keep = FILTERS[name]
    for key in SORT_KEYS:
        for sort in (key, "-" + key):
            expected = _expected(rows, sort, keep)
            walked: list[str] = []
            page = await service.list_cards(sort=sort, limit=4, count_limit=1000, **given)
            assert page.total == len(expected), (sort, way)
            walked += [c.serial for c in page.items]
            while page.next_cursor is not None:
                page = await service.list_cards(
                    sort=sort, limit=4, cursor=page.next_cursor, **given
                )
                walked += [c.serial for c in page.items]
            assert walked == expected, (sort, way)
            by_offset: list[str] = []
            for offset in range(0, len(expected) + 4, 4):
                page = await service.list_cards(sort=sort, limit=4, offset=offset, **given)
                assert page.total == len(expected)
                by_offset += [c.serial for c in page.items]
            assert by_offset == expected, (sort, way)


async def test_the_page_rows_carry_platforms_vouchers_and_read_states(
    service: StampService, clock: Clock, way: str
) -> None:
    await _seed(service, clock.now)
    rows = {r.serial: r for r in await _rows(service, clock.now)}
    for given in ({}, {"state": "expired"}, {"search": "ann"}):
        page = await service.list_cards(sort="name", limit=500, **given)
        for card in page.items:
            row = rows[card.serial]
            assert {p.value for p in card.platforms} == row.platforms
            assert card.vouchers_ready == row.ready
            assert card.state.value == row.state
            assert card.holder.name == row.name


@contextmanager
def _plans(dialect: str) -> Iterator[list[tuple[str, list[str]]]]:
    """The plan of every SELECT run meanwhile (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN
    with sorts and sequential scans priced out, so a Sort left in the plan is one no index can
    avoid), taken on the same connection just before the statement runs."""
    found: list[tuple[str, list[str]]] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            return
        if dialect == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            found.append((statement, [str(r[3]) for r in cursor.fetchall()]))
            return
        for setting in ("enable_sort", "enable_seqscan", "enable_bitmapscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute("EXPLAIN " + statement, parameters)
        found.append((statement, [str(r[0]) for r in cursor.fetchall()]))
        for setting in ("enable_sort", "enable_seqscan", "enable_bitmapscan"):
            cursor.execute(f"RESET {setting}")

    sa.event.listen(sa.Engine, "before_cursor_execute", explain)
    try:
        yield found
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", explain)


@pytest.mark.parametrize(
    "given",
    [{}, {"state": "active"}, {"state": "expired"}, {"state": "voided"}, {"template_id": "salon"}],
    ids=["all", "active", "expired", "voided", "salon"],
)
async def test_pages_of_a_state_or_template_are_index_ranges(
    service: StampService, clock: Clock, given: dict[str, Any]
) -> None:
    """Without statistics (a store nobody analyzed, as in the field), every page of the whole
    list in every order, of a state or a template in the default order (created), and of a
    state other than active by stamps, last stamp or serial (step 9's partial indexes), and of
    a template by stamps or last stamp (step 10's) reads one index range per step: no sort, no
    scan of the cards."""
    await _seed(service, clock.now)
    dialect = service.store.engine.dialect.name
    inactive = given.get("state") not in (None, "active") and "template_id" not in given
    template = "template_id" in given
    for key in SORT_KEYS:
        by_template = template and key in ("stamps", "last_stamp_at")
        if key != "created_at" and given and not (inactive and key != "name") and not by_template:
            continue
        for sort in (key, "-" + key):
            first = await service.list_cards(sort=sort, limit=4, **given)
            assert first.next_cursor is not None
            with _plans(dialect) as plans:
                await service.list_cards(sort=sort, limit=4, cursor=first.next_cursor, **given)
            assert plans, sort
            for statement, plan in plans:
                text = " | ".join(plan)
                merging = "UNION ALL" in statement
                if merging:
                    # Expired: the cards stored so (one range) and those due but not swept
                    # (their expiry index), each at most a page, merged by a sort of those.
                    state_index = "ix_cards_live_state_" if key == "created_at" else "inactive"
                    assert state_index in text and "ix_cards_expiring" in text, text
                elif inactive and key != "created_at":
                    assert "ix_cards_inactive_" in text, (sort, given, text)
                elif by_template and dialect == "sqlite":
                    # PostgreSQL prices a walk of the primary key the same over a few rows:
                    # its choice at a million cards is bench_store.py's (docs/storage.md).
                    assert "ix_cards_live_template_id_" in text, (sort, given, text)
                if dialect == "sqlite":
                    assert merging or "TEMP B-TREE" not in text, (sort, given, text)
                    assert "SCAN cards" not in text, (sort, given, text)
                    assert "SCAN holders" not in text, (sort, given, text)
                else:
                    # The merge of a state's two ranges sorts at most two pages of rows.
                    sorts = [line for line in plan if "Sort" in line and "Sort Key" not in line]
                    assert not sorts or merging, (sort, given, text)
                    assert "Seq Scan on cards" not in text, (sort, given, text)
