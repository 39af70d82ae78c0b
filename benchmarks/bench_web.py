"""Benchmark the web app over a real uvicorn server on 127.0.0.1 (one worker process: one core).

Seeds 10,000 cards and 20,000 registrations (5,000 devices x 4 cards) in a SQLite store (or the
PostgreSQL URL given with --db), starts uvicorn (httptools, uvloop, no access log) in a child
process pinned to one CPU, and drives it from another CPU with ``wrk`` (one thread, keep-alive
HTTP/1.1, ``--concurrency`` connections) or, without wrk, with a Python generator (raw asyncio
streams, keep-alive HTTP/1.1, uvloop). Every scenario runs for ``--seconds``; the table shows
requests/s, p50/p99 latency at that concurrency and the status codes seen. The first row is a
trivial ASGI endpoint in the same server: the ceiling of server + generator, so a scenario near
it is bounded by the generator or uvicorn, not by the app. Then the ASGI app is called directly,
sequentially, in this process (no HTTP): the app's own cost per request.

    .venv/bin/python benchmarks/bench_web.py [--seconds 8] [--concurrency 8] [--db URL]
        [--generator auto|wrk|python] [--workdir DIR]

``--workdir`` keeps the seeded SQLite store and keys there and reuses them on the next run.
Targets (issue 5): serials p99 under 20 ms; the pass 304 path at least 1,000 requests/s on one
core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

CARDS = 10_000
DEVICES = 5_000
PER_DEVICE = 4
FAR_FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"
#: The trivial endpoint the server answers without the app (the baseline row).
PING = "/_bench/ping"

Request = tuple[str, dict[str, str]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpus() -> tuple[int | None, int | None]:
    """(server CPU, load generator CPU): two different ones when there are two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# -- the server process ---------------------------------------------------------------------------


def serve(db: str, port: int, pki_dir: str, cpu: int | None) -> None:
    """Run the app under uvicorn as ``passkit-stamps serve`` would, on one CPU."""
    import uvicorn
    import uvloop

    from passkit_stamps.runtime.devpki import make_dev_pki
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store
    from passkit_stamps.web.app import create_app
    from passkit_stamps.web.config import WebConfig

    _pin(cpu)

    async def main() -> None:
        store = await Store.open(db)
        config = WebConfig(
            public_url=f"http://127.0.0.1:{port}", secret_key=b"b" * 32, allow_http=True
        )
        app = create_app(StampService(store), make_dev_pki(pki_dir).credentials(), config)

        async def with_ping(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == PING:
                headers = [(b"content-type", b"text/plain"), (b"content-length", b"3")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b"ok\n"})
                return
            await app(scope, receive, send)

        server = uvicorn.Server(
            uvicorn.Config(
                with_ping,
                host="127.0.0.1",
                port=port,
                http="httptools",
                log_level="warning",
                access_log=False,
                server_header=False,
                lifespan="off",
            )
        )
        await server.serve()

    uvloop.run(main())


# -- seeding ------------------------------------------------------------------------------------


@dataclass
class Seed:
    cards: list[tuple[str, str]]  # (serial, token)
    device_ids: list[str]
    pass_type: str


async def seed(db: str, pki_dir: str) -> Seed:
    """Cards issued through the service; devices and registrations inserted in bulk."""
    from passkit_stamps.model import CardTemplate, Holder
    from passkit_stamps.runtime.devpki import make_dev_pki
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
        rows = [
            {"device_library_id": d, "pass_type_id": pass_type, "serial": serial, "created_at": now}
            for d in device_ids
            for serial, _ in rng.sample(cards, PER_DEVICE)
        ]
        await conn.execute(registrations.insert(), rows)
        count = await conn.scalar(sa.select(sa.func.count()).select_from(registrations))
    await store.close()
    print(f"seeded {len(cards)} cards in {seeded:.1f} s and {count} registrations", flush=True)
    return Seed(cards, device_ids, pass_type)


async def seeded(work: Path, db: str | None) -> tuple[str, Seed]:
    """The store URL and what is in it: reused from ``work`` when seeded there before."""
    url = db or f"sqlite:///{work / 'bench.db'}"
    marker = work / "seed.json"
    if db is None and marker.exists():
        data = json.loads(marker.read_text())
        print(f"reusing the seeded store in {work}", flush=True)
        return url, Seed([tuple(c) for c in data["cards"]], data["devices"], data["pass_type"])
    found = await seed(url, str(work / "pki"))
    if db is None:
        marker.write_text(
            json.dumps(
                {"cards": found.cards, "devices": found.device_ids, "pass_type": found.pass_type}
            )
        )
    return url, found


# -- results ------------------------------------------------------------------------------------


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def codes(self) -> str:
        text = ",".join(f"{k}x{v}" for k, v in sorted(self.statuses.items()))
        return text + (f" errors {self.errors}" if self.errors else "")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


# -- load generator: wrk --------------------------------------------------------------------------

# Requests come from a file (one a line: path, then tab-separated "Name: value" headers); each
# connection walks the list from its own offset. Status codes are counted per thread and summed
# in done(), which prints one RESULT line.
_WRK_SCRIPT = r"""
local lines = {}
local reqs = {}
local idx = 0
statuses = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local path = nil
    local headers = {}
    for field in string.gmatch(line, "[^\t]+") do
      if path == nil then
        path = field
      else
        local k, v = string.match(field, "^([^:]+): (.*)$")
        headers[k] = v
      end
    end
    reqs[#reqs + 1] = wrk.format("GET", path, headers)
  end
  idx = math.random(#reqs)
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do
      counts[k] = (counts[k] or 0) + v
    end
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout))
  for k, v in pairs(counts) do
    io.write(string.format(" %d=%d", k, v))
  end
  io.write("\n")
end
"""


def wrk_load(
    port: int, requests: list[Request], seconds: float, concurrency: int, cpu: int | None, tmp: Path
) -> Result:
    script = tmp / "bench.lua"
    script.write_text(_WRK_SCRIPT)
    listing = tmp / "requests.txt"
    listing.write_text(
        "".join(
            "\t".join([path, *(f"{k}: {v}" for k, v in headers.items())]) + "\n"
            for path, headers in requests
        )
    )
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(listing),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, preexec_fn=lambda: _pin(cpu)
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    fields = line.split()
    count, duration_us, p50_us, p99_us, errors = (int(x) for x in fields[1:6])
    statuses = {int(k): int(v) for k, v in (f.split("=") for f in fields[6:])}
    return Result(count, duration_us / 1e6, p50_us / 1000, p99_us / 1000, statuses, errors)


# -- load generator: Python (raw asyncio streams, keep-alive HTTP/1.1) ----------------------------


async def _python_load(
    port: int, requests: list[Request], seconds: float, concurrency: int
) -> Result:
    raw = [
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
        for path, headers in requests
    ]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        try:
            while time.perf_counter() < deadline:
                message = raw[i % len(raw)]
                i += 1
                t0 = time.perf_counter()
                writer.write(message)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        raise RuntimeError("chunked responses are not expected here")
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    step = max(1, len(raw) // concurrency)
    await asyncio.gather(*(connection(n * step) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Result(
        len(latencies),
        elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        statuses,
    )


def _python_worker(port: int, listing: str, seconds: float, concurrency: int, cpu: str) -> None:
    """Child process: the Python generator on its own CPU; prints the result as JSON."""
    import uvloop

    _pin(None if cpu == "-" else int(cpu))
    requests: list[Request] = [(p, h) for p, h in json.loads(Path(listing).read_text())]
    result = uvloop.run(_python_load(port, requests, seconds, concurrency))
    print(json.dumps(result.__dict__))


def python_load(
    port: int, requests: list[Request], seconds: float, concurrency: int, cpu: int | None, tmp: Path
) -> Result:
    listing = tmp / "requests.json"
    listing.write_text(json.dumps(requests))
    args = [
        str(port),
        str(listing),
        str(seconds),
        str(concurrency),
        "-" if cpu is None else str(cpu),
    ]
    out = subprocess.run(
        [sys.executable, __file__, "--generate", *args], capture_output=True, text=True, check=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    data["statuses"] = {int(k): v for k, v in data["statuses"].items()}
    return Result(**data)


# -- in process ---------------------------------------------------------------------------------


async def in_process(db: str, pki_dir: str, requests: list[Request]) -> Result:
    """The app's own cost per request: the ASGI app called directly, one request at a time
    (no HTTP parsing, no client): what one core can serve at most."""
    from passkit_stamps.runtime.devpki import make_dev_pki
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

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

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
    return Result(
        len(latencies),
        elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        statuses,
    )


# -- the run ------------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scenarios(found: Seed, n: int) -> dict[str, list[Request]]:
    rng = random.Random(11)
    pass_type = found.pass_type
    cards, device_ids = found.cards, found.device_ids
    hot = cards[:50]  # cards whose signed pass stays in the builder's cache
    serials = f"/v1/devices/{{}}/registrations/{pass_type}"
    return {
        f"baseline ({PING})": [(PING, {})],
        "serials (all, 200)": [(serials.format(rng.choice(device_ids)), {}) for _ in range(n)],
        "serials (since tag, 204)": [
            (serials.format(rng.choice(device_ids)) + f"?passesUpdatedSince={10 * CARDS}", {})
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
        # Every card once, in random order: each answer is signed when asked for.
        "pass 200 (signed now)": [
            (f"/v1/passes/{pass_type}/{serial}", {"Authorization": f"ApplePass {token}"})
            for serial, token in rng.sample(cards, len(cards))
        ],
    }


def _row(name: str, r: Result) -> str:
    return f"{name:<26}{r.requests:>9}{r.rate:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}  {r.codes()}"


HEADER = f"{'endpoint':<26}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses"


async def run(args: argparse.Namespace) -> None:
    keep = args.workdir is not None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-web-"))
    work.mkdir(parents=True, exist_ok=True)
    db, found = await seeded(work, args.db)
    pki_dir = str(work / "pki")
    server_cpu, load_cpu = _cpus()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    load = wrk_load if generator == "wrk" else python_load
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", db, str(port), pki_dir, str(server_cpu)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-load-"))
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        cases = scenarios(found, args.requests)
        # Warm up: the template cache, the images of the pass, the store's connections.
        load(port, cases["pass 200 (cached pass)"], 2, args.concurrency, load_cpu, tmp)
        load(port, cases["pass 304"], 1, args.concurrency, load_cpu, tmp)
        load_before = os.getloadavg()
        rows = []
        for name, requests in cases.items():
            result = load(port, requests, args.seconds, args.concurrency, load_cpu, tmp)
            rows.append((name, result))
        load_after = os.getloadavg()
        pinned = (
            f"server on CPU {server_cpu}, {generator} on CPU {load_cpu}"
            if server_cpu is not None
            else f"not pinned (one CPU), {generator}"
        )
        print()
        print(
            f"uvicorn (httptools, uvloop, no access log), 1 process, {db.split(':')[0]}; {pinned}; "
            f"{args.concurrency} connections; {args.seconds:g} s per row"
        )
        print(
            f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
            f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
            f"({os.cpu_count()} CPUs)"
        )
        print(HEADER)
        baseline = rows[0][1].rate
        for name, result in rows:
            note = ""
            if name != rows[0][0] and result.rate > 0.7 * baseline:
                note = "  (near the baseline: bounded by uvicorn/generator)"
            print(_row(name, result) + note)
        print(f"server peak RSS: {peak_rss_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("in process (the ASGI app called directly, sequentially, no HTTP: the app's cost)")
    print(HEADER)
    _pin(server_cpu)
    for name in ("serials (all, 200)", "pass 304", "pass 200 (cached pass)"):
        result = await in_process(db, pki_dir, cases[name][: args.requests])
        print(_row(name, result))
    if not keep and args.db is None:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve_cpu = None if sys.argv[5] == "None" else int(sys.argv[5])
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], serve_cpu)
        return
    if len(sys.argv) == 7 and sys.argv[1] == "--generate":
        port, listing, seconds, concurrency, cpu = sys.argv[2:]
        _python_worker(int(port), listing, float(seconds), int(concurrency), cpu)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each row")
    parser.add_argument("--concurrency", type=int, default=8, help="open connections")
    parser.add_argument("--requests", type=int, default=3000, help="distinct requests per scenario")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--db", help="store URL (default: a new SQLite file)")
    parser.add_argument("--workdir", help="keep (and reuse) the seeded SQLite store here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
