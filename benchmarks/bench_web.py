"""Benchmark the web app over a real uvicorn server on 127.0.0.1 (a separate, single process).

Seeds 10,000 cards and 20,000 registrations (5,000 devices x 4 cards) in a SQLite store (or the
PostgreSQL URL given with --db), starts ``uvicorn`` in a child process (one worker: one core),
and drives it with httpx async clients, bounded in requests and time. Prints requests/s and
p50/p99 latency for the serials endpoint and the pass endpoint (200 and 304), and the server's
peak RSS.

    .venv/bin/python benchmarks/bench_web.py [--requests 3000] [--concurrency 16] [--db URL]

Targets: serials p99 under 20 ms; the pass 304 path at least 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

CARDS = 10_000
DEVICES = 5_000
PER_DEVICE = 4
FAR_FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the server process ---------------------------------------------------------------------------


def serve(db: str, port: int, pki_dir: str) -> None:
    import uvicorn

    from passkit_stamps.devpki import make_dev_pki
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store
    from passkit_stamps.web.app import create_app
    from passkit_stamps.web.config import WebConfig

    async def main() -> None:
        store = await Store.open(db)
        config = WebConfig(
            public_url=f"http://127.0.0.1:{port}", secret_key=b"b" * 32, allow_http=True
        )
        app = create_app(StampService(store), make_dev_pki(pki_dir).credentials(), config)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        await server.serve()

    asyncio.run(main())


# -- seeding ------------------------------------------------------------------------------------


async def seed(db: str, pki_dir: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """(serial, token) of every card, device ids, pass type id."""
    from passkit_stamps.devpki import make_dev_pki
    from passkit_stamps.model import CardTemplate, Holder
    from passkit_stamps.service import StampService
    from passkit_stamps.store.schema import devices, registrations
    from passkit_stamps.store.store import Store

    pass_type = make_dev_pki(pki_dir).pass_type_identifier
    store = await Store.open(db)
    service = StampService(store)
    root = Path(__file__).resolve().parent.parent
    await service.publish_template(CardTemplate.load(root / "templates" / "coffee"))
    cards: list[tuple[str, str]] = []
    started = time.perf_counter()
    for i in range(CARDS):
        change = await service.issue_card("coffee", Holder(name=f"Holder {i}"))
        cards.append((change.card.serial, change.card.authentication_token))
    seeded = time.perf_counter() - started
    now = datetime.now(UTC)
    device_ids = [secrets.token_hex(16) for _ in range(DEVICES)]
    rng = random.Random(7)
    async with store.write() as conn:
        await conn.execute(
            devices.insert(),
            [
                {
                    "device_library_id": d,
                    "push_token": secrets.token_hex(32),
                    "created_at": now,
                    "updated_at": now,
                }
                for d in device_ids
            ],
        )
        rows = []
        for d in device_ids:
            for serial, _ in rng.sample(cards, PER_DEVICE):
                rows.append(
                    {
                        "device_library_id": d,
                        "pass_type_id": pass_type,
                        "serial": serial,
                        "created_at": now,
                    }
                )
        await conn.execute(registrations.insert(), rows)
        count = await conn.scalar(sa.select(sa.func.count()).select_from(registrations))
    await store.close()
    print(f"seeded {len(cards)} cards in {seeded:.1f} s and {count} registrations", flush=True)
    return cards, device_ids, pass_type


# -- load ---------------------------------------------------------------------------------------


async def load(
    base: str, requests: list[tuple[str, dict[str, str]]], concurrency: int, limit_s: float
) -> tuple[float, list[float], dict[int, int]]:
    """Send the requests with ``concurrency`` clients; (elapsed, latencies, status counts)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))
    deadline = time.perf_counter() + limit_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while queue and time.perf_counter() < deadline:
                path, headers = queue.pop()
                t0 = time.perf_counter()
                response = await client.get(path, headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


async def in_process(
    db: str, pki_dir: str, requests: list[tuple[str, dict[str, str]]]
) -> tuple[float, list[float], dict[int, int]]:
    """The app's own cost per request: the ASGI app called directly, one request at a time
    (no HTTP parsing, no client): what one core can serve at most."""
    from passkit_stamps.devpki import make_dev_pki
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store
    from passkit_stamps.web.app import create_app
    from passkit_stamps.web.config import WebConfig

    store = await Store.open(db)
    config = WebConfig(public_url="http://127.0.0.1", secret_key=b"b" * 32, allow_http=True)
    app = create_app(StampService(store), make_dev_pki(pki_dir).credentials(), config)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def call(path: str, headers: dict[str, str]) -> int:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        status = 0

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])  # type: ignore[call-overload]

        await app(scope, receive, send)
        return status

    for path, headers in requests[:100]:
        await call(path, headers)
    started = time.perf_counter()
    for path, headers in requests:
        t0 = time.perf_counter()
        code = await call(path, headers)
        latencies.append(time.perf_counter() - t0)
        statuses[code] = statuses.get(code, 0) + 1
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed, latencies, statuses


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    db = args.db or f"sqlite:///{work / 'bench.db'}"
    pki_dir = str(work / "pki")
    cards, device_ids, pass_type = await seed(db, pki_dir)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", db, str(port), pki_dir],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                try:
                    await probe.get(f"{base}/v1/log")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        rng = random.Random(11)
        n = args.requests
        hot = cards[:50]  # cards whose signed pass stays in the builder's cache
        scenarios = {
            "serials (all, 200)": [
                (f"/v1/devices/{rng.choice(device_ids)}/registrations/{pass_type}", {})
                for _ in range(n)
            ],
            "serials (since tag, 204)": [
                (
                    f"/v1/devices/{rng.choice(device_ids)}/registrations/{pass_type}"
                    f"?passesUpdatedSince={10 * CARDS}",
                    {},
                )
                for _ in range(n)
            ],
            "pass 304": [
                (
                    f"/v1/passes/{pass_type}/{serial}",
                    {"Authorization": f"ApplePass {token}", "If-Modified-Since": FAR_FUTURE},
                )
                for serial, token in (rng.choice(cards) for _ in range(n))
            ],
            "pass 200 (cached pass)": [
                (f"/v1/passes/{pass_type}/{serial}", {"Authorization": f"ApplePass {token}"})
                for serial, token in (rng.choice(hot) for _ in range(n))
            ],
            "pass 200 (signed now)": [
                (f"/v1/passes/{pass_type}/{serial}", {"Authorization": f"ApplePass {token}"})
                for serial, token in rng.sample(cards, min(n // 4, len(cards)))
            ],
        }
        # Warm up: the template cache, the images of the pass, the connection pool.
        await load(base, scenarios["pass 200 (cached pass)"][:100], 4, 30)
        rows = []
        for name, requests in scenarios.items():
            elapsed, lat, statuses = await load(base, requests, args.concurrency, args.seconds)
            rows.append(
                (
                    name,
                    len(lat),
                    len(lat) / elapsed,
                    percentile(lat, 50) * 1000,
                    percentile(lat, 99) * 1000,
                    ",".join(f"{k}x{v}" for k, v in sorted(statuses.items())),
                )
            )
        print()
        print(f"server: uvicorn, 1 process, {db.split(':')[0]}; concurrency {args.concurrency}")
        print(f"{'endpoint':<26}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses")
        for name, count, rps, p50, p99, statuses in rows:
            print(f"{name:<26}{count:>9}{rps:>9.0f}{p50:>9.2f}{p99:>9.2f}  {statuses}")
        print(f"server peak RSS: {peak_rss_mb(server.pid):.0f} MB")
        print()
        print("in process (the ASGI app called directly, sequentially: one core's capacity)")
        print(f"{'endpoint':<26}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses")
        for name in ("serials (all, 200)", "pass 304", "pass 200 (cached pass)"):
            elapsed, lat, statuses = await in_process(db, pki_dir, scenarios[name])
            codes = ",".join(f"{k}x{v}" for k, v in sorted(statuses.items()))
            print(
                f"{name:<26}{len(lat):>9}{len(lat) / elapsed:>9.0f}"
                f"{percentile(lat, 50) * 1000:>9.2f}{percentile(lat, 99) * 1000:>9.2f}  {codes}"
            )
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="time bound per scenario")
    parser.add_argument("--db", help="store URL (default: a new SQLite file)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
