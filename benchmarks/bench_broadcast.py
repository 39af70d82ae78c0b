"""Broadcast benchmark: enqueue a campaign to N cards; time and peak memory.

    .venv/bin/python benchmarks/bench_broadcast.py [--cards 1000000 100000] [--postgres URL]
                                                   [--sqlite] [--batch-size 1000]

Each size runs in a fresh process (so its peak RSS is its own) on a store of its own:
PostgreSQL (``--postgres``, else ``PASSKIT_STAMPS_TEST_POSTGRES_URL``, else
postgresql://postgres@127.0.0.1:5432/test; a schema dropped afterwards), SQLite with
``--sqlite``. The cards are seeded server-side (``generate_series`` / a recursive CTE): half of
them saved in Apple Wallet, half in Google Wallet, a quarter in both, one in ten with its
notification budget spent. The timed part is ``service.broadcast(...)``: every card gets the
message, a ``campaign_sent`` journal row, a notification when its budget allows, and one outbox
row per wallet, in batches of ``--batch-size`` cards (one transaction each).

Printed per size: enqueue time, cards/s, outbox rows written, peak RSS of the process, and the
Python heap's peak (tracemalloc) over one batch in the middle of the run (flat memory: both
should not grow with the number of cards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _stores import open_store  # noqa: E402  (benchmarks/_stores.py)
from passkit_stamps.model import CardTemplate  # noqa: E402
from passkit_stamps.service import StampService  # noqa: E402
from passkit_stamps.store.store import Store  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def template() -> CardTemplate:
    data = CardTemplate.load(ROOT / "templates" / "coffee").model_dump()
    data.update(id="bench", limits={}, expiry={"kind": "none"})
    return CardTemplate.model_validate(data)


#: Seeding statements; ``{n}`` cards, serials ``B`` + 15 digits (valid, sorted like numbers).
_SERIES = {
    "postgresql": "SELECT g AS i FROM generate_series(1, {n}) AS g",
    "sqlite": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
    "SELECT i FROM s",
}


def _seed_statements(dialect: str, n: int) -> list[str]:
    series = _SERIES[dialect].format(n=n)
    serial = "'B' || substr('000000000000000' || i, -15, 15)"
    if dialect == "postgresql":
        serial = "'B' || lpad(i::text, 15, '0')"
    now = "CURRENT_TIMESTAMP"
    return [
        f"INSERT INTO holders (id, name, created_at) SELECT i, 'Holder ' || i, {now} "
        f"FROM ({series}) AS s",
        "INSERT INTO cards (serial, template_id, template_version, holder_id, stamps, "
        "rounds_completed, state, created_at, authentication_token, search_text, change_tag, "
        f"updated_at) SELECT {serial}, 'bench', 1, i, i % 8, 0, 'active', {now}, "
        f"'token-' || i || '-0123456789abcdef', lower({serial}) || ' holder ' || i, 0, {now} "
        f"FROM ({series}) AS s",
        f"INSERT INTO card_platforms (serial, platform, added_at) SELECT {serial}, 'apple', "
        f"{now} FROM ({series}) AS s WHERE i % 4 IN (0, 1)",
        f"INSERT INTO card_platforms (serial, platform, added_at) SELECT {serial}, 'google', "
        f"{now} FROM ({series}) AS s WHERE i % 4 IN (1, 2)",
        # one card in ten has spent its budget (3 notifications in the window)
        f"INSERT INTO notifications (serial, at, reason) SELECT {serial}, {now}, 'stamp_added' "
        f"FROM ({series}) AS s, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) AS t "
        "WHERE i % 10 = 3",
    ]


async def seed(store: Store, n: int) -> None:
    service = StampService(store)
    await service.publish_template(template())
    dialect = "postgresql" if store.is_postgres else "sqlite"
    async with store.write() as conn:
        for statement in _seed_statements(dialect, n):
            await conn.exec_driver_sql(statement)
    if store.is_postgres:
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")


async def one_run(kind: str, n: int, pg_url: str, batch: int) -> dict[str, Any]:
    """Seed ``n`` cards, broadcast to them; the figures (run in a process of its own)."""
    async with open_store(kind, pg_url) as store:
        t0 = time.perf_counter()
        await seed(store, n)
        seeded = time.perf_counter() - t0
        service = StampService(store)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        campaign_id = await service.start_campaign("Spring menu: new pastries", {})
        # the heap over one batch in the middle (tracemalloc would slow the whole run)
        half = max(1, n // batch // 2)
        t1 = time.perf_counter()
        await service.resume_campaign(campaign_id, batch_size=batch, max_batches=half)
        tracemalloc.start()
        await service.resume_campaign(campaign_id, batch_size=batch, max_batches=1)
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report = await service.resume_campaign(campaign_id, batch_size=batch)
        elapsed = time.perf_counter() - t1
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert report.finished and report.cards == n, report
        return {
            "backend": kind,
            "cards": n,
            "seed_s": seeded,
            "enqueue_s": elapsed,
            "cards_per_s": n / elapsed,
            "outbox_rows": sum(p.targeted for p in report.platforms),
            "notified": report.notified,
            "silent": report.silent,
            "rss_before_mib": rss_before / 1024,
            "rss_peak_mib": rss_peak / 1024,
            "heap_batch_peak_mib": heap_peak / 2**20,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--sqlite", action="store_true", help="Also run on SQLite.")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # kind:n, in a child
    args = parser.parse_args()
    pg_url = args.postgres or os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL") or DEFAULT_PG
    if args.one:
        kind, n = args.one.split(":")
        print(json.dumps(asyncio.run(one_run(kind, int(n), pg_url, args.batch_size))))
        return
    kinds = ["postgresql", *(["sqlite"] if args.sqlite else [])]
    rows = []
    for kind in kinds:
        for n in args.cards:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{kind}:{n}",
                    "--postgres",
                    pg_url,
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{kind} {n}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = (
        f"{'backend':10} {'cards':>9} {'enqueue':>9} {'cards/s':>8} {'outbox':>9} "
        f"{'notified':>9} {'silent':>8} {'RSS peak':>9} {'heap/batch':>10} {'seed':>7}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['backend']:10} {r['cards']:>9,} {r['enqueue_s']:>8.1f}s {r['cards_per_s']:>8,.0f} "
            f"{r['outbox_rows']:>9,} {r['notified']:>9,} {r['silent']:>8,} "
            f"{r['rss_peak_mib']:>6.1f}MiB {r['heap_batch_peak_mib']:>7.2f}MiB {r['seed_s']:>6.1f}s"
        )


if __name__ == "__main__":
    main()
