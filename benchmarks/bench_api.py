"""Till API benchmark: stamps a second and latency through the API over a real uvicorn server on
loopback, beside ``StampService.add_stamps`` in-process, in the same run, on each store.

    .venv/bin/python benchmarks/bench_api.py [--stamps 2000] [--postgres URL]

Per store (SQLite in a temporary file; PostgreSQL at ``--postgres``, else
``PASSKIT_STAMPS_TEST_POSTGRES_URL``, else postgresql://postgres@127.0.0.1:5432/test, in a schema
of its own): 200 cards of a no-limits program; then ``--stamps`` stamps, one per request, spread
over the cards round-robin, at 1 and at 8 concurrent callers, in-process and API
interleaved, best of 3 runs each (the machine's other load then hits both alike):

* in-process: ``await service.add_stamps(serial, 1, actor=...)`` from N tasks;
* API app, no server: the same request handed to the API's ASGI app directly (what the API
  layer costs apart from HTTP and the socket);
* API: ``POST /cards/{serial}/stamps`` with a staff key from N keep-alive HTTP/1.1 connections
  (a minimal client on raw asyncio streams, so the figure is the server's, not an HTTP client
  library's) to ``uvicorn`` (httptools, uvloop, access log off) in another process.

Both sides run on uvloop. "CPU ms": CPU time a stamp of the process that serves it (the
benchmark's own for in-process, the server's for the API; the client's is not counted: ~0.1 ms).
The issue's target: the API costs at most 30% of the in-process rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from passkit_stamps.model import CardTemplate  # noqa: E402
from passkit_stamps.service import StampService  # noqa: E402
from passkit_stamps.store.store import Store  # noqa: E402

CARDS = 200
CONCURRENCY = (1, 8)
WARMUP = 100
#: Runs of each (interleaved); the best counts.
ROUNDS = 3


def template() -> CardTemplate:
    base = CardTemplate.load(ROOT / "templates" / "coffee").model_dump()
    base.update(id="bench", limits={}, expiry={"kind": "none"}, stamps_required=30)
    base["rewards"] = [{"at": 30, "title": "Free coffee"}]
    return CardTemplate.model_validate(base)


def connect_args(schema: str | None) -> dict[str, Any]:
    if schema is None:
        return {}
    return {"connect_args": {"server_settings": {"search_path": f"{schema},public"}}}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- the server process ---------------------------------------------------------------------------


def serve(url: str, schema: str | None, port: int) -> None:
    import uvicorn

    from passkit_stamps.api import ApiConfig, create_api

    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        store = await Store.open(url, pool_size=20, **connect_args(schema))
        holder["api"] = create_api(StampService(store), ApiConfig(rate=1e6, burst=1_000_000))
        try:
            yield
        finally:
            await store.close()

    from starlette.applications import Starlette

    parent = Starlette(lifespan=lifespan)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await parent(scope, receive, send)
        else:
            await holder["api"](scope, receive, send)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )


# -- the client -----------------------------------------------------------------------------------


async def http_worker(
    port: int, key: str, serials: list[str], start: int, n: int, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"count": 1}'
    try:
        for i in range(n):
            serial = serials[(start + i) % len(serials)]
            request = (
                f"POST /cards/{serial}/stamps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"API answered {head[:40]!r}: {answer[:200]!r}")
    finally:
        writer.close()


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of this process, or of another one (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def asgi_caller(app: Any, key: str, serials: list[str]) -> Any:
    """Stamps through the API app called directly (no server, no socket): what the API layer
    itself costs, apart from HTTP."""
    body = b'{"count": 1}'
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def call(start: int, n: int, latencies: list[float]) -> None:
        for i in range(n):
            path = f"/cards/{serials[(start + i) % len(serials)]}/stamps"
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 2),
            }
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            status: list[int] = []

            async def receive(messages: list[Any] = messages) -> Any:
                return messages.pop() if messages else {"type": "http.disconnect"}

            async def send(message: Any, status: list[int] = status) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            t0 = time.perf_counter()
            await app(scope, receive, send)
            latencies.append(time.perf_counter() - t0)
            if status != [200]:
                raise RuntimeError(f"API answered {status}")

    return call


async def run_callers(
    concurrency: int,
    total: int,
    call: Callable[[int, int, list[float]], Awaitable[None]],
    server: int | None = None,
) -> tuple[float, float, float, float]:
    """(stamps/s, p50 ms, p99 ms, server CPU ms a stamp) of ``total`` stamps from
    ``concurrency`` callers. The server is this process (in-process) or ``server``'s pid."""
    latencies: list[float] = []
    per = total // concurrency
    cpu0 = cpu_seconds(server)
    t0 = time.perf_counter()
    await asyncio.gather(*(call(i * per, per, latencies) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(server) - cpu0
    return (
        per * concurrency / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu / (per * concurrency) * 1000,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the API server exited")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the API server did not start")


# -- one store ------------------------------------------------------------------------------------


async def bench_store(kind: str, url: str, schema: str | None, stamps: int) -> list[list[str]]:
    store = await Store.open(url, pool_size=20, **connect_args(schema))
    service = StampService(store)
    await service.publish_template(template())
    serials = [(await service.issue_card("bench")).card.serial for _ in range(CARDS)]
    key = (await service.create_api_key("bench till", "staff")).secret
    actor = "api-key:bench"

    from passkit_stamps.api import ApiConfig, create_api

    in_asgi = asgi_caller(create_api(service, ApiConfig(rate=1e6, burst=1_000_000)), key, serials)

    async def in_process(start: int, n: int, latencies: list[float]) -> None:
        for i in range(n):
            t0 = time.perf_counter()
            await service.add_stamps(serials[(start + i) % CARDS], 1, actor=actor)
            latencies.append(time.perf_counter() - t0)

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, "--port", str(port)]
        + (["--schema", schema] if schema else []),
    )
    rows: list[list[str]] = []
    try:
        await wait_for(port, process)

        async def through_api(start: int, n: int, latencies: list[float]) -> None:
            await http_worker(port, key, serials, start, n, latencies)

        await run_callers(1, WARMUP, in_process)
        await run_callers(1, WARMUP, through_api, process.pid)
        for c in CONCURRENCY:
            # Interleaved, best of ROUNDS each: the machine's other load hits both alike.
            local = await run_callers(c, stamps, in_process)
            asgi = await run_callers(c, stamps, in_asgi)
            api = await run_callers(c, stamps, through_api, process.pid)
            for _ in range(ROUNDS - 1):
                local = max(local, await run_callers(c, stamps, in_process))
                asgi = max(asgi, await run_callers(c, stamps, in_asgi))
                api = max(api, await run_callers(c, stamps, through_api, process.pid))
            for path, (rate, p50, p99, cpu), note in (
                ("in-process", local, ""),
                ("API app, no server", asgi, f"{100 * (1 - asgi[0] / local[0]):+.0f}%"),
                ("API (uvicorn)", api, f"{100 * (1 - api[0] / local[0]):+.0f}%"),
            ):
                rows.append([kind, str(c), path, f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                             f"{cpu:.2f}", note])  # fmt: skip
    finally:
        process.terminate()
        process.wait(10)
        await store.close()
    return rows


async def main(args: argparse.Namespace) -> None:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as folder:
        rows += await bench_store(
            "SQLite", f"sqlite:///{Path(folder) / 'bench.db'}", None, args.stamps
        )
    import asyncpg

    pg = args.postgres
    try:
        admin = await asyncio.wait_for(asyncpg.connect(pg), 5)
    except Exception as exc:  # any failure: skip the PostgreSQL rows, say why
        print(f"PostgreSQL rows skipped: {type(exc).__name__}: {exc}")
    else:
        schema = "pks_bench_" + secrets.token_hex(4)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            rows += await bench_store("PostgreSQL", pg, schema, args.stamps)
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    headers = ["store", "callers", "path", "stamps/s", "p50 ms", "p99 ms", "CPU ms", "API cost"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=int, default=2000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve, parsed.schema, parsed.port)
    else:
        import uvloop

        uvloop.run(main(parsed))
