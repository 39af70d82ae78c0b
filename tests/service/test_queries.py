"""Reading: the issued-cards list, the journal, the CSV export."""

from __future__ import annotations

import csv
import io

import pytest

from conftest import Clock  # tests/conftest.py
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import CardInputError
from passkit_stamps.model import CardState, Holder
from passkit_stamps.service import StampService

PEOPLE = [
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@turing.example"),
    ("Grace Hopper", "grace@navy.example"),
    ("Édith Piaf", "edith@example.fr"),
    ("=HYPERLINK(1)", "-x@example.com"),
]


async def _issue_people(service: StampService, clock: Clock) -> list[str]:
    serials = []
    for name, email in PEOPLE:
        clock.advance(minutes=1)
        serials.append(
            (await service.issue_card("coffee", Holder(name=name, email=email))).card.serial
        )
    return serials


async def test_search_by_name_email_and_card_number(service: StampService, clock: Clock) -> None:
    serials = await _issue_people(service, clock)
    # Card numbers are searched too, and a random one can hold "ADA" (Ada's own as well):
    # Ada's card is found, any other only through its number.
    found = (await service.list_cards(search="ada")).items
    assert serials[0] in [c.serial for c in found]
    assert all(c.serial == serials[0] or "ADA" in c.serial for c in found)
    assert (await service.list_cards(search="  LOVELACE ")).total == 1
    assert (await service.list_cards(search="navy.example")).items[0].holder.name == "Grace Hopper"
    assert (await service.list_cards(search="édith")).total == 1
    assert (await service.list_cards(search=serials[1][:10])).items[0].serial == serials[1]
    assert (await service.list_cards(search=serials[1].lower())).total == 1
    assert (await service.list_cards(search="%")).total == 0  # wildcards are literal
    assert (await service.list_cards(search="_")).total == 0
    assert (await service.list_cards(search="")).total == len(PEOPLE)
    with pytest.raises(CardInputError):
        await service.list_cards(search="x" * 201)


async def test_filters_sorting_and_pages(service: StampService, clock: Clock) -> None:
    serials = await _issue_people(service, clock)
    clock.advance(minutes=1)
    salon = (await service.issue_card("salon", Holder(name="Zed"))).card.serial
    await service.add_stamps(serials[0], 3)
    await service.set_stamps(serials[1], 8)
    await service.issue_coupon(serials[2], "Gift")
    await service.record_platform(serials[0], Platform.APPLE, True)
    await service.record_platform(serials[0], Platform.GOOGLE, True)
    await service.record_platform(serials[3], Platform.GOOGLE, True)
    await service.void_card(serials[4])

    everything = await service.list_cards()
    assert everything.total == 6
    assert [c.serial for c in everything.items] == [salon, *reversed(serials)]  # newest first
    first = everything.items[-1]
    assert first.platforms == {Platform.APPLE, Platform.GOOGLE}
    assert (first.stamps, first.required, first.template_name) == (3, 8, "Free Coffee")
    assert first.created_at < everything.items[0].created_at

    async def serials_of(**kw: object) -> list[str]:
        return [c.serial for c in (await service.list_cards(**kw)).items]  # type: ignore[arg-type]

    assert await serials_of(template_id="salon") == [salon]
    assert set(await serials_of(platform="google")) == {serials[0], serials[3]}
    assert await serials_of(platform=Platform.APPLE) == [serials[0]]
    assert await serials_of(state=CardState.VOIDED) == [serials[4]]
    assert set(await serials_of(min_stamps=3)) == {serials[0], serials[1]}
    assert await serials_of(min_stamps=1, max_stamps=5) == [serials[0]]
    assert await serials_of(has_vouchers_ready=True) == [serials[2]]
    assert len(await serials_of(has_vouchers_ready=False)) == 5
    assert await serials_of(sort="-stamps", limit=2) == [serials[1], serials[0]]
    names = [c.holder.name for c in (await service.list_cards(sort="name")).items]
    assert names[:3] == ["=HYPERLINK(1)", "Ada Lovelace", "Alan Turing"]

    page = await service.list_cards(sort="created_at", offset=2, limit=2)
    assert [c.serial for c in page.items] == serials[2:4]
    assert page.total == 6 and page.has_more
    last = await service.list_cards(sort="created_at", offset=4, limit=2)
    assert not last.has_more and len(last.items) == 2
    for bad in (
        {"sort": "colour"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"platform": "fax"},
        {"state": "gone"},
        {"min_stamps": -1},
    ):
        with pytest.raises(CardInputError):
            await service.list_cards(**bad)  # type: ignore[arg-type]


async def test_journal_filters(service: StampService, clock: Clock) -> None:
    a = (
        await service.issue_card("coffee", Holder(name="Ann", email="ann@example.com"))
    ).card.serial
    start = clock.advance(hours=1)
    await service.add_stamps(a, 3, code="R-77", actor="till-2")
    b = (await service.issue_card("salon")).card.serial
    clock.advance(hours=1)
    await service.add_stamps(b, 1)

    everything = await service.journal()
    assert everything.total == 4
    assert [e.type for e in everything.items] == [
        EventType.STAMP_ADDED,
        EventType.CARD_ISSUED,
        EventType.STAMP_ADDED,
        EventType.CARD_ISSUED,
    ]
    ids = [e.id for e in everything.items]
    assert ids == sorted(ids, reverse=True)
    stamps = await service.journal(types="stamp_added", newest_first=False)
    assert [e.serial for e in stamps.items] == [a, b]
    entry = stamps.items[0]
    assert (entry.code, entry.stamps, entry.required, entry.actor) == ("R-77", 3, 8, "till-2")
    assert (entry.holder_name, entry.holder_email, entry.template_name) == (
        "Ann",
        "ann@example.com",
        "Free Coffee",
    )
    assert (await service.journal(template_id="salon")).total == 2
    assert (await service.journal(types=[EventType.CARD_ISSUED], template_id="coffee")).total == 1
    window = await service.journal(since=start, until=clock.now)
    assert [e.serial for e in window.items] == [b, a]
    assert (await service.journal(serial=b)).total == 2
    page = await service.journal(offset=1, limit=2)
    assert [e.id for e in page.items] == ids[1:3] and page.total == 4
    with pytest.raises(CardInputError):
        await service.journal(types=["lottery"])
    with pytest.raises(CardInputError):
        await service.journal(since="yesterday")  # type: ignore[arg-type]


async def test_export_csv_streams_every_card_in_batches(
    service: StampService, clock: Clock
) -> None:
    serials = await _issue_people(service, clock)
    await service.add_stamps(serials[0], 2)
    await service.record_platform(serials[0], Platform.APPLE, True)
    deleted = (await service.issue_card("coffee", Holder(name="Gone"))).card.serial
    await service.delete_card(deleted)
    chunks = [chunk async for chunk in service.export_csv(batch_size=2)]
    assert len(chunks) == 1 + 3  # the header, then 5 cards in batches of 2
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert sorted(r["serial"] for r in rows) == sorted(serials)
    by_serial = {r["serial"]: r for r in rows}
    ada = by_serial[serials[0]]
    assert (ada["name"], ada["email"], ada["stamps"], ada["required"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "2",
        "8",
    )
    assert ada["platforms"] == "apple" and ada["template_id"] == "coffee"
    formula = by_serial[serials[4]]
    assert formula["name"] == "'=HYPERLINK(1)" and formula["email"] == "'-x@example.com"
    only_salon = [c async for c in service.export_csv(template_id="salon")]
    assert len(only_salon) == 1  # just the header
    with pytest.raises(CardInputError):
        async for _ in service.export_csv(batch_size=0):
            pass


async def test_search_texts_with_quotes_wildcards_and_short_texts(
    service: StampService, clock: Clock
) -> None:
    """The same substring semantics on every path (SQLite: FTS5 from 3 characters, LIKE
    below; PostgreSQL: LIKE with its trigram index): quotes and wildcards are literal."""
    bob = (await service.issue_card("coffee", Holder(name='Bob "The Builder" 100%'))).card
    clock.advance(minutes=1)
    await service.issue_card("coffee", Holder(name="Bobby Tables", email="x_y@example.com"))

    async def found(text: str) -> list[str]:
        return [c.holder.name or "" for c in (await service.list_cards(search=text)).items]

    assert await found('"the builder"') == [bob.holder.name]
    assert await found('r" 100%') == [bob.holder.name]
    assert await found("100%") == [bob.holder.name]
    assert await found("1%0") == []
    assert await found("x_y") == ["Bobby Tables"]
    assert await found("x%y") == []
    assert await found("bob") == ["Bobby Tables", bob.holder.name]  # newest first
    assert await found("bo") == ["Bobby Tables", bob.holder.name]  # short: scanned
    assert await found("t") == ["Bobby Tables", bob.holder.name]
    assert await found("!?") == []  # (a serial has letters and digits only)


async def test_search_pages_through_many_matches_in_order(
    service: StampService, clock: Clock
) -> None:
    """Pages of a search with many matches (on SQLite the sort index is walked then) agree
    with the full list, in both directions."""
    serials = []
    for i in range(8):
        clock.advance(minutes=1)
        # "lou": L, O and U are not in a card number's alphabet, so only these names match.
        name = f"Lou {i}" if i != 3 else "Someone Else"
        serials.append((await service.issue_card("coffee", Holder(name=name))).card.serial)
    lous = [s for i, s in enumerate(serials) if i != 3]
    for sort, expected in (("-created_at", lous[::-1]), ("created_at", lous)):
        paged: list[str] = []
        for offset in range(0, 8, 2):
            page = await service.list_cards(search="lou", sort=sort, offset=offset, limit=2)
            assert page.total == len(lous)
            paged.extend(c.serial for c in page.items)
        assert paged == expected
    by_serial = await service.list_cards(search="lou", sort="-serial", limit=3)
    assert [c.serial for c in by_serial.items] == sorted(lous, reverse=True)[:3]
    await service.delete_card(lous[0])
    assert (await service.list_cards(search="lou", limit=1)).total == len(lous) - 1


async def test_search_count_can_be_capped(service: StampService, clock: Clock) -> None:
    for i in range(7):
        clock.advance(minutes=1)
        await service.issue_card("coffee", Holder(name=f"Lou {i}"))
    exact = await service.list_cards(search="lou", limit=2)
    assert (exact.total, exact.total_exact) == (7, True)
    capped = await service.list_cards(search="lou", limit=2, count_limit=3)
    assert (capped.total, capped.total_exact, capped.has_more) == (3, False, True)
    assert [c.serial for c in capped.items] == [c.serial for c in exact.items]
    # The cap counts past the page: the last pages see the exact total again.
    last = await service.list_cards(search="lou", offset=6, limit=2, count_limit=3)
    assert (last.total, last.total_exact, last.has_more, len(last.items)) == (7, True, False, 1)
    roomy = await service.list_cards(search="lou", count_limit=100)
    assert (roomy.total, roomy.total_exact) == (7, True)
    for bad in (0, -1, True, "5"):
        with pytest.raises(CardInputError):
            await service.list_cards(count_limit=bad)  # type: ignore[arg-type]
