"""Issue 12 item 9: with a wrong token, a known and an unknown serial take the same path — the
same statements, reading as many rows, the same token comparison — for GET pass, register and
unregister, wherever the unknown serial sorts (before, between or after the cards). (The timing
itself is measured by benchmarks/bench_oracle.py, not by a test.)"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from passkit_stamps.model import Holder
from passkit_stamps.store.hotreads import HotReads
from passkit_stamps.web import requests as rq

from .conftest import MOUNT, Wallet

Calls = list[tuple[str, Any]]


@pytest.fixture
def recorded(wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Every statement the request runs: the direct reads (SQL and rows read) and the store's
    own statements; and every token comparison (the expected token's length)."""
    calls: Calls = []
    fetch = HotReads._fetch

    async def spy(self: HotReads, query: Any, params: dict[str, Any]) -> list[Any]:
        rows = await fetch(self, query, params)
        calls.append((query.sql, len(rows)))
        return rows

    monkeypatch.setattr(HotReads, "_fetch", spy)
    real_equal = rq.tokens_equal

    def tokens_equal(expected: str, given: str) -> bool:
        calls.append(("tokens_equal", (len(expected), len(given))))
        return real_equal(expected, given)

    monkeypatch.setattr(rq, "tokens_equal", tokens_equal)

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        calls.append(("store", statement))

    engine = wallet.service.store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield calls
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)


async def test_known_and_unknown_serials_take_the_same_path(
    wallet: Wallet, recorded: Calls
) -> None:
    serials = [
        (await wallet.service.issue_card("coffee", Holder(name=f"H{i}"))).card.serial
        for i in range(5)
    ]
    # Unknown serials that sort before, between and after the issued ones.
    unknown = ["0" * len(serials[0]), min(serials) + "0", "z" * len(serials[0])]
    device = secrets.token_hex(16)
    wrong = {"Authorization": "ApplePass " + secrets.token_urlsafe(24)}
    pt = wallet.pass_type

    async def paths(serial: str) -> list[Calls]:
        registration = f"{MOUNT}/v1/devices/{device}/registrations/{pt}/{serial}"
        requests = [
            ("GET", f"{MOUNT}/v1/passes/{pt}/{serial}", None),
            ("POST", registration, {"pushToken": "ab" * 32}),
            ("DELETE", registration, None),
        ]
        seen = []
        for method, url, body in requests:
            recorded.clear()
            response = await wallet.client.request(method, url, headers=wrong, json=body)
            assert response.status_code == 401
            seen.append(list(recorded))
        return seen

    known_paths = await paths(serials[2])
    assert known_paths[0], "the request ran no statement"
    assert any(call[0] == "tokens_equal" for call in known_paths[0])
    for serial in unknown:
        if serial in serials:
            continue
        # Also a serial sorting after every card reads as many rows: were it one fewer, timing
        # would tell "sorts last", and bisecting on that finds the last card's serial.
        assert await paths(serial) == known_paths, serial


async def test_the_stand_in_read_finds_every_card_and_clamps_to_the_last(wallet: Wallet) -> None:
    service = wallet.service
    # Serials at the edges of the alphabet, one the prefix of another, the largest possible.
    serials = ["-", "0", "A", "A-", "AZ", "a_b", "z" * 63, "z" * 64]
    tokens = {}
    for serial in serials:
        card = (await service.issue_card("coffee", Holder(name="H"), serial=serial)).card
        tokens[serial] = card.authentication_token
    hot = HotReads(service.store)
    try:
        for serial in serials:
            found = await hot.pass_state_or_stand_in(serial)
            assert found is not None and found[:2] == (True, tokens[serial]), serial
        # Unknown: the next card stands in, the last one for a serial after every card; never
        # no card. (Which card is next is the database's collation: checked on SQLite's.)
        bytewise = service.store.engine.dialect.name == "sqlite"
        cases = [(".", "0"), ("A0", "AZ"), ("B", "a_b"), ("_", "a_b"), ("z" * 65, "z" * 64)]
        for unknown, stand_in in cases:
            found = await hot.pass_state_or_stand_in(unknown)
            assert found is not None and found[0] is False, unknown
            assert found[1] == tokens[stand_in] if bytewise else found[1] in tokens.values()
    finally:
        hot.close()
