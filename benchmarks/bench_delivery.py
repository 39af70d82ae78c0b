"""Dispatcher benchmark (docs/push.md, "The dispatcher"): drain and latency.

* **drain**: ``--cards`` cards (default 100,000), one registered device each, seeded with SQL;
  a design update of their template queues one silent update per card; ONE worker (this
  process, pinned to core 0) drains the outbox through the APNs client into the fake APNs
  (``python -m passkit_stamps.testing.fake_apns --quiet``, a process of its own pinned to core 1,
  certificate auth with the development PKI). Figures: enqueue time, drain time, cards/s, peak
  RSS of this process before and during the drain (memory flat: it must not grow with cards).
* **latency**: the worker running, ``--rate`` stamps per second (default 200) for ``--seconds``
  on random cards; each stamp's time from the call (the commit included) to its push arriving
  at the fake (a fake that notes arrival times: this script with ``--timed-fake``); p50, p99.

Backends: SQLite (a temp file) and PostgreSQL (``--postgres``, else
``PASSKIT_STAMPS_TEST_POSTGRES_URL``, else postgresql://postgres@127.0.0.1:5432/test; a schema of
its own, dropped afterwards). ``--runs`` repeats each row (the machine is shared: spread shown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("BENCH_SRC", str(ROOT / "src")))

from _stores import open_store  # noqa: E402  (benchmarks/_stores.py)
from passkit_stamps.model import CardTemplate  # noqa: E402
from passkit_stamps.store.store import Store  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PASS_TYPE = "pass.com.example.stamps"


def template(color: str = "#3e2417") -> CardTemplate:
    data = CardTemplate.load(ROOT / "templates" / "coffee").model_dump()
    data.update(id="bench", limits={}, expiry={"kind": "none"})
    data["design"] = {**data["design"], "background_color": color}
    return CardTemplate.model_validate(data)


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


_SERIES = {
    "postgresql": "SELECT g AS i FROM generate_series(1, {n}) AS g",
    "sqlite": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
    "SELECT i FROM s",
}


def _seed_statements(dialect: str, n: int) -> list[str]:
    series = _SERIES[dialect].format(n=n)
    if dialect == "postgresql":
        serial = "'B' || lpad(i::text, 15, '0')"
        token = "lpad(to_hex(i), 64, '0')"
    else:
        serial = "'B' || substr('000000000000000' || i, -15, 15)"
        token = "printf('%064x', i)"
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
        f"{now} FROM ({series}) AS s",
        f"INSERT INTO devices (device_library_id, push_token, created_at, updated_at) "
        f"SELECT 'device-' || i, {token}, {now}, {now} FROM ({series}) AS s",
        f"INSERT INTO registrations (device_library_id, pass_type_id, serial, created_at) "
        f"SELECT 'device-' || i, '{PASS_TYPE}', {serial}, {now} FROM ({series}) AS s",
    ]


async def seed(store: Store, n: int) -> None:
    from passkit_stamps.service import StampService

    await StampService(store).publish_template(template())
    dialect = "postgresql" if store.is_postgres else "sqlite"
    async with store.write() as conn:
        for statement in _seed_statements(dialect, n):
            await conn.exec_driver_sql(statement)
    if store.is_postgres:
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")


class FakeProcess:
    """A fake APNs in a process of its own, pinned to core 1."""

    def __init__(self, args: list[str], wwdr: Path) -> None:
        self.ca = Path(tempfile.mkdtemp()) / "ca.pem"
        command = [*args, "--port", "0", "--ca-out", str(self.ca), "--client-ca", str(wwdr)]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: pin(1),
        )
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the fake APNs did not start")
            if line.startswith("LISTENING"):
                _, self.host, port = line.split()
                self.port = int(port)
            if line.startswith("CA"):
                break

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out


async def drain_run(
    kind: str, n: int, pg_url: str, pki: Any, batch: int, concurrency: int = 2
) -> dict[str, Any]:
    from passkit_stamps.apple.apns import APNsClient
    from passkit_stamps.delivery.apple import AppleSender
    from passkit_stamps.delivery.worker import DeliveryWorker
    from passkit_stamps.service import StampService

    pin(0)
    fake = FakeProcess(
        [sys.executable, "-m", "passkit_stamps.testing.fake_apns", "--quiet"], pki.wwdr_cert
    )
    try:
        async with open_store(kind, pg_url) as store:
            await seed(store, n)
            service = StampService(store)
            t0 = time.perf_counter()
            result = await service.publish_template(template("#102030"))
            enqueue = time.perf_counter() - t0
            assert result.cards_updated == n, result
            rss_before = rss_mib()
            peak = rss_before
            async with APNsClient(
                pki.credentials(), host=fake.host, port=fake.port, ca=fake.ca
            ) as client:
                worker = DeliveryWorker(
                    service,
                    [AppleSender(service, client)],
                    batch_size=batch,
                    poll_interval=0.05,
                    concurrency=concurrency,
                )
                t0 = time.perf_counter()
                cpu0 = time.process_time()
                worker.start()
                while worker.metrics.rows["apple"] < n:
                    await asyncio.sleep(0.05)
                    peak = max(peak, rss_mib())
                    if time.perf_counter() - t0 > 600:
                        raise RuntimeError(f"drain stuck at {worker.metrics.rows['apple']} of {n}")
                drain = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
                await worker.stop()
    finally:
        out = fake.stop()
    return {
        "enqueue_s": enqueue,
        "drain_s": drain,
        "rate": n / drain,
        "cpu_s": cpu,
        "cards_per_cpu_s": n / cpu,
        "rss_before": rss_before,
        "rss_peak": peak,
        "fake": out.strip().splitlines()[-1] if out.strip() else "",
    }


async def other_database_writer(pg_url: str, database: str, hold: float) -> None:
    """Another application on the same server: write transactions of ``hold`` seconds, back to
    back, in ``database`` (each holds a transaction id while it runs, as a bulk load does)."""
    import asyncpg

    plain = pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(plain.rsplit("/", 1)[0] + "/" + database)
    try:
        while True:
            async with conn.transaction():
                await conn.fetchval("SELECT pg_current_xact_id()")
                await asyncio.sleep(hold)
    finally:
        await conn.close()


async def latency_run(
    kind: str,
    n: int,
    pg_url: str,
    pki: Any,
    rate: float,
    seconds: float,
    other_db: tuple[str, float] | None = None,
) -> dict[str, Any]:
    from passkit_stamps.apple.apns import APNsClient
    from passkit_stamps.delivery.apple import AppleSender
    from passkit_stamps.delivery.worker import DeliveryWorker
    from passkit_stamps.service import StampService

    pin(0)
    times_file = Path(tempfile.mkdtemp()) / "arrivals.json"
    fake = FakeProcess([sys.executable, __file__, "--timed-fake", str(times_file)], pki.wwdr_cert)
    starts: list[tuple[str, float]] = []
    committed: dict[str, list[float]] = {}
    try:
        async with open_store(kind, pg_url) as store:
            await seed(store, n)
            service = StampService(store)
            async with APNsClient(
                pki.credentials(), host=fake.host, port=fake.port, ca=fake.ca
            ) as client:
                worker = DeliveryWorker(service, [AppleSender(service, client)], poll_interval=1.0)
                worker.start()
                writer = None
                if other_db is not None and kind == "postgresql":
                    writer = asyncio.create_task(other_database_writer(pg_url, *other_db))
                rng = random.Random(7)
                interval = 1 / rate
                t0 = time.perf_counter()
                for k in range(int(rate * seconds)):
                    delay = t0 + k * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    i = rng.randint(1, n)
                    started = time.time()
                    await service.add_stamps(f"B{i:015d}", 1)
                    starts.append((f"{i:064x}", started))
                    committed.setdefault(f"{i:064x}", []).append(time.time())
                deadline = time.perf_counter() + 10
                while worker.metrics.rows["apple"] < len(starts) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                if writer is not None:
                    writer.cancel()
                await worker.stop()
    finally:
        fake.stop()
    arrivals: dict[str, list[float]] = json.loads(times_file.read_text())
    latencies = []
    missing = 0
    for token, started in starts:
        after = [t for t in arrivals.get(token, []) if t >= started]
        if not after:
            missing += 1
            continue
        latencies.append((min(after) - started) * 1000)
    latencies.sort()
    pushes = sum(len(times) for times in arrivals.values())
    return {
        "stamps": len(starts),
        "pushes": pushes,
        "duplicates": duplicates(arrivals, committed) / max(1, pushes),
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "missing": missing,
    }


def duplicates(arrivals: dict[str, list[float]], committed: dict[str, list[float]]) -> int:
    """Pushes that brought nothing new: no change of the device's card committed between its
    previous push and this one (tests/delivery/test_crash.py's strict count)."""
    dup = 0
    for token, times in arrivals.items():
        previous = 0.0
        for at in sorted(times):
            dup += not any(previous < done <= at for done in committed.get(token, []))
            previous = at
    return dup


def timed_fake(times_file: str, args: list[str]) -> None:
    """A fake APNs that notes when each push arrived; writes {token: [times]} on SIGTERM."""
    from passkit_stamps.testing import FakeAPNs

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ca-out")
    parser.add_argument("--client-ca")
    o = parser.parse_args(args)
    arrivals: dict[str, list[float]] = {}

    class Timed(FakeAPNs):
        def _answer(self, connection: Any, stream_id: int, request: Any) -> None:
            path = dict(request.headers).get(b":path", b"")
            arrivals.setdefault(path.rsplit(b"/", 1)[-1].decode(), []).append(time.time())
            super()._answer(connection, stream_id, request)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with Timed(client_ca_pem=Path(o.client_ca).read_bytes(), record=False) as fake:
            Path(o.ca_out).write_bytes(fake.ca_pem)
            print(f"LISTENING {fake.host} {fake.port}", flush=True)
            print(f"CA {o.ca_out}", flush=True)
            await stop.wait()
        Path(times_file).write_text(json.dumps(arrivals))

    asyncio.run(main())


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--timed-fake":
        timed_fake(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--latency-cards", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--what", default="drain,latency")
    parser.add_argument("--postgres", default=os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL"))
    parser.add_argument(
        "--other-db-writer",
        metavar="DATABASE:SECONDS",
        help="latency: meanwhile another database of the server runs write transactions of "
        "SECONDS back to back (e.g. postgres:1.0)",
    )
    args = parser.parse_args()
    other_db = None
    if args.other_db_writer:
        database, _, hold = args.other_db_writer.partition(":")
        other_db = (database, float(hold or 1.0))
    pg_url = args.postgres or DEFAULT_PG
    from passkit_stamps.runtime.devpki import make_dev_pki

    pki = make_dev_pki(Path(tempfile.mkdtemp()) / "pki")
    print(f"load average before: {os.getloadavg()}", flush=True)
    for kind in args.backends.split(","):
        if "drain" in args.what:
            runs = [
                asyncio.run(drain_run(kind, args.cards, pg_url, pki, args.batch, args.concurrency))
                for _ in range(args.runs)
            ]
            for r in runs:
                print(f"  {kind} drain run: {json.dumps(r)}", flush=True)
            print(
                f"{kind:10} drain {args.cards} cards: enqueue "
                f"{spread([r['enqueue_s'] for r in runs], '{:.1f}')} s, drain "
                f"{spread([r['drain_s'] for r in runs], '{:.1f}')} s = "
                f"{spread([r['rate'] for r in runs])} cards/s "
                f"({spread([r['cards_per_cpu_s'] for r in runs])} per CPU second), RSS "
                f"{spread([r['rss_before'] for r in runs])} -> "
                f"{spread([r['rss_peak'] for r in runs])} MiB peak",
                flush=True,
            )
        if "latency" in args.what:
            lat = [
                asyncio.run(
                    latency_run(
                        kind, args.latency_cards, pg_url, pki, args.rate, args.seconds, other_db
                    )
                )
                for _ in range(args.runs)
            ]
            for r in lat:
                print(f"  {kind} latency run: {json.dumps(r)}", flush=True)
            print(
                f"{kind:10} latency at {args.rate:.0f} stamps/s: p50 "
                f"{spread([r['p50'] for r in lat])} ms, p99 {spread([r['p99'] for r in lat])} ms, "
                f"max {spread([r['max'] for r in lat])} ms, missing "
                f"{sum(r['missing'] for r in lat)}, duplicate pushes "
                f"{spread([100 * r['duplicates'] for r in lat], '{:.2f}')}%",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
