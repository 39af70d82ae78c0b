"""Existence oracle of the till API's key check: does a refused key with an unknown id answer
measurably slower or faster than a known id with a wrong secret (or a revoked key)? (issue 13)

Seeds a SQLite store with ``--keys`` API keys (a third of them revoked) and a card, builds the
API app (the failed-key limit set high enough never to refuse) and calls it in-process as an
ASGI app, one request at a time: ``GET /cards/{serial}`` with ``--samples`` keys of each kind,
interleaved in random order (drift and noise hit both alike). Every answer must be the same 401.
Prints the medians and the Mann-Whitney U test's z (``bench_oracle.mann_whitney_z``): |z| below
3 means the two kinds cannot be told apart from 2 x ``--samples`` timings.

    .venv/bin/python benchmarks/bench_api_oracle.py [--samples 10000] [--keys 30]
    PYTHONPATH=/work/wt-api-before/src .venv/bin/python benchmarks/bench_api_oracle.py  # before

(The before code has no failed-key limit: the script then builds the app without it.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_oracle import _call, mann_whitney_z

ROOT = Path(__file__).resolve().parent.parent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    import passkit_stamps
    from passkit_stamps.api import ApiConfig, create_api
    from passkit_stamps.model import CardTemplate
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite:///{Path(tmp) / 'oracle.db'}")
        service = StampService(store)
        await service.publish_template(CardTemplate.load(ROOT / "templates" / "coffee"))
        serial = (await service.issue_card("coffee")).card.serial
        made = [await service.create_api_key(f"till {i}", "staff") for i in range(args.keys)]
        revoked = made[: args.keys // 3]
        active = made[args.keys // 3 :]
        for key in revoked:
            await service.revoke_api_key(key.key.id)
        try:
            config = ApiConfig(key_failures=10**9, key_failure_window=1.0)  # type: ignore[call-arg]
        except TypeError:  # the code before: no failed-key limit
            config = ApiConfig()
        app = create_api(service, config)

        def secret() -> str:
            return "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
                for _ in range(43)
            )

        def token(kind: str, i: int) -> str:
            if kind == "wrong secret":  # a known, active id
                return f"pks_{active[i % len(active)].key.id}_{secret()}"
            if kind == "revoked":  # a revoked key, whole
                return revoked[i % len(revoked)].secret
            return f"pks_{rng.getrandbits(64):016x}_{secret()}"  # an unknown id

        path = f"/cards/{serial}"
        print(f"code: {Path(passkit_stamps.__file__).parent}")
        print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(
            f"{args.samples:,} requests per kind, GET {{card}} with a refused key, in-process ASGI"
        )
        print()
        print(f"{'compared':<28} {'a µs':>7} {'b µs':>7} {'diff µs':>8} {'z':>7}")
        for a, b in (("unknown id", "wrong secret"), ("revoked", "wrong secret")):
            for i in range(400):  # warm caches and code paths
                for kind in (a, b):
                    await _call(
                        app,
                        "GET",
                        path,
                        [(b"authorization", f"Bearer {token(kind, i)}".encode())],
                        b"",
                    )
            times: dict[str, list[int]] = {a: [], b: []}
            statuses: dict[str, set[int]] = {a: set(), b: set()}
            order = [a] * args.samples + [b] * args.samples
            rng.shuffle(order)
            requests: list[tuple[str, Any]] = [
                (kind, [(b"authorization", f"Bearer {token(kind, i)}".encode())])
                for i, kind in enumerate(order)
            ]
            gc.collect()
            gc.disable()
            try:
                for i, (kind, headers) in enumerate(requests):
                    start = time.perf_counter_ns()
                    status = await _call(app, "GET", path, headers, b"")
                    times[kind].append(time.perf_counter_ns() - start)
                    statuses[kind].add(status)
                    if i % 2000 == 1999:
                        gc.collect()
            finally:
                gc.enable()
            assert statuses[a] == statuses[b] == {401}, statuses
            med_a = statistics.median(times[a]) / 1000
            med_b = statistics.median(times[b]) / 1000
            z = mann_whitney_z(times[a], times[b])
            print(
                f"{a + ' vs ' + b:<28} {med_a:>7.1f} {med_b:>7.1f} {med_a - med_b:>8.1f} {z:>7.1f}"
            )
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
