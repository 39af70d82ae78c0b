"""Store benchmark: add_stamps throughput, search latency over 100,000 cards, export memory;
with --pages, keyset pages at any depth.

    .venv/bin/python benchmarks/bench_store.py [--cards 100000] [--postgres URL]
    .venv/bin/python benchmarks/bench_store.py --pages --cards 100000,1000000 \
        [--baseline /path/to/baseline/src] [--backend sqlite|postgresql|both]

Runs on SQLite (a temporary file) and on PostgreSQL (``--postgres``, else
``PASSKIT_STAMPS_TEST_POSTGRES_URL``, else postgresql://postgres@127.0.0.1:5432/test; a schema of
its own, dropped afterwards; the rows are skipped with a message when the server does not answer).
Targets: >= 500 add_stamps/s on SQLite, search p99 < 50 ms, export memory flat (10k vs 100k).
Search rows: exact totals, and "count <= 1000" (``count_limit=1000``, what a search box uses).

--pages: per card count a store of its own, bulk-seeded with a shop's mix (states, templates,
NULL names and last stamps, wallets, vouchers, ~2 journal events a card; docs/storage.md), then
cursor pages at 200 random depths per case (every sort key, filters from common to rare, searches),
the journal's and a card's history pages, first pages, an offset page at n/2 and add_stamps on
the seeded store. --baseline SRC: the store is created and measured first by that checkout's
library (in a process of its own), then upgraded and measured by this one: "before -> after" on
the same rows in the same run. A million cards take about 7 minutes to seed per store on a
loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # PYTHONPATH=/work/baseline/src: measure that checkout
    sys.path.insert(0, str(ROOT / "src"))

from _stores import open_store  # noqa: E402  (benchmarks/_stores.py)
from passkit_stamps.engine import new_serial, new_token  # noqa: E402
from passkit_stamps.model import CardTemplate  # noqa: E402
from passkit_stamps.service import StampService  # noqa: E402
from passkit_stamps.store.schema import cards, holders  # noqa: E402
from passkit_stamps.store.store import Store  # noqa: E402

FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
Row = tuple[str, str, str]
#: Concurrent clients of the throughput rows.
CLIENTS = (1, 10, 50, 200)


def templates() -> tuple[CardTemplate, CardTemplate]:
    """A no-limits program (30 stamps) and a second one for the 10% export slice."""
    base = CardTemplate.load(ROOT / "templates" / "coffee").model_dump()
    base.update(limits={}, expiry={"kind": "none"}, stamps_required=30)
    base["rewards"] = [{"at": 30, "title": "Free coffee"}]
    big = CardTemplate.model_validate({**base, "id": "bench"})
    small = CardTemplate.model_validate({**base, "id": "bench-small"})
    return big, small


async def postgres_answers(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        import asyncpg

        conn = await asyncio.wait_for(
            asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://")), 5
        )
        await conn.close()
        return None
    except Exception as exc:  # any failure means: skip the PostgreSQL rows
        return f"{type(exc).__name__}: {exc}"


async def bench_stamps(service: StampService, results: list[Row], kind: str) -> None:
    sequential = 1000
    serial = (await service.issue_card("bench")).card.serial
    t0 = time.perf_counter()
    for _ in range(sequential):
        await service.add_stamps(serial)
    rate = sequential / (time.perf_counter() - t0)
    results.append((kind, "add_stamps sequential (1 card)", f"{rate:,.0f} tx/s"))

    serial = (await service.issue_card("bench")).card.serial
    per_task = 20

    async def worker() -> None:
        for _ in range(per_task):
            await service.add_stamps(serial)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(50)))
    rate = 50 * per_task / (time.perf_counter() - t0)
    card = (await service.get_card(serial)).card
    total = card.rounds_completed * 30 + card.stamps - (30 if card.stamps == 30 else 0)
    check = "ok" if total == 50 * per_task else f"LOST: {total}"
    results.append((kind, "add_stamps 50 concurrent (1 card)", f"{rate:,.0f} tx/s ({check})"))


async def bench_clients(
    service: StampService, results: list[Row], kind: str, clients: tuple[int, ...]
) -> None:
    """N concurrent clients (tills), each stamping its own customers' cards: what a fleet
    does. Every client makes the same number of stamps in total (2,000 per row)."""
    total_stamps = 2000
    for n in clients:
        per_client = max(1, total_stamps // n)
        cards_per_client = 4
        owned = [
            [(await service.issue_card("bench")).card.serial for _ in range(cards_per_client)]
            for _ in range(n)
        ]

        async def client(mine: list[str], count: int) -> None:
            for i in range(count):
                await service.add_stamps(mine[i % len(mine)])

        t0 = time.perf_counter()
        await asyncio.gather(*(client(mine, per_client) for mine in owned))
        elapsed = time.perf_counter() - t0
        done = n * per_client
        counted = 0
        for mine in owned:
            for serial in mine:
                card = (await service.get_card(serial)).card
                counted += (
                    card.rounds_completed * 30 + card.stamps - (30 if card.stamps == 30 else 0)
                )
        check = "ok" if counted == done else f"LOST: {done - counted}"
        results.append(
            (
                kind,
                f"add_stamps {n} clients (own cards)",
                f"{done / elapsed:,.0f} tx/s ({check})",
            )
        )


async def bulk_load(store: Store, n: int) -> list[tuple[str, str]]:
    """n cards (10% on bench-small) with holders, by executemany; (name, email) samples."""
    rng = random.Random(7)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    samples: list[tuple[str, str]] = []
    batch = 5000
    for start in range(0, n, batch):
        hrows: list[dict[str, Any]] = []
        crows: list[dict[str, Any]] = []
        for i in range(start, min(start + batch, n)):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
            email = f"{name.split()[0].lower()}.{i}@example.com"
            serial = new_serial()
            created = now + timedelta(seconds=i)
            hrows.append({"id": i + 1_000_000, "name": name, "email": email, "created_at": created})
            crows.append(
                {
                    "serial": serial,
                    "template_id": "bench-small" if i % 10 == 0 else "bench",
                    "template_version": 1,
                    "holder_id": i + 1_000_000,
                    "stamps": rng.randrange(0, 30),
                    "rounds_completed": 0,
                    "state": "active",
                    "created_at": created,
                    "authentication_token": new_token(),
                    "search_text": f"{serial} {name} {email}".lower(),
                    "change_tag": 0,
                    "updated_at": created,
                }
            )
            if i % 500 == 0:
                samples.append((name, email))
        async with store.write() as conn:
            await conn.execute(holders.insert(), hrows)
            await conn.execute(cards.insert(), crows)
    if store.is_postgres:
        # The steady state autovacuum keeps a live table in: statistics, hint bits and the
        # visibility map set (right after a bulk load the first reads of every row write).
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
    return samples


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench_search(
    service: StampService, samples: list[tuple[str, str]], results: list[Row], kind: str, n: int
) -> None:
    rng = random.Random(11)
    queries: list[tuple[str, str]] = []
    for name, email in samples:
        queries.append(("name prefix", name.split()[0][:3]))
        queries.append(("name substring", name.split()[1][1:5].lower()))
        queries.append(("email", email))
    rng.shuffle(queries)
    await service.list_cards(search="warm-up")
    timings: dict[str, list[float]] = {}
    for label, text in queries[:300]:
        t0 = time.perf_counter()
        await service.list_cards(search=text, limit=50)
        timings.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
        timings.setdefault("all", []).append((time.perf_counter() - t0) * 1000)
        # The search box: the same search, counting at most 1,000 matches.
        t0 = time.perf_counter()
        await service.list_cards(search=text, limit=50, count_limit=1000)
        timings.setdefault("all, count <= 1000", []).append((time.perf_counter() - t0) * 1000)
    for label, values in timings.items():
        results.append(
            (
                kind,
                f"list_cards search ({label}), {n:,} cards",
                f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms",
            )
        )
    t0 = time.perf_counter()
    await service.list_cards(limit=50, offset=n // 2, sort="created_at")
    results.append(
        (kind, "list_cards page at offset n/2", f"{(time.perf_counter() - t0) * 1000:.1f} ms")
    )


async def bench_export(service: StampService, results: list[Row], kind: str, n: int) -> None:
    for label, template_id in ((f"{n // 10:,} cards", "bench-small"), (f"{n:,} cards", None)):
        # Timed without tracemalloc (it slows allocation-heavy code several times over), then
        # run again under tracemalloc for the peak.
        rows = 0
        t0 = time.perf_counter()
        async for chunk in service.export_csv(template_id=template_id):
            rows += chunk.count("\r\n")
        elapsed = time.perf_counter() - t0
        tracemalloc.start()
        async for _chunk in service.export_csv(template_id=template_id):
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results.append(
            (
                kind,
                f"export_csv {label}",
                f"peak {peak / 1e6:.1f} MB, {rows - 1:,} rows in {elapsed:.1f} s",
            )
        )


async def run_backend(
    kind: str, pg_url: str, n: int, results: list[Row], stamps_only: bool = False
) -> None:
    big, small = templates()
    async with open_store(kind, pg_url, pool_size=20) as store:
        service = StampService(store)
        await service.publish_template(big)
        await service.publish_template(small)
        await bench_stamps(service, results, kind)
        await bench_clients(service, results, kind, CLIENTS)
        if stamps_only:
            return
        t0 = time.perf_counter()
        samples = await bulk_load(store, n)
        results.append((kind, f"bulk load {n:,} cards", f"{time.perf_counter() - t0:.1f} s"))
        await bench_search(service, samples, results, kind, n)
        await bench_export(service, results, kind, n)


#: Tables the page benchmark seeds, and their columns in the order the seed rows carry them.
_SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    "holders": ("id", "name", "email", "created_at"),
    "cards": (
        "serial",
        "template_id",
        "template_version",
        "holder_id",
        "stamps",
        "rounds_completed",
        "state",
        "created_at",
        "last_stamp_at",
        "expires_at",
        "authentication_token",
        "search_text",
        "change_tag",
        "updated_at",
        "deleted_at",
    ),
    "card_platforms": ("serial", "platform", "added_at"),
    "vouchers": (
        "serial",
        "code",
        "position",
        "kind",
        "title",
        "description",
        "issued_at",
        "redeemed_at",
        "reward_at",
    ),
    "events": (
        "type",
        "at",
        "serial",
        "template_id",
        "template_version",
        "stamps",
        "required",
        "data",
    ),
}
#: The page benchmark's templates: most cards on one, 10% on another, 0.5% on a rare one.
PAGE_TEMPLATES = ("bench", "bench-small", "bench-rare")
_SERIAL_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_HOLDER_BASE = 10_000_000


def _seed_rows(start: int, stop: int, rng: random.Random) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every table for cards start..stop, a shop's mix: random serials; 10% without a
    name and ~3% never stamped (NULL sort keys); 5% completed, 3% expired, 1% voided, 0.2%
    deleted, 0.05% past their expiry time but not swept yet; 10% on a second template and 0.5%
    on a rare one; saved in wallets; vouchers ready and redeemed; a journal of ~2 events a card."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _SEED_COLUMNS}
    for i in range(start, stop):
        template = "bench-small" if i % 10 == 0 else "bench-rare" if i % 200 == 7 else "bench"
        name = None if i % 10 == 3 else f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
        email = f"c{i}@example.com"
        serial = "".join(rng.choice(_SERIAL_ALPHABET) for _ in range(16))
        created = base + timedelta(seconds=i)
        stamps = rng.randrange(0, 30)
        last_stamp = created + timedelta(days=rng.randrange(0, 300)) if stamps else None
        u = rng.random()
        state = (
            "completed"
            if u < 0.05
            else "expired"
            if u < 0.08
            else "voided"
            if u < 0.09
            else "active"
        )
        expires = created + timedelta(days=700) if u > 0.8 else None
        if i % 2000 == 13:  # due: the sweep has not run yet
            state, expires = "active", base + timedelta(days=30)
        deleted = None
        if i % 500 == 11:
            state, name, deleted = "voided", None, created + timedelta(days=5)
        hid = i + _HOLDER_BASE
        rows["holders"].append((hid, name, email, created))
        rows["cards"].append(
            (
                serial,
                template,
                1,
                hid,
                stamps,
                0,
                state,
                created,
                last_stamp,
                expires,
                new_token(),
                f"{serial} {name or ''} {email}".lower() if deleted is None else serial.lower(),
                0,
                last_stamp or created,
                deleted,
            )
        )
        w = rng.random()
        if w < 0.4:
            rows["card_platforms"].append((serial, "apple", created))
        if 0.3 < w < 0.55:
            rows["card_platforms"].append((serial, "google", created))
        events = rows["events"]
        events.append(("card_issued", created, serial, template, 1, 0, 30, "{}"))
        if last_stamp is not None:
            events.append(("stamp_added", last_stamp, serial, template, 1, stamps, 30, "{}"))
        v = rng.random()
        if v < 0.08:
            redeemed = last_stamp if v < 0.03 and last_stamp else None
            rows["vouchers"].append(
                (serial, f"V{i}", 0, "reward", "Free coffee", "", created, redeemed, 30)
            )
            if redeemed is not None:
                events.append(("voucher_redeemed", redeemed, serial, template, 1, stamps, 30, "{}"))
        if state == "voided":
            events.append(
                ("card_voided", last_stamp or created, serial, template, 1, stamps, 30, "{}")
            )
    return rows


async def seed_cards(kind: str, url: str, schema: str | None, start: int, stop: int) -> None:
    """Bulk load cards start..stop with their holders, platforms, vouchers and journal into the
    store at ``url`` (created, its templates published), by plain SQL on a connection of its
    own (whatever library version made the schema): COPY on PostgreSQL, one executemany per
    50,000 cards on SQLite (the search index's trigger off during the load, the index filled
    once afterwards)."""
    rng = random.Random(start)
    batch = 50_000
    if kind == "postgresql":
        import asyncpg

        settings = {"search_path": f"{schema},public"} if schema else {}
        conn = await asyncpg.connect(_plain(url), server_settings=settings)
        try:
            # Short transactions: a long one holds back the visible horizon of every store on
            # the server (docs/storage.md, "Change ordering"), e.g. other test runs' devices.
            batch = 10_000
            for lo in range(start, stop, batch):
                for table, records in _seed_rows(lo, min(lo + batch, stop), rng).items():
                    await conn.copy_records_to_table(
                        table, records=records, columns=_SEED_COLUMNS[table]
                    )
            # The steady state autovacuum keeps a live table in: statistics, hint bits, the
            # visibility map (right after a bulk load the first reads of every row write).
            for table in _SEED_COLUMNS:
                await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()
        return
    import sqlite3

    path = url.removeprefix("sqlite:///")
    fmt = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores times in SQLite

    def text(value: Any) -> Any:
        return value.strftime(fmt) if isinstance(value, datetime) else value

    db = sqlite3.connect(path, isolation_level=None)
    try:
        found = db.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'cards_search_insert'"
        ).fetchone()
        db.execute("BEGIN IMMEDIATE")
        if found:
            db.execute("DROP TRIGGER cards_search_insert")
        for lo in range(start, stop, batch):
            for table, records in _seed_rows(lo, min(lo + batch, stop), rng).items():
                columns = _SEED_COLUMNS[table]
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    [tuple(text(v) for v in row) for row in records],
                )
        if found:
            db.execute(
                "INSERT INTO cards_search(rowid, search_text) "
                "SELECT holder_id, search_text FROM cards WHERE holder_id >= ? AND holder_id < ?",
                (start + _HOLDER_BASE, stop + _HOLDER_BASE),
            )
            db.execute(found[0])
        db.execute("COMMIT")
        # No ANALYZE: a store in the field has no statistics unless someone analyzed it, and
        # SQLite's plans are made without them (the pages must not depend on them).
    finally:
        db.close()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


#: Cards-list pages the page benchmark times: (label, list_cards filters, sort).
PAGE_CASES: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("all", {}, "-created_at"),
    ("all", {}, "last_stamp_at"),
    ("all", {}, "stamps"),
    ("all", {}, "serial"),
    ("all", {}, "name"),
    ("all", {}, "-name"),
    ("state voided (1%)", {"state": "voided"}, "-created_at"),
    ("state voided (1%)", {"state": "voided"}, "stamps"),
    ("state voided (1%)", {"state": "voided"}, "name"),
    ("state expired (3% + due)", {"state": "expired"}, "-created_at"),
    ("template rare (0.5%)", {"template_id": "bench-rare"}, "-created_at"),
    ("template rare (0.5%)", {"template_id": "bench-rare"}, "last_stamp_at"),
    ("template rare (0.5%)", {"template_id": "bench-rare"}, "name"),
    ("platform google (25%)", {"platform": "google"}, "-created_at"),
    ("search 'ada' (9%)", {"search": "ada"}, "-created_at"),
    ("search 'lovelace' (11%)", {"search": "lovelace"}, "stamps"),
    ("search an email (1 card)", {"search": "c123456@example.com"}, "-created_at"),
)
#: Random depths per page row.
PAGE_DEPTHS = 200
#: --only REGEX: measure only the rows whose label matches (both libraries); its arguments.
_ONLY: list[str] = []


def _wanted(label: str) -> bool:
    return not _ONLY or re.search(_ONLY[1], label) is not None


def _aware(value: Any) -> Any:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _timed(label: str, timings: list[float]) -> dict[str, Any]:
    return {"measure": label, "p50": percentile(timings, 50), "p99": percentile(timings, 99)}


async def measure_pages(store: Store, n: int) -> list[dict[str, Any]]:
    """Keyset pages at PAGE_DEPTHS random positions per case, the journal's pages and a card's
    history, first pages with a capped count, an offset page at n/2, and add_stamps on the
    seeded store, with this process's library (the baseline's under --baseline)."""
    from passkit_stamps.service import cursors

    service = StampService(store)
    out: list[dict[str, Any]] = []
    rng = random.Random(n)
    async with store.read() as conn:
        sampled = (
            await conn.exec_driver_sql(
                "SELECT c.serial, c.created_at, c.last_stamp_at, c.stamps, h.name "
                "FROM cards c JOIN holders h ON h.id = c.holder_id "
                f"WHERE (c.holder_id % 997) = 5 AND c.holder_id >= {_HOLDER_BASE}"
            )
        ).all()
        top = int((await conn.exec_driver_sql("SELECT max(id) FROM events")).scalar() or 0)
    await service.list_cards(limit=50)  # warm-up: templates cached, the pool filled
    for label, given, sort in PAGE_CASES:
        if not _wanted(f"cursor page, {label}, {sort}"):
            continue
        key = sort.removeprefix("-")
        timings: list[float] = []
        for _ in range(PAGE_DEPTHS):
            serial, created, last, stamps, name = rng.choice(sampled)
            value = {
                "created_at": _aware(created),
                "last_stamp_at": _aware(last),
                "stamps": stamps,
                "serial": serial,
                "name": name,
            }[key]
            cursor = cursors.card_cursor(key, sort.startswith("-"), value, serial)
            t0 = time.perf_counter()
            await service.list_cards(sort=sort, limit=50, cursor=cursor, **given)
            timings.append((time.perf_counter() - t0) * 1000)
        out.append(_timed(f"cursor page, {label}, {sort}", timings))
    for label, given in (("all", {}), ("search 'ada'", {"search": "ada"})):
        if not _wanted(f"first page (count <= 1000), {label}"):
            continue
        timings = []
        for _ in range(20):
            t0 = time.perf_counter()
            await service.list_cards(limit=50, count_limit=1000, **given)
            timings.append((time.perf_counter() - t0) * 1000)
        out.append(_timed(f"first page (count <= 1000), {label}", timings))
    journal_cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("all", {}),
        ("type stamp_added", {"types": "stamp_added"}),
        ("types voided + redeemed", {"types": ["card_voided", "voucher_redeemed"]}),
    )
    for label, given in journal_cases:
        if not _wanted(f"journal cursor page, {label}"):
            continue
        timings = []
        for _ in range(PAGE_DEPTHS):
            cursor = cursors.journal_cursor(True, rng.randrange(1, top + 1))
            t0 = time.perf_counter()
            await service.journal(limit=50, cursor=cursor, **given)
            timings.append((time.perf_counter() - t0) * 1000)
        out.append(_timed(f"journal cursor page, {label}", timings))
    capped = "count_limit" in inspect.signature(service.journal).parameters
    if _wanted("journal first page"):
        timings = []
        for _ in range(20):
            t0 = time.perf_counter()
            await service.journal(limit=50, **({"count_limit": 1000} if capped else {}))
            timings.append((time.perf_counter() - t0) * 1000)
        out.append(_timed("journal first page (count <= 1000 / exact before)", timings))
    if _wanted("a card's history page"):
        timings = []
        for _ in range(PAGE_DEPTHS):
            serial = rng.choice(sampled)[0]
            t0 = time.perf_counter()
            await service.card_history_page(serial, limit=50)
            timings.append((time.perf_counter() - t0) * 1000)
        out.append(_timed("a card's history page", timings))
    if _wanted("offset page at n/2"):
        t0 = time.perf_counter()
        await service.list_cards(limit=50, offset=n // 2, sort="created_at")
        elapsed = (time.perf_counter() - t0) * 1000
        out.append({"measure": "offset page at n/2 (no cursor)", "ms": elapsed})
    if not _wanted("add_stamps on the seeded store"):
        return out
    stamped = [s[0] for s in rng.sample(sampled, min(500, len(sampled)))]
    t0 = time.perf_counter()
    for serial in stamped:
        # A voided or expired card is refused: a transaction all the same.
        with contextlib.suppress(Exception):
            await service.add_stamps(serial)
    rate = len(stamped) / (time.perf_counter() - t0)
    out.append({"measure": "add_stamps on the seeded store (random cards)", "rate": rate})
    return out


def _store_options(schema: str | None) -> dict[str, Any]:
    if schema:
        return {"connect_args": {"server_settings": {"search_path": f"{schema},public"}}}
    return {}


async def _create_command(url: str, schema: str | None) -> None:
    """--create: a new store with the page benchmark's templates, by this process's library."""
    store = await Store.open(url, **_store_options(schema))
    try:
        service = StampService(store)
        big, _small = templates()
        for template_id in PAGE_TEMPLATES:
            await service.publish_template(
                CardTemplate.model_validate({**big.model_dump(), "id": template_id})
            )
    finally:
        await store.close()


async def _measure_command(url: str, schema: str | None, n: int) -> None:
    """--measure: measure a seeded store with this process's library; JSON on stdout."""
    store = await Store.open(url, create=False, **_store_options(schema))
    try:
        print(json.dumps(await measure_pages(store, n)))
    finally:
        await store.close()


def _format(row: dict[str, Any]) -> str:
    if "rate" in row:
        return f"{row['rate']:,.0f} tx/s"
    if "ms" in row:
        return f"{row['ms']:,.1f} ms"
    return f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms"


def _library(baseline: str | None, *args: str) -> str:
    """Run this script with ``args`` in a process of its own: the baseline's library (its
    ``src`` folder on PYTHONPATH) or this checkout's. Its standard output."""
    env = dict(os.environ, PYTHONPATH=baseline or str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr}")
    return done.stdout


async def run_pages(
    kind: str,
    pg_url: str,
    sizes: tuple[int, ...],
    results: list[Row],
    baseline: str | None,
    seeded: str | None = None,
) -> None:
    """Per size a store of its own, seeded once; with --baseline, created by the baseline's
    library and measured by it first (in a process of its own), then upgraded to this version
    and measured again: both on the same rows, in the same run. ``seeded`` (--seeded): keep a
    copy of the seeded store there (SQLite: a file; PostgreSQL: a database of that name), or
    when it exists, measure a copy of it instead of seeding (one size only)."""
    import asyncpg

    for n in sizes:
        schema = None
        work_db = None
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'pages.db'}"
            reuse = False
            if kind == "postgresql" and seeded:
                work_db = f"{seeded}_work"
                url = _database_url(pg_url, work_db)
                admin = await asyncpg.connect(_plain(pg_url))
                try:
                    reuse = bool(
                        await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", seeded)
                    )
                    await admin.execute(f'DROP DATABASE IF EXISTS "{work_db}"')
                    if reuse:
                        await admin.execute(f'CREATE DATABASE "{work_db}" TEMPLATE "{seeded}"')
                    else:
                        await admin.execute(f'CREATE DATABASE "{work_db}"')
                finally:
                    await admin.close()
            elif kind == "postgresql":
                url = pg_url
                schema = "pks_pages_" + secrets.token_hex(4)
                admin = await asyncpg.connect(_plain(pg_url))
                await admin.execute(f'CREATE SCHEMA "{schema}"')
                await admin.close()
            elif seeded and Path(seeded).exists():
                reuse = True
                shutil.copyfile(seeded, url.removeprefix("sqlite:///"))
            where = ["--url", url, *(["--schema", schema] if schema else [])]
            try:
                if reuse:
                    results.append((kind, f"seeded store reused ({seeded})", f"{n:,} cards"))
                else:
                    _library(baseline, "--create", *where)
                    t0 = time.perf_counter()
                    await seed_cards(kind, url, schema, 0, n)
                    seeded_in = f"{time.perf_counter() - t0:.1f} s"
                    results.append(
                        (kind, f"seed {n:,} cards (bulk, with their journal)", seeded_in)
                    )
                    if seeded and kind == "sqlite":
                        shutil.copyfile(url.removeprefix("sqlite:///"), seeded)
                    elif seeded and work_db:
                        admin = await asyncpg.connect(_plain(pg_url))
                        try:
                            await admin.execute(f'CREATE DATABASE "{seeded}" TEMPLATE "{work_db}"')
                        finally:
                            await admin.close()
                before: dict[str, dict[str, Any]] = {}
                if baseline:
                    measured = _library(baseline, "--measure", "--cards", str(n), *where, *_ONLY)
                    before = {r["measure"]: r for r in json.loads(measured)}
                t0 = time.perf_counter()
                store = await Store.open(url, create=False, **_store_options(schema))
                if baseline:
                    upgraded = f"{time.perf_counter() - t0:.1f} s"
                    results.append((kind, f"schema upgrade to this version, {n:,} cards", upgraded))
                try:
                    after = await measure_pages(store, n)
                finally:
                    await store.close()
            finally:
                if schema is not None:
                    admin = await asyncpg.connect(_plain(pg_url))
                    await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
                    await admin.close()
                if work_db is not None:
                    admin = await asyncpg.connect(_plain(pg_url))
                    await admin.execute(f'DROP DATABASE IF EXISTS "{work_db}" WITH (FORCE)')
                    await admin.close()
        for row in after:
            measure = f"{row['measure']}, {n:,} cards"
            if row["measure"] in before:
                shown = f"{_format(before[row['measure']])}  ->  {_format(row)}"
            else:
                shown = _format(row)
            results.append((kind, measure, shown))


def _database_url(url: str, database: str) -> str:
    """``url`` with another database name."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(rows: list[Row]) -> None:
    headers = ("backend", "measure", "result")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cards",
        default="100000",
        help="card count; with --pages a list (e.g. 100000,1000000: a store of each size)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument(
        "--stamps-only", action="store_true", help="only the add_stamps rows (no bulk load)"
    )
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument(
        "--pages", action="store_true", help="only the page rows, at each --cards count"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="with --pages: a baseline checkout's src folder, measured first on the same rows",
    )
    parser.add_argument(
        "--seeded",
        default=None,
        help="with --pages (one size, one backend): keep the seeded store there (SQLite: a file; "
        "PostgreSQL: a database of that name) or, when it exists, measure a copy of it",
    )
    parser.add_argument(
        "--only", default=None, help="with --pages: only the rows whose label matches this regex"
    )
    # Internal: what --pages runs in a process of its own (the baseline's library).
    parser.add_argument("--create", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = tuple(int(x) for x in str(args.cards).split(","))
    if args.only:
        _ONLY[:] = ["--only", args.only]
    if args.create:
        await _create_command(args.url, args.schema)
        return
    if args.measure:
        await _measure_command(args.url, args.schema, sizes[0])
        return
    results: list[Row] = []
    print(f"load average {_load()}")
    if args.pages:
        for kind in ("sqlite", "postgresql"):
            if args.backend in ("both", kind):
                rows: list[Row] = []
                await run_pages(kind, args.postgres, sizes, rows, args.baseline, args.seeded)
                print_table(rows)  # each store as it ends: a million cards take a while
                print(f"load average {_load()}")
        return
    n = sizes[0]
    if args.backend != "postgresql":
        await run_backend("sqlite", "", n, results, args.stamps_only)
    if args.backend == "sqlite":
        print_table(results)
        return
    reason = await postgres_answers(args.postgres)
    if reason is None:
        await run_backend("postgresql", args.postgres, n, results, args.stamps_only)
    else:
        print(f"PostgreSQL rows SKIPPED: {args.postgres} does not answer ({reason})")
    print_table(results)


if __name__ == "__main__":
    asyncio.run(main())
