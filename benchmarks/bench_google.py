"""Google Wallet throughput: LoyaltyObjects built and Save links signed per second.

Runs on one core (one process, no threads) with a warm image cache: the hero images for every
stamp count are rendered first, as a running service would have them. Prints a table with
throughput, p50/p99 latency and peak Python memory (tracemalloc, measured in a separate pass so
tracing does not slow the timed runs). Target: >= 2,000 links/s.

    .venv/bin/python benchmarks/bench_google.py [--n 5000]
"""

from __future__ import annotations

import argparse
import gc
import secrets
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from passkit_stamps import images
from passkit_stamps.google import (
    GoogleSettings,
    SaveLinkSigner,
    ServiceAccount,
    build_loyalty_object,
)
from passkit_stamps.model import Card, CardTemplate, Holder

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 1, tzinfo=UTC)


def service_account() -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return ServiceAccount.load(
        {
            "type": "service_account",
            "client_email": "bench@stamps.iam.gserviceaccount.com",
            "private_key_id": "0" * 40,
            "private_key": pem,
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def cards(template: CardTemplate, n: int) -> list[Card]:
    return [
        Card(
            serial=f"{100000 + i}",
            template_id=template.id,
            template_version=template.version,
            holder=Holder(name=f"Holder {i}" if i % 2 else None),
            stamps=i % (template.stamps_required + 1),
            created_at=NOW,
            authentication_token=secrets.token_hex(16),
        )
        for i in range(n)
    ]


def measure(name: str, items: list[object], work: Callable[[object], object]) -> dict[str, object]:
    gc.collect()
    latencies = []
    start = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        work(item)
        latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    # Peak memory of the same work in a separate, traced pass (tracing slows it down).
    tracemalloc.start()
    for item in items[: min(len(items), 1000)]:
        work(item)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    q = statistics.quantiles(latencies, n=100)
    return {
        "what": name,
        "n": len(items),
        "per_s": len(items) / total,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "peak_kib": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="cards per template (default 5000)")
    args = parser.parse_args()

    account = service_account()
    settings = GoogleSettings("3388000000012345678", "https://img.example/cards/")
    rows = []
    for name in ("coffee", "salon"):
        template = CardTemplate.load(ROOT / "templates" / name)
        for stamps in range(template.stamps_required + 1):  # warm the image cache
            images.google_hero(template, stamps)
        batch = cards(template, args.n)
        signer = SaveLinkSigner(account, origins=["https://shop.example"])
        objects = [build_loyalty_object(template, c, settings) for c in batch]
        skinny = sum(signer.link(o).skinny for o in objects[:200]) / 2

        def build(c: object, t: CardTemplate = template) -> object:
            return build_loyalty_object(t, c, settings)  # type: ignore[arg-type]

        def sign(o: object, s: SaveLinkSigner = signer) -> object:
            return s.link(o)  # type: ignore[arg-type]

        def both(c: object, t: CardTemplate = template, s: SaveLinkSigner = signer) -> object:
            return s.link(build_loyalty_object(t, c, settings))  # type: ignore[arg-type]

        rows.append(measure(f"{name}: build object", list(batch), build))
        rows.append(measure(f"{name}: sign link", list(objects), sign))
        rows.append(measure(f"{name}: build + link", list(batch), both))
        # The cost of a full (non-skinny) JWT of the same object, were the limit lifted.
        unlimited = SaveLinkSigner(account, origins=["https://shop.example"], max_length=100_000)

        def sign_full(o: object, s: SaveLinkSigner = unlimited) -> object:
            return s.link(o)  # type: ignore[arg-type]

        rows.append(measure(f"{name}: sign full JWT", list(objects), sign_full))
        print(f"{name}: {skinny:.0f}% of links skinny (object over the 1,800-character limit)")

    header = f"{'what':<24} {'n':>6} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'peak KiB':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['what']:<24} {r['n']:>6} {r['per_s']:>9.0f} {r['p50_ms']:>8.3f} "
            f"{r['p99_ms']:>8.3f} {r['peak_kib']:>9.0f}"
        )


if __name__ == "__main__":
    main()
