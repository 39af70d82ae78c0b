"""Signed Apple passes per second: PassBuilder next to the bare minimum doing the same work.

    .venv/bin/python benchmarks/bench_passes.py [--passes 2000] [--template templates/coffee]

Both sides build the coffee template's store card for distinct cards (so the signed-pass cache
never hits) with a warm strip cache, on one core (the process is pinned to one CPU when the OS
allows). The bare minimum is written inline: json.dumps of a hand-written pass.json, hashlib.sha1
of every file, one ``PKCS7SignatureBuilder`` signature, and a stored zip via ``zipfile``. Timing
runs without tracemalloc (it slows Python down several times); peak memory is measured in separate
runs at 500 and at the full count, to show it stays flat.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from passkit_stamps import images
from passkit_stamps.apple.bundle import PassBuilder
from passkit_stamps.apple.credentials import SigningCredentials
from passkit_stamps.apple.passjson import pass_strings
from passkit_stamps.model import Card, CardTemplate, Holder
from passkit_stamps.runtime.devpki import make_dev_pki

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://passes.example.com/apple"
TARGET_PER_SECOND = 1_000
TARGET_RATIO = 1.5


def cards(template: CardTemplate, n: int) -> list[Card]:
    return [
        Card(
            serial=f"B{i:07d}",
            template_id=template.id,
            template_version=template.version,
            holder=Holder(name=f"Holder {i}"),
            stamps=i % (template.stamps_required + 1),
            created_at=NOW,
            authentication_token=f"token-{i:016d}",
        )
        for i in range(n)
    ]


# -- the bare minimum ------------------------------------------------------------------------------


class BareMinimum:
    """What any pass generator must do per pass, with nothing else: the baseline."""

    def __init__(self, template: CardTemplate, credentials: SigningCredentials) -> None:
        self.template = template
        self.credentials = credentials
        self.static = {
            **{f"icon{s}.png": images.apple_icon(template, k) for k, s in _SCALES},
            **{f"logo{s}.png": images.apple_logo(template, k) or b"" for k, s in _SCALES},
        }
        self.strings = pass_strings(template, cards(template, 1)[0])["en"]

    def build(self, card: Card) -> bytes:
        t = self.template
        d = t.design
        pass_json = {
            "formatVersion": 1,
            "passTypeIdentifier": self.credentials.pass_type_identifier,
            "teamIdentifier": self.credentials.team_identifier,
            "serialNumber": card.serial,
            "organizationName": t.organization_name,
            "description": t.description,
            "backgroundColor": d.background_color.apple(),
            "foregroundColor": d.foreground_color.apple(),
            "labelColor": d.label_color.apple(),
            "webServiceURL": URL,
            "authenticationToken": card.authentication_token,
            "barcodes": [
                {
                    "format": "PKBarcodeFormatQR",
                    "message": card.serial,
                    "messageEncoding": "iso-8859-1",
                    "altText": card.serial,
                }
            ],
            "storeCard": {
                "secondaryFields": [
                    {
                        "key": "progress",
                        "label": "Stamps",
                        "value": f"{card.stamps} / {t.stamps_required}",
                        "changeMessage": "Stamps: %@",
                    }
                ],
                "auxiliaryFields": [
                    {"key": "holder", "label": "Member", "value": card.holder.name}
                ],
            },
        }
        files = {"pass.json": json.dumps(pass_json).encode(), **self.static}
        for k, s in _SCALES:
            files[f"strip{s}.png"] = images.apple_strip(t, card.stamps, k)
        files["en.lproj/pass.strings"] = self.strings
        manifest = json.dumps({n: hashlib.sha1(b).hexdigest() for n, b in files.items()}).encode()
        signature = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(manifest)
            .add_signer(self.credentials.certificate, self.credentials.private_key, hashes.SHA256())
            .add_certificate(self.credentials.wwdr)
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
            archive.writestr("manifest.json", manifest)
            archive.writestr("signature", signature)
        return out.getvalue()


_SCALES = ((1, ""), (2, "@2x"), (3, "@3x"))


# -- measuring -------------------------------------------------------------------------------------


def timed(build: Callable[[Card], bytes], batch: list[Card]) -> tuple[float, list[int]]:
    gc.collect()
    latencies = []
    start = time.perf_counter_ns()
    for card in batch:
        t0 = time.perf_counter_ns()
        build(card)
        latencies.append(time.perf_counter_ns() - t0)
    return (time.perf_counter_ns() - start) / 1e9, latencies


def peak_memory(build: Callable[[Card], bytes], batch: list[Card]) -> float:
    """Peak traced memory (MiB) above what was allocated before the loop."""
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for card in batch:
        build(card)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - base) / (1024 * 1024)


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2000)
    parser.add_argument("--template", type=Path, default=ROOT / "templates" / "coffee")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    template = CardTemplate.load(args.template)
    with tempfile.TemporaryDirectory() as tmp:
        credentials = make_dev_pki(Path(tmp)).credentials()
    batch = cards(template, args.passes)
    small = batch[: min(500, len(batch))]

    # Two builders: the timing run and the memory runs each start from an empty signed-pass LRU.
    library = PassBuilder(credentials, web_service_url=URL)
    bare = BareMinimum(template, credentials)
    for warm in cards(template, template.stamps_required + 1):  # every strip, both sides
        library.build(template, warm)
        bare.build(warm)

    def lib(card: Card) -> bytes:
        return library.build(template, card)

    results = []
    for name, build in (("PassBuilder.build", lib), ("bare minimum (inline)", bare.build)):
        seconds, latencies = timed(build, batch)
        memory = PassBuilder(credentials, web_service_url=URL)
        build_for_memory = (
            (lambda c, m=memory: m.build(template, c)) if build is lib else bare.build
        )
        for warm in cards(template, template.stamps_required + 1):
            build_for_memory(warm)
        peak_small = peak_memory(build_for_memory, small)
        peak_full = peak_memory(build_for_memory, batch)
        results.append(
            (
                name,
                len(batch) / seconds,
                percentile(latencies, 0.50),
                percentile(latencies, 0.99),
                peak_small,
                peak_full,
            )
        )

    print(f"coffee template, {len(batch):,} distinct cards, warm strip cache, one core")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs visible")
    header = ("implementation", "passes/s", "p50 ms", "p99 ms", f"peak MiB @{len(small)}",
              f"peak MiB @{len(batch)}")  # fmt: skip
    print(
        f"{header[0]:<24}{header[1]:>10}{header[2]:>9}{header[3]:>9}{header[4]:>16}{header[5]:>17}"
    )
    for name, rate, p50, p99, mem_small, mem_full in results:
        print(f"{name:<24}{rate:>10,.0f}{p50:>9.3f}{p99:>9.3f}{mem_small:>16.1f}{mem_full:>17.1f}")
    (_, lib_rate, *_), (_, bare_rate, *_) = results
    ratio = bare_rate / lib_rate
    print(f"library time per pass / bare minimum's: {ratio:.2f}x (target <= {TARGET_RATIO}x)")
    ok = lib_rate >= TARGET_PER_SECOND and ratio <= TARGET_RATIO
    verdict = "met" if ok else "MISSED"
    print(f"target >= {TARGET_PER_SECOND:,} passes/s within {TARGET_RATIO}x: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
