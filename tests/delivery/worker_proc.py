"""A delivery worker in a process of its own, for the crash tests (tests/delivery/test_crash.py):
``python tests/delivery/worker_proc.py CONFIG_JSON``. It prints READY once the worker runs and
serves until killed. The Google REST API is the test's stand-in on loopback (respx cannot reach
into another process); tokens come from a static provider."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any


class StaticTokens:
    async def token(self) -> str:
        return "stub-token"

    def invalidate(self) -> None:
        pass


async def main(cfg: dict[str, Any]) -> None:
    from passkit_stamps.apple.credentials import SigningCredentials
    from passkit_stamps.delivery.runner import (
        AppleDelivery,
        DeliveryConfig,
        GoogleDelivery,
        running_worker,
    )
    from passkit_stamps.google.builders import GoogleSettings
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store

    store = await Store.open(cfg["db"], connect_args=cfg.get("connect_args") or None)
    service = StampService(store)
    credentials = SigningCredentials.load(
        p12=Path(cfg["p12"]), p12_password=cfg["p12_password"], wwdr=Path(cfg["wwdr"])
    )
    google = None
    if cfg.get("google_base_url"):
        google = GoogleDelivery(
            settings=GoogleSettings(issuer_id=cfg["issuer"], image_base_url=cfg["images"]),
            service_account=StaticTokens(),
            base_url=cfg["google_base_url"],
            rate=10_000,
        )
    config = DeliveryConfig(
        apple=AppleDelivery(
            credentials=credentials, host=cfg["apns_host"], port=cfg["apns_port"], ca=cfg["ca"]
        ),
        google=google,
        lease=timedelta(seconds=cfg["lease"]),
        poll_interval=cfg.get("poll", 0.2),
        batch_size=cfg.get("batch", 100),
    )
    async with running_worker(service, config):
        print("READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(json.loads(sys.argv[1])))
