"""The paths issue 11's section 3 added to the cards list and the card write: a card's UPDATE sets
only the columns that changed (SQLite rewrites an index whenever one of its columns is set),
pages by name of a state other than active probe step 9's (state, holder) index for each name,
and a search for an e-mail address asks SQLite's FTS5 index for the part before the ``@`` and
checks the whole address on the candidates' rows: the same cards as a plain substring match."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Clock
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService
from passkit_stamps.store import search
from passkit_stamps.store.schema import cards, holders


def _updates(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("UPDATE CARDS")]


class _Statements:
    """Every statement run meanwhile (all engines)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        sa.event.listen(sa.Engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *_: Any) -> None:
        sa.event.remove(sa.Engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)


def _set_clause(statement: str) -> str:
    return statement.upper().split(" SET ", 1)[1].split(" WHERE ", 1)[0]


async def test_a_stamp_sets_only_the_columns_that_changed(service: StampService) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Ann"))).card.serial
    with _Statements() as seen:
        await service.add_stamps(serial)
    (update,) = _updates(seen)
    assigned = _set_clause(update)
    for column in ("STAMPS", "LAST_STAMP_AT", "CHANGE_TAG", "UPDATED_AT"):
        assert column in assigned, update
    for column in ("STATE", "TEMPLATE_ID", "CREATED_AT", "EXPIRES_AT", "SEARCH_TEXT", "HOLDER_ID"):
        assert f"{column} =" not in assigned and f"{column}=" not in assigned, update
    with _Statements() as seen:
        await service.void_card(serial)
    (update,) = _updates(seen)
    assert "STATE" in _set_clause(update), update
    card = (await service.get_card(serial)).card
    assert card.state.value == "voided" and card.stamps == 1


async def test_a_changed_holder_sets_the_search_text(service: StampService) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Lou B"))).card.serial
    with _Statements() as seen:
        await service.update_holder(serial, Holder(name="Bea", email="bea@example.com"))
    (update,) = _updates(seen)
    assert "SEARCH_TEXT" in _set_clause(update), update
    assert "STAMPS" not in _set_clause(update), update
    assert [c.serial for c in (await service.list_cards(search="bea@example")).items] == [serial]
    # "lou b", not "ann b": a card number ending in "ANN" would match the new text
    # ("<serial> bea ...") once in 32^3; L, O and U are not in a card number's alphabet.
    assert (await service.list_cards(search="lou b")).items == ()


def test_the_fts_text_of_an_address_is_its_local_part() -> None:
    assert search._fts_text("c123456@example.com") == "c123456"
    assert search._fts_text("ada.lovelace@example.com") == "lovelace"
    assert search._fts_text("ab@example.com") == "ab@example.com"  # too short: the whole text
    assert search._fts_text("ada lovelace") == "ada lovelace"
    assert search._fts_text("@example.com") == "@example.com"


EMAILS = [
    "ann@example.com",
    "joann@example.com",  # contains the address searched
    "ann@example.com.au",  # contains it too
    "ann@example.co",  # does not
    "ann.b@example.com",
    "b.ann@example.com",
    None,
    "jo.ann@example.com",
]


@pytest.fixture(params=["walk", "look up"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    threshold = 0 if request.param == "walk" else 10**6
    monkeypatch.setattr(search, "SPARSE_MATCHES", threshold)
    monkeypatch.setattr(search, "SPARSE_NAME_MATCHES", threshold)
    return str(request.param)


@pytest.mark.parametrize(
    "text", ["ann@example.com", "ANN@Example.com", "b.ann@example", "o.ann@", "nn@example.com.au"]
)
async def test_an_address_search_finds_the_cards_containing_it(
    service: StampService, way: str, text: str
) -> None:
    serials = []
    for i, email in enumerate(EMAILS * 3):
        card = (await service.issue_card("coffee", Holder(name=f"N{i}", email=email))).card
        serials.append(card.serial)
    async with service.store.read() as conn:
        texts = dict((await conn.execute(sa.select(cards.c.serial, cards.c.search_text))).all())
    wanted = text.lower()
    expected = sorted(s for s in serials if wanted in texts[s])
    assert expected  # the cases find something
    for sort in ("serial", "-created_at", "name"):
        walked: list[str] = []
        page = await service.list_cards(search=text, sort=sort, limit=4, count_limit=1000)
        assert page.total == len(expected), (sort, way)
        walked += [c.serial for c in page.items]
        while page.next_cursor is not None:
            page = await service.list_cards(
                search=text, sort=sort, limit=4, cursor=page.next_cursor
            )
            walked += [c.serial for c in page.items]
        assert sorted(walked) == expected, (sort, way)
        assert len(walked) == len(set(walked))
        exact = await service.list_cards(search=text, sort=sort, limit=500, offset=1)
        assert exact.total == len(expected)


async def test_name_pages_of_an_inactive_state_probe_each_holder(
    service: StampService, clock: Clock
) -> None:
    """A page by name of a state other than active walks the names' index and probes step 9's
    (state, holder_id) index for each name: never a sort of the state's cards (SQLite)."""
    for i in range(12):
        serial = (await service.issue_card("coffee", Holder(name=f"N{i % 5}"))).card.serial
        if i % 2:
            await service.void_card(serial)
    dialect = service.store.engine.dialect.name
    async with service.store.read() as conn:
        rows = (
            await conn.execute(
                sa.select(cards.c.serial, holders.c.name, holders.c.id)
                .join(holders, holders.c.id == cards.c.holder_id)
                .where(cards.c.state == "voided")
            )
        ).all()
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if dialect == "sqlite" and "FROM cards" in statement and "ORDER BY" in statement:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.append(" | ".join(str(r[3]) for r in cursor.fetchall()))

    for descending in (False, True):
        expected = [
            r.serial for r in sorted(rows, key=lambda r: (r.name, r.id), reverse=descending)
        ]
        sort = "-name" if descending else "name"
        page = await service.list_cards(state="voided", sort=sort, limit=2)
        walked = [c.serial for c in page.items]
        plans.clear()
        sa.event.listen(sa.Engine, "before_cursor_execute", explain)
        try:
            while page.next_cursor is not None:
                page = await service.list_cards(
                    state="voided", sort=sort, limit=2, cursor=page.next_cursor
                )
                walked += [c.serial for c in page.items]
        finally:
            sa.event.remove(sa.Engine, "before_cursor_execute", explain)
        assert walked == expected
        assert plans or dialect != "sqlite"
        for plan in plans:
            assert "ix_cards_inactive_holder" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
