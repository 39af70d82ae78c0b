"""Existence oracle of the pass web service: with a wrong token, does a known serial answer
measurably slower or faster than an unknown one? (issue 12 item 9)

Seeds a SQLite store with ``--cards`` cards, builds the app (development certificates) and
calls it in-process as an ASGI app, one request at a time: for each endpoint, ``--samples``
requests with a wrong token for known serials and as many for unknown serials of the same
shape, interleaved in random order (drift and noise hit both alike). Prints the medians and the
Mann-Whitney U test's z (normal approximation, ties averaged): |z| below 3 means the two
paths cannot be told apart from 2 x ``--samples`` timings; the issue's before figures were
63.3 vs 57.5 us for GET pass and 68.0 vs 61.9 us for register.

    .venv/bin/python benchmarks/bench_oracle.py [--samples 10000] [--cards 200]
    PYTHONPATH=/work/baseline/src .venv/bin/python benchmarks/bench_oracle.py   # before

The PYTHONPATH line runs the same script against an older checkout (imports fall back to the
old module locations).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _imports() -> dict[str, Any]:
    import passkit_stamps
    from passkit_stamps.engine import CODE_ALPHABET
    from passkit_stamps.model import CardTemplate, Holder
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store
    from passkit_stamps.web.app import create_app
    from passkit_stamps.web.config import WebConfig

    try:
        from passkit_stamps.runtime.devpki import make_dev_pki
    except ImportError:  # before the runtime/ package
        from passkit_stamps.devpki import make_dev_pki  # type: ignore[no-redef,import-not-found]
    return {
        "CODE_ALPHABET": CODE_ALPHABET,
        "CardTemplate": CardTemplate,
        "Holder": Holder,
        "StampService": StampService,
        "Store": Store,
        "create_app": create_app,
        "WebConfig": WebConfig,
        "make_dev_pki": make_dev_pki,
        "source": Path(passkit_stamps.__file__).parent,
    }


def mann_whitney_z(a: list[int], b: list[int]) -> float:
    """z of the Mann-Whitney U statistic of ``a`` against ``b`` (normal approximation, tie
    correction). Positive: ``a`` tends to be larger."""
    n1, n2 = len(a), len(b)
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks_a = 0.0
    ties = 0.0
    i = 0
    n = n1 + n2
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # average rank of the tie group
        t = j - i + 1
        ties += t**3 - t
        ranks_a += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    return (u - mean) / math.sqrt(var)


async def _call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 443),
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    m = _imports()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = m["make_dev_pki"](work / "pki")
        store = await m["Store"].open(f"sqlite:///{work / 'oracle.db'}")
        service = m["StampService"](store)
        await service.publish_template(m["CardTemplate"].load(ROOT / "templates" / "coffee"))
        known = []
        for i in range(args.cards):
            change = await service.issue_card("coffee", m["Holder"](name=f"Holder {i}"))
            known.append(change.card.serial)
        # Unknown serials of the same length and alphabet as the issued ones.
        alphabet = m["CODE_ALPHABET"]
        unknown = ["".join(rng.choice(alphabet) for _ in s) for s in known]
        config = m["WebConfig"](
            public_url="https://stamps.example.com", secret_key=secrets.token_bytes(32)
        )
        app = m["create_app"](service, pki.credentials(), config)
        pass_type = pki.pass_type_identifier
        wrong = [(b"authorization", b"ApplePass " + secrets.token_urlsafe(24).encode())]
        register_body = json.dumps({"pushToken": "ab" * 32}).encode()
        device = "0123456789abcdef0123456789abcdef"
        json_headers = [
            *wrong,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(register_body)).encode()),
        ]
        endpoints: list[tuple[str, Callable[[str], tuple[str, str, Any, bytes]]]] = [
            ("GET pass", lambda s: ("GET", f"/v1/passes/{pass_type}/{s}", wrong, b"")),
            (
                "register",
                lambda s: (
                    "POST",
                    f"/v1/devices/{device}/registrations/{pass_type}/{s}",
                    json_headers,
                    register_body,
                ),
            ),
            (
                "unregister",
                lambda s: (
                    "DELETE",
                    f"/v1/devices/{device}/registrations/{pass_type}/{s}",
                    wrong,
                    b"",
                ),
            ),
        ]
        print(f"code: {m['source']}")
        print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{args.samples:,} requests per path, wrong token, in-process ASGI, interleaved")
        print()
        print(f"{'endpoint':<12} {'known µs':>9} {'unknown µs':>11} {'diff µs':>8} {'z':>7}")
        for name, make in endpoints:
            for warm in range(200):  # warm caches and code paths
                for serials in (known, unknown):
                    await _call(app, *make(serials[warm % len(serials)]))
            times: dict[bool, list[int]] = {True: [], False: []}
            statuses: dict[bool, set[int]] = {True: set(), False: set()}
            order = [True] * args.samples + [False] * args.samples
            rng.shuffle(order)
            gc.collect()
            gc.disable()
            try:
                for i, is_known in enumerate(order):
                    serial = (known if is_known else unknown)[i % len(known)]
                    request = make(serial)
                    start = time.perf_counter_ns()
                    status = await _call(app, *request)
                    times[is_known].append(time.perf_counter_ns() - start)
                    statuses[is_known].add(status)
                    if i % 2000 == 1999:
                        gc.collect()
            finally:
                gc.enable()
            assert statuses[True] == statuses[False] == {401}, statuses
            med_k = statistics.median(times[True]) / 1000
            med_u = statistics.median(times[False]) / 1000
            z = mann_whitney_z(times[True], times[False])
            print(f"{name:<12} {med_k:>9.1f} {med_u:>11.1f} {med_k - med_u:>8.1f} {z:>7.1f}")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
