"""Existence oracle of the pass web service: with a wrong token, does a known serial answer
measurably slower or faster than an unknown one? (issue 12 item 9)

Seeds a SQLite store with ``--cards`` cards, builds the app (development certificates) and
calls it in-process as an ASGI app, one request at a time: for each endpoint, ``--samples``
requests with a wrong token for known serials and as many for unknown serials of the same
shape, interleaved in random order (drift and noise hit both alike), each request's serial drawn
at random from its pool. Prints the medians and the Mann-Whitney U test's z (normal
approximation, ties averaged): |z| below 3 means the two paths cannot be told apart from
2 x ``--samples`` timings; the issue's before figures were 63.3 vs 57.5 us for GET pass and
68.0 vs 61.9 us for register.

The server reads one card for either serial: the card itself, or for an unknown serial the card
after it in key order (its stand-in). Which card is read, not whether the serial exists, then
shows in the timings through the CPU caches, so the pools are drawn so that both read the
same cards equally often:

* ``--unknown paired`` (default): one unknown serial per card, drawn at random from the serials
  between that card and the one before it (so that card is its stand-in). Only existence
  differs between the two pools.
* ``--unknown random``: unknown serials drawn at random. Their stand-ins are the cards after
  the widest gaps: about 63 % of the cards stand in for 200 unknown serials, each read more
  often than a known card, so the unknown pool is served from warmer caches (tens of ns
  faster) although nothing depends on existence. What an attacker probing a handful of
  serials repeatedly sees is the paired figure: a repeated serial reads the same card each
  time, known or not.

The known pool is visited in random order, not in issue order: cards issued one after the
other sit side by side in the table, and visiting them in that order warmed the caches for
the known pool (the residual |z| of 3-5 measured before was these two effects).

A last row compares unknown serials just below the last card with serials sorting after every
card (both read the last card): a difference there would let bisection find the last serial.

    .venv/bin/python benchmarks/bench_oracle.py [--samples 10000] [--cards 200] [--seed 12]
        [--unknown paired|random]
    PYTHONPATH=/work/wt-oracle-before/src .venv/bin/python benchmarks/bench_oracle.py  # before

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


def _serial_number(serial: str, alphabet: str) -> int:
    value = 0
    for char in serial:
        value = value * len(alphabet) + alphabet.index(char)
    return value


def _serial_text(value: int, alphabet: str, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, len(alphabet))
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


def unknown_serials(
    known: list[str], alphabet: str, rng: random.Random, how: str
) -> tuple[list[str], list[str], list[str]]:
    """(unknown pool, serials just below the last card, serials after the last card).

    ``paired``: one per card, drawn between the card and the one before it in key order (the
    alphabet sorts like its ASCII, so serials order like their numbers); ``random``: any."""
    length = len(known[0])
    ordered = sorted(known)
    numbers = [_serial_number(s, alphabet) for s in ordered]

    def between(low: int, high: int) -> str:  # exclusive bounds
        return _serial_text(rng.randrange(low + 1, high), alphabet, length)

    if how == "paired":
        pool = [between(low, high) for low, high in zip([-1, *numbers], numbers, strict=False)]
    else:
        taken = set(known)
        pool = []
        while len(pool) < len(known):
            serial = "".join(rng.choice(alphabet) for _ in range(length))
            if serial not in taken:
                pool.append(serial)
    below_last = [between(numbers[-2], numbers[-1]) for _ in known]
    after_last = [between(numbers[-1], len(alphabet) ** length) for _ in known]
    return pool, below_last, after_last


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
    parser.add_argument("--unknown", choices=("paired", "random"), default="paired")
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
        tokens = {}
        for i in range(args.cards):
            change = await service.issue_card("coffee", m["Holder"](name=f"Holder {i}"))
            known.append(change.card.serial)
            tokens[change.card.serial] = change.card.authentication_token
        # Unknown serials of the same length and alphabet as the issued ones (see the module
        # documentation for how they are drawn); known ones in random order, not issue order.
        rng.shuffle(known)
        unknown, below_last, after_last = unknown_serials(
            known, m["CODE_ALPHABET"], rng, args.unknown
        )
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
        print(
            f"{args.samples:,} requests per path, wrong token, in-process ASGI, interleaved; "
            f"unknown serials {args.unknown}, seed {args.seed}"
        )
        print()
        print(f"{'endpoint':<12} {'known µs':>9} {'unknown µs':>11} {'diff µs':>8} {'z':>7}")
        rows = [(name, make, known, unknown) for name, make in endpoints]
        # Both read the last card: a difference would let bisection find the last serial.
        rows.append(("GET pass, last", endpoints[0][1], below_last, after_last))
        for name, make, first, second in rows:
            if first is below_last:
                print()
                print(f"{'':<12} {'below last':>10} {'after last':>10} {'diff µs':>8} {'z':>7}")
            for warm in range(200):  # warm caches and code paths
                for serials in (first, second):
                    await _call(app, *make(serials[warm % len(serials)]))
            times: dict[bool, list[int]] = {True: [], False: []}
            statuses: dict[bool, set[int]] = {True: set(), False: set()}
            order = [True] * args.samples + [False] * args.samples
            rng.shuffle(order)
            gc.collect()
            gc.disable()
            try:
                for i, is_first in enumerate(order):
                    pool = first if is_first else second
                    request = make(pool[rng.randrange(len(pool))])
                    start = time.perf_counter_ns()
                    status = await _call(app, *request)
                    times[is_first].append(time.perf_counter_ns() - start)
                    statuses[is_first].add(status)
                    if i % 2000 == 1999:
                        gc.collect()
            finally:
                gc.enable()
            assert statuses[True] == statuses[False] == {401}, statuses
            med_k = statistics.median(times[True]) / 1000
            med_u = statistics.median(times[False]) / 1000
            z = mann_whitney_z(times[True], times[False])
            print(f"{name:<12} {med_k:>9.1f} {med_u:>11.1f} {med_k - med_u:>8.1f} {z:>7.1f}")
        # What the stand-in read costs the devices' everyday request: a 304 with the right token.
        print()
        print("cost: GET pass with the right token and a current If-Modified-Since (304)")
        since = b"Fri, 01 Jan 2100 00:00:00 GMT"
        times_304: list[int] = []
        gc.collect()
        gc.disable()
        try:
            for i in range(args.samples + 200):
                serial = known[rng.randrange(len(known))]
                headers = [
                    (b"authorization", f"ApplePass {tokens[serial]}".encode()),
                    (b"if-modified-since", since),
                ]
                start = time.perf_counter_ns()
                status = await _call(app, "GET", f"/v1/passes/{pass_type}/{serial}", headers, b"")
                if i >= 200:  # the first ones warm up
                    times_304.append(time.perf_counter_ns() - start)
                assert status == 304, status
                if i % 2000 == 1999:
                    gc.collect()
        finally:
            gc.enable()
        print(f"{'GET pass 304':<12} median {statistics.median(times_304) / 1000:.1f} µs")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
