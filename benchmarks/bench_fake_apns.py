"""The fake APNs' own throughput: how many pushes/s it answers on ONE connection and one core.

The fake runs as its own process (``python -m passkit_stamps.testing.fake_apns --quiet``) pinned to
one core; this script is a tiny raw HTTP/2 load generator pinned to the other: every request is a
pre-encoded HEADERS + DATA frame pair (only the stream id changes) and responses are only counted
from frame headers, so the generator costs far less than the server and the figure is the fake's.
It also prints the fake's CPU time per push (its capacity if it had a whole core). The APNs
client's benchmark (bench_apns.py) needs the fake well above the client's 7,000 pushes/s.

    .venv/bin/python benchmarks/bench_fake_apns.py [--n 200000] [--in-flight 100 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

from hpack import Encoder

TOPIC = "pass.com.example.stamps"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, DATA, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 1, 0, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


def request_blocks(total: int) -> list[bytes]:
    """HPACK blocks for ``total`` pushes to distinct tokens, encoded as an h2 client would.

    Encoded ahead of time, in sending order, with one encoder (its dynamic table matches the
    server's decoder): the server decodes what it would from a real client, the generator pays
    nothing per request while timed.
    """
    encoder = Encoder()
    blocks = []
    for i in range(total):
        fields = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/3/device/{i:064x}"),
            (":authority", "localhost"),
            ("apns-topic", TOPIC),
            ("apns-push-type", "background"),
            ("apns-priority", "5"),
            ("apns-expiration", "0"),
        ]
        blocks.append(encoder.encode(fields))
    return blocks


class LoadGenerator(asyncio.Protocol):
    def __init__(self, total: int, in_flight: int, done: asyncio.Future[float]) -> None:
        self.total = total
        self.in_flight = in_flight
        self.done = done
        self.blocks = request_blocks(total)
        self.data_head = struct.pack(">I", 2)[1:] + bytes((DATA, END_STREAM))
        self.next_stream = 1
        self.sent = 0
        self.completed = 0
        self.refused = 0
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.server_limit = in_flight

    def requests(self, count: int) -> bytes:
        parts = []
        for _ in range(count):
            sid = struct.pack(">I", self.next_stream)
            block = self.blocks[self.sent]
            self.sent += 1
            head = struct.pack(">I", len(block))[1:] + bytes((HEADERS, END_HEADERS))
            parts += (head, sid, block, self.data_head, sid, b"{}")
            self.next_stream += 2
        return b"".join(parts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(PREFACE + frame(SETTINGS, 0, 0, b""))

    def start(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.transport.write(self.requests(min(self.in_flight, self.total)))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        offset, size = 0, len(buffer)
        finished = 0
        reply = []
        while size - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if size - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                finished += 1
            elif kind == RST_STREAM:
                finished += 1
                self.refused += 1
            elif kind == SETTINGS and not flags & ACK:
                payload = buffer[offset + 9 : offset + 9 + length]
                for i in range(0, len(payload), 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    if ident == 3:  # SETTINGS_MAX_CONCURRENT_STREAMS
                        self.server_limit = value
                reply.append(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                reply.append(frame(PING, ACK, 0, buffer[offset + 9 : offset + 9 + length]))
            elif kind == GOAWAY and not self.done.done():
                self.done.set_exception(ConnectionError("GOAWAY from the fake"))
            offset += 9 + length
        self.buffer = buffer[offset:]
        self.completed += finished
        if finished and self.sent < self.total:
            reply.append(self.requests(min(finished, self.total - self.sent)))
        if reply and self.transport is not None:
            self.transport.write(b"".join(reply))
        if self.completed >= self.total and not self.done.done():
            self.done.set_result(time.perf_counter() - self.started)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def run_load(host: str, port: int, ca: Path, total: int, in_flight: int) -> float:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    done: asyncio.Future[float] = loop.create_future()
    transport, protocol = await loop.create_connection(
        lambda: LoadGenerator(total, in_flight, done),
        host,
        port,
        ssl=context,
        server_hostname="localhost",
    )
    await asyncio.sleep(0.05)  # the server's SETTINGS first
    protocol.in_flight = min(in_flight, protocol.server_limit)
    protocol.start()
    elapsed = await done
    transport.close()
    return elapsed


def start_fake(cpu: int | None, loop: str) -> tuple[subprocess.Popen[str], str, int, Path]:
    command = [sys.executable, "-m", "passkit_stamps.testing.fake_apns", "--quiet", "--loop", loop]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    _, host, port = process.stdout.readline().split()
    ca = Path(process.stdout.readline().split(maxsplit=1)[1].strip())
    return process, host, int(port), ca


def stop_fake(process: subprocess.Popen[str]) -> dict[str, float]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    words = out.split()
    return {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="pushes per run")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--loops", nargs="+", default=["asyncio", "uvloop"])
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    if server_cpu is not None:
        os.sched_setaffinity(0, {cpus[0]})
    print(f"fake APNs on core {server_cpu}, load generator on core {cpus[0]}; {args.n} pushes/run")
    print(f"| {'fake loop':9} | {'in flight':>9} | {'pushes/s':>9} | {'fake CPU µs/push':>16} |")
    print(f"|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 18}|")
    for loop in args.loops:
        for in_flight in args.in_flight:
            process, host, port, ca = start_fake(server_cpu, loop)
            try:
                elapsed = asyncio.run(run_load(host, port, ca, args.n, in_flight))
            finally:
                counts = stop_fake(process)
            assert counts["DELIVERED"] == args.n, counts
            cpu_us = counts["CPU_SECONDS"] / args.n * 1e6  # while serving
            print(f"| {loop:9} | {in_flight:>9} | {args.n / elapsed:>9,.0f} | {cpu_us:>16.1f} |")


if __name__ == "__main__":
    main()
