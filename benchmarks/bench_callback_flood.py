"""Google callback floods: what junk callbacks cost the event loop.

8 concurrent senders post junk callbacks (a 16 KB body of 150 signatures, and a body with 4 junk
signatures that passes every cheap check) straight to ``verify_callback`` for a few seconds,
while a probe on the same loop measures how late a 1 ms timer fires: the delay every other
request on the loop (a device asking for its serials) would see. Also a valid callback's
latency alone. Prints a table.

    .venv/bin/python benchmarks/bench_callback_flood.py [--seconds 3]
    # before: PYTHONPATH=/work/baseline/src .venv/bin/python benchmarks/bench_callback_flood.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import struct
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from passkit_stamps.google import callbacks

ISSUER = "3388000000012345678"
NOW = datetime.now(UTC)
NOW_MS = int(NOW.timestamp() * 1000)
ROOT = ec.generate_private_key(ec.SECP256R1())
INTERMEDIATE = ec.generate_private_key(ec.SECP256R1())
KEYS = [callbacks.RootKey(ROOT.public_key(), "ECv2SigningOnly", None)]


def _lv(*parts: str) -> bytes:
    return b"".join(struct.pack("<I", len(p.encode())) + p.encode() for p in parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return _b64(key.sign(data, ec.ECDSA(hashes.SHA256())))


def callback(signatures: list[str] | None = None, nonce: str = "n") -> bytes:
    der = INTERMEDIATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed_key = json.dumps({"keyValue": _b64(der), "keyExpiration": str(NOW_MS + 3_600_000)})
    message = json.dumps(
        {
            "classId": f"{ISSUER}.c",
            "objectId": f"{ISSUER}.1",
            "eventType": "save",
            "expTimeMillis": NOW_MS + 600_000,
            "nonce": nonce,
        }
    )
    if signatures is None:
        signatures = [_sign(ROOT, _lv("GooglePayPasses", "ECv2SigningOnly", signed_key))]
    return json.dumps(
        {
            "signature": _sign(
                INTERMEDIATE, _lv("GooglePayPasses", ISSUER, "ECv2SigningOnly", message)
            ),
            "intermediateSigningKey": {"signedKey": signed_key, "signatures": signatures},
            "protocolVersion": "ECv2SigningOnly",
            "signedMessage": message,
        }
    ).encode()


def junk(count: int) -> bytes:
    other = ec.generate_private_key(ec.SECP256R1())
    return callback([_sign(other, str(i).encode()) for i in range(count)])


async def _verify(body: bytes) -> None:
    with contextlib.suppress(callbacks.CallbackVerificationError):
        await callbacks.verify_callback(body, ISSUER, root_keys=KEYS, now=NOW)


async def flood(body: bytes, seconds: float, senders: int = 8) -> tuple[float, float, float]:
    """Requests/s of the senders, and p50/p99 lateness (ms) of a 1 ms timer on the loop."""
    stop = time.perf_counter() + seconds
    done = 0
    late: list[float] = []

    async def sender() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await _verify(body)
            done += 1
            await asyncio.sleep(0)  # a server reads each request from a socket: it yields

    async def probe() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - start - 0.001) * 1000)

    await asyncio.gather(probe(), *(sender() for _ in range(senders)))
    late.sort()
    return done / seconds, statistics.median(late), late[int(len(late) * 0.99)]


async def main(seconds: float) -> None:
    print(f"callbacks module: {callbacks.__file__}")
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("| 8 senders of | callbacks/s | loop lateness p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name, body in [
        ("150 junk signatures (16 KB)", junk(150)),
        ("4 junk signatures", junk(4)),
        ("nothing (idle loop)", b""),
    ]:
        if body:
            rate, p50, p99 = await flood(body, seconds)
        else:
            rate, p50, p99 = await flood(b"{}", seconds, senders=0)
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")
    valid = [callback(nonce=f"n{i}") for i in range(200)]
    times = []
    for body in valid:
        start = time.perf_counter()
        await callbacks.verify_callback(body, ISSUER, root_keys=KEYS, now=NOW)
        times.append((time.perf_counter() - start) * 1000)
    print(f"\nvalid callback alone: p50 {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args().seconds))
