"""Store benchmark: add_stamps throughput, search latency over 100,000 cards, export memory.

    .venv/bin/python benchmarks/bench_store.py [--cards 100000] [--postgres URL]

Runs on SQLite (a temporary file) and on PostgreSQL (``--postgres``, else
``PASSKIT_STAMPS_TEST_POSTGRES_URL``, else postgresql://postgres@127.0.0.1:5432/test; a schema of
its own, dropped afterwards; the rows are skipped with a message when the server does not answer).
Targets: >= 500 add_stamps/s on SQLite, search p99 < 50 ms, export memory flat (10k vs 100k).
Search rows: exact totals, and "count <= 1000" (``count_limit=1000``, what a search box uses).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
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


def _card_rows(
    start: int, stop: int, rng: random.Random
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Holder and card tuples for cards start..stop (10% of names missing: NULLs sort last)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    hrows: list[tuple[Any, ...]] = []
    crows: list[tuple[Any, ...]] = []
    for i in range(start, stop):
        name = None if i % 10 == 3 else f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
        email = f"c{i}@example.com"
        serial = f"{i:012d}{rng.getrandbits(40):010X}"
        created = now + timedelta(seconds=i)
        stamps = rng.randrange(0, 30)
        hid = i + 10_000_000
        hrows.append((hid, name, email, created))
        crows.append(
            (
                serial,
                "bench",
                1,
                hid,
                stamps,
                0,
                "active",
                created,
                created if stamps else None,
                new_token(),
                f"{serial} {name or ''} {email}".lower(),
                0,
                created,
            )
        )
    return hrows, crows


_CARD_COLUMNS = (
    "serial",
    "template_id",
    "template_version",
    "holder_id",
    "stamps",
    "rounds_completed",
    "state",
    "created_at",
    "last_stamp_at",
    "authentication_token",
    "search_text",
    "change_tag",
    "updated_at",
)


async def seed_cards(store: Store, start: int, stop: int) -> None:
    """Bulk load cards start..stop: COPY on PostgreSQL, one executemany per 50,000 on SQLite
    (the search index's trigger off during the load, the index filled once afterwards)."""
    rng = random.Random(start)
    batch = 50_000
    if store.is_postgres:
        # Short transactions: a long one holds back the visible horizon of every store on the
        # server (docs/storage.md, "Change ordering"), e.g. other test runs' devices.
        batch = 10_000
        pooled = await store.engine.raw_connection()
        try:
            conn = pooled.driver_connection
            assert conn is not None
            for lo in range(start, stop, batch):
                hrows, crows = _card_rows(lo, min(lo + batch, stop), rng)
                await conn.copy_records_to_table(
                    "holders", records=hrows, columns=("id", "name", "email", "created_at")
                )
                await conn.copy_records_to_table("cards", records=crows, columns=_CARD_COLUMNS)
            await conn.execute("VACUUM ANALYZE cards")
            await conn.execute("VACUUM ANALYZE holders")
        finally:
            pooled.close()
        return
    import sqlite3

    path = store.engine.url.database
    assert path is not None
    db = sqlite3.connect(path, isolation_level=None)
    try:
        has_fts = bool(
            db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cards_search_insert'").fetchone()
        )
        db.execute("BEGIN IMMEDIATE")
        if has_fts:
            trigger = db.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'cards_search_insert'"
            ).fetchone()[0]
            db.execute("DROP TRIGGER cards_search_insert")
        for lo in range(start, stop, batch):
            hrows, crows = _card_rows(lo, min(lo + batch, stop), rng)
            fmt = "%Y-%m-%d %H:%M:%S.%f"
            db.executemany(
                "INSERT INTO holders (id, name, email, created_at) VALUES (?, ?, ?, ?)",
                [(h[0], h[1], h[2], h[3].strftime(fmt)) for h in hrows],
            )
            db.executemany(
                f"INSERT INTO cards ({', '.join(_CARD_COLUMNS)}) VALUES ({', '.join('?' * 13)})",
                [
                    (
                        *c[:7],
                        c[7].strftime(fmt),
                        c[8] and c[8].strftime(fmt),
                        *c[9:12],
                        c[12].strftime(fmt),
                    )
                    for c in crows
                ],
            )
        if has_fts:
            db.execute(
                "INSERT INTO cards_search(rowid, search_text) "
                "SELECT holder_id, search_text FROM cards WHERE holder_id >= ? AND holder_id < ?",
                (start + 10_000_000, stop + 10_000_000),
            )
            db.execute(trigger)
        db.execute("COMMIT")
        db.execute("ANALYZE")
    finally:
        db.close()


async def bench_pages(
    service: StampService, store: Store, results: list[Row], kind: str, sizes: tuple[int, ...]
) -> None:
    """Pages at any depth: keyset (cursor) pages at 200 random positions per sort, against the
    offset page at n/2, at each size."""
    from passkit_stamps.service import cursors

    loaded = 0
    for n in sizes:
        t0 = time.perf_counter()
        await seed_cards(store, loaded, n)
        loaded = n
        results.append((kind, f"seed {n:,} cards (bulk)", f"{time.perf_counter() - t0:.1f} s"))
        rng = random.Random(n)
        async with store.read() as conn:
            sampled = (
                await conn.exec_driver_sql(
                    "SELECT c.serial, c.created_at, c.stamps, h.name FROM cards c "
                    "JOIN holders h ON h.id = c.holder_id WHERE c.holder_id >= 10000000 "
                    "AND (c.holder_id % 997) = 5"
                )
            ).all()
        for sort in ("-created_at", "stamps", "name"):
            key = sort.removeprefix("-")
            timings: list[float] = []
            for _ in range(200):
                serial, created, stamps, name = rng.choice(sampled)
                value: Any = {"created_at": created, "stamps": stamps, "name": name}[key]
                if isinstance(value, str) and key == "created_at":
                    value = datetime.fromisoformat(value)
                if isinstance(value, datetime) and value.tzinfo is None:
                    value = value.replace(tzinfo=UTC)
                cursor = cursors.card_cursor(key, sort.startswith("-"), value, serial)
                t0 = time.perf_counter()
                page = await service.list_cards(sort=sort, limit=50, cursor=cursor)
                timings.append((time.perf_counter() - t0) * 1000)
                assert page.items
            results.append(
                (
                    kind,
                    f"cursor page ({sort}), {n:,} cards, 200 depths",
                    f"p50 {percentile(timings, 50):.1f} ms, p99 {percentile(timings, 99):.1f} ms",
                )
            )
        first: list[float] = []
        for _ in range(20):
            t0 = time.perf_counter()
            await service.list_cards(limit=50, count_limit=1000)
            first.append((time.perf_counter() - t0) * 1000)
        results.append(
            (
                kind,
                f"first page (count <= 1000), {n:,} cards",
                f"p50 {percentile(first, 50):.1f} ms, p99 {percentile(first, 99):.1f} ms",
            )
        )
        t0 = time.perf_counter()
        await service.list_cards(limit=50, offset=n // 2, sort="created_at")
        results.append(
            (
                kind,
                f"offset page at n/2, {n:,} cards",
                f"{(time.perf_counter() - t0) * 1000:.1f} ms",
            )
        )


async def run_pages(kind: str, pg_url: str, sizes: tuple[int, ...], results: list[Row]) -> None:
    big, _small = templates()
    async with open_store(kind, pg_url, pool_size=20) as store:
        service = StampService(store)
        await service.publish_template(big)
        await bench_pages(service, store, results, kind, sizes)


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
    parser.add_argument("--cards", type=int, default=100_000)
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
        "--pages",
        default="",
        help="only the page rows, at these card counts (e.g. 100000,1000000)",
    )
    args = parser.parse_args()
    results: list[Row] = []
    if args.pages:
        sizes = tuple(int(x) for x in args.pages.split(","))
        for kind in ("sqlite", "postgresql"):
            if args.backend in ("both", kind):
                await run_pages(kind, args.postgres, sizes, results)
        print_table(results)
        return
    if args.backend != "postgresql":
        await run_backend("sqlite", "", args.cards, results, args.stamps_only)
    if args.backend == "sqlite":
        print_table(results)
        return
    reason = await postgres_answers(args.postgres)
    if reason is None:
        await run_backend("postgresql", args.postgres, args.cards, results, args.stamps_only)
    else:
        print(f"PostgreSQL rows SKIPPED: {args.postgres} does not answer ({reason})")
    print_table(results)


if __name__ == "__main__":
    asyncio.run(main())
