"""APNs client benchmark: successful pushes per second over ONE HTTP/2 connection, one client core.

The server runs in its own process pinned to another core (``taskset``-style, with
``os.sched_setaffinity``); this process pins itself to core 0. Rows:

* ``fake``: ``python -m passkit_stamps.testing.fake_apns --quiet`` (h2 + asyncio, TLS).
* ``nginx``: nginx with HTTP/2 + TLS on loopback answering ``location /3/device/ { return 200; }``
  (an independent, C server: the client is the only Python in the loop). Skipped, with the
  reason printed, when nginx is absent.

Per row: pushes/s (wall clock, after a warm-up), client CPU µs per push (``time.process_time``
of this process), p50/p99 latency from submit to result (sampled, every 16th push), and the
peak RSS growth while streaming ``--stream`` tokens through ``push_many`` (a generator: the
tokens never sit in memory). Run it a few times: the machine is shared, report best and spread.

    python benchmarks/bench_apns.py [--pushes 200000] [--stream 1000000] [--runs 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from passkit_stamps.apple.apns import APNsClient, TokenAuth

CLIENT_CORE, SERVER_CORE = 0, 1


def _tokens(n: int, start: int = 0) -> Iterator[str]:
    for i in range(start, start + n):
        yield f"{i:064x}"


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def _preexec_server() -> None:
    _pin(SERVER_CORE)


def start_fake(max_streams: int) -> tuple[subprocess.Popen[str], str, int, Path]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "passkit_stamps.testing.fake_apns",
            "--quiet",
            "--port",
            "0",
            "--max-concurrent-streams",
            str(max_streams),
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_preexec_server,
    )
    assert proc.stdout is not None
    host, port, ca = "", 0, Path()
    while not (host and ca.name):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake APNs did not start")
        parts = line.split()
        if parts[:1] == ["LISTENING"]:
            host, port = parts[1], int(parts[2])
        elif parts[:1] == ["CA"]:
            ca = Path(parts[1])
    return proc, host, port, ca


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;  # nginx < 1.25 syntax, still accepted by newer
        http2_max_concurrent_streams {streams};
        keepalive_requests 100000000;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key.pem;
        location /3/device/ {{ return 200; }}
    }}
}}
"""


def start_nginx(max_streams: int) -> tuple[subprocess.Popen[str], str, int, Path, Path] | str:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return "nginx not installed (apt-get install nginx-light)"
    from passkit_stamps.testing.fake_apns import ServerIdentity

    identity = ServerIdentity.development()
    folder = Path(tempfile.mkdtemp(prefix="bench-apns-nginx-"))
    (folder / "server.pem").write_bytes(identity.certificate_pem)
    key = folder / "server.key.pem"
    key.write_bytes(identity.key_pem)
    key.chmod(0o600)
    (folder / "ca.pem").write_bytes(identity.ca_pem)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port, streams=max_streams))
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_preexec_server,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"nginx failed to start: {proc.stderr.read() if proc.stderr else ''}".strip()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, "localhost", port, folder / "ca.pem", folder
        time.sleep(0.05)
    proc.kill()
    return "nginx did not listen within 5 s"


async def run_once(
    host: str, port: int, ca: Path, pushes: int, token_auth: TokenAuth, max_streams: int
) -> dict[str, float]:
    client = APNsClient(
        token_auth=token_auth,
        topic="pass.com.example.stamps",
        host=host,
        port=port,
        ca=ca,
        connections=1,
        max_streams=max_streams,
        max_in_flight=max_streams + max_streams // 4,
    )
    async with client:
        async for _ in client.push_many(_tokens(5000, 10**9)):  # warm-up, connection set up
            pass
        sent: dict[str, float] = {}
        latencies: list[float] = []
        clock = time.perf_counter

        def tokens() -> Iterator[str]:
            for i, token in enumerate(_tokens(pushes)):
                if not i & 15:
                    sent[token] = clock()
                yield token

        ok = 0
        cpu0, t0 = time.process_time(), clock()
        async for result in client.push_many(tokens()):
            ok += result.ok
            start = sent.pop(result.token, None)
            if start is not None:
                latencies.append(clock() - start)
        wall, cpu = clock() - t0, time.process_time() - cpu0
        assert client.connections_opened == 1, "the benchmark must run over one connection"
    latencies.sort()
    return {
        "ok": ok,
        "rate": ok / wall,
        "cpu_us": cpu / pushes * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


async def stream_memory(
    host: str, port: int, ca: Path, n: int, token_auth: TokenAuth, max_streams: int
) -> tuple[float, float]:
    """(peak RSS growth in MiB, pushes/s) while streaming n tokens through push_many."""
    client = APNsClient(
        token_auth=token_auth,
        topic="pass.com.example.stamps",
        host=host,
        port=port,
        ca=ca,
        max_streams=max_streams,
        max_in_flight=max_streams + max_streams // 4,
    )
    async with client:
        async for _ in client.push_many(_tokens(5000, 10**9)):
            pass
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        ok = 0
        async for result in client.push_many(_tokens(n)):
            ok += result.ok
        rate = ok / (time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024, rate


def _provider_key(folder: Path) -> TokenAuth:
    # The fake accepts any request when it checks nothing; a provider token exercises the
    # authorization header on every push, as production does.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TokenAuth(pem, key_id="ABC123DEFG", team_id="EXAMPLE123")


def _row(
    name: str, runs: list[dict[str, float]], rss: float | None, stream_rate: float | None
) -> str:
    rates = [r["rate"] for r in runs]
    best = max(runs, key=lambda r: r["rate"])
    spread = f"{min(rates):,.0f}–{max(rates):,.0f}" if len(rates) > 1 else "-"
    median = statistics.median(rates)
    memory = f"{rss:.1f} MiB ({stream_rate:,.0f}/s)" if rss is not None and stream_rate else "-"
    return (
        f"| {name:<6} | {best['rate']:>8,.0f} | {median:>8,.0f} | {spread:>15} | "
        f"{min(r['cpu_us'] for r in runs):>7.0f} | {best['p50_ms']:>6.1f} | "
        f"{best['p99_ms']:>6.1f} | "
        f"{memory} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--pushes", type=int, default=200_000)
    parser.add_argument("--stream", type=int, default=1_000_000, help="0 skips the memory row")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-streams", type=int, default=1000)
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--only", choices=["fake", "nginx"])
    args = parser.parse_args()
    _pin(CLIENT_CORE)
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    token_auth = _provider_key(Path(tempfile.gettempdir()))
    lines = [
        f"pushes per run {args.pushes:,}, runs {args.runs}, client on core {CLIENT_CORE}, "
        f"server on core {SERVER_CORE}, loop {'uvloop' if args.uvloop else 'asyncio'}, "
        f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}",
        "",
        "| server | best/s   | median/s | spread/s        | CPU µs/push | p50 ms | p99 ms | "
        f"peak RSS growth, {args.stream:,} tokens streamed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("fake", "nginx"):
        if args.only and name != args.only:
            continue
        if name == "fake":
            proc, host, port, ca = start_fake(args.max_streams)
            cleanup: Path | None = None
        else:
            started = start_nginx(args.max_streams)
            if isinstance(started, str):
                print(f"nginx row skipped: {started}", file=sys.stderr)
                lines.append(f"| nginx  | skipped: {started} |")
                continue
            proc, host, port, ca, cleanup = started
        try:
            runs = [
                runner(run_once(host, port, ca, args.pushes, token_auth, args.max_streams))
                for _ in range(args.runs)
            ]
            rss = rate = None
            if args.stream:
                rss, rate = runner(
                    stream_memory(host, port, ca, args.stream, token_auth, args.max_streams)
                )
        finally:
            proc.send_signal(signal.SIGTERM if name == "fake" else signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
        for r in runs:
            print(
                f"{name}: {r['rate']:,.0f}/s cpu {r['cpu_us']:.1f} µs/push "
                f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms",
                file=sys.stderr,
            )
        lines.append(_row(name, runs, rss, rate))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
