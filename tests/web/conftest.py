"""Fixtures for the web app: the app mounted under /wallet and a client (the store on each
backend is tests/conftest.py's fixture; the service here has a clock in the past)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from passkit_stamps.model import CardTemplate
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.web.app import create_app
from passkit_stamps.web.config import GoogleWebConfig, WebConfig

PUBLIC_URL = "https://stamps.example.com"
MOUNT = "/wallet"
SECRET_KEY = b"web-tests-secret-key-0123456789ab"


class PastClock:
    """The service's clock: starts 30 days ago and moves an hour per reading, so changes are
    long settled (the web service's Last-Modified logic) and cool-downs never refuse a stamp."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC) - timedelta(days=30)

    def __call__(self) -> datetime:
        self.moment += timedelta(hours=1)
        return self.moment


@pytest.fixture
async def service(store: Store, coffee: CardTemplate, salon: CardTemplate) -> StampService:
    svc = StampService(store, clock=PastClock())
    await svc.publish_template(coffee)
    await svc.publish_template(salon)
    return svc


def web_config(**overrides: Any) -> WebConfig:
    values: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "mount_path": MOUNT,
        "secret_key": SECRET_KEY,
    }
    values.update(overrides)
    return WebConfig(**values)


@dataclass
class Wallet:
    """The app under test, mounted at /wallet inside a parent app, and a client for it."""

    app: Starlette
    parent: Starlette
    client: httpx.AsyncClient
    service: StampService
    config: WebConfig
    pki: DevPKI

    @property
    def pass_type(self) -> str:
        return self.pki.pass_type_identifier

    @property
    def base(self) -> str:
        return self.config.web_service_url

    def page_path(self, serial: str) -> str:
        return MOUNT + self.config.card_page_path(serial)


def make_wallet(
    service: StampService, dev_pki: DevPKI, google: GoogleWebConfig | None = None
) -> Wallet:
    config = web_config(google=google)
    app = create_app(service, dev_pki.credentials(), config)
    parent = Starlette(routes=[Mount(MOUNT, app=app)])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=parent), base_url=PUBLIC_URL)
    return Wallet(app, parent, client, service, config, dev_pki)


@pytest.fixture
async def wallet(service: StampService, dev_pki: DevPKI) -> AsyncIterator[Wallet]:
    w = make_wallet(service, dev_pki)
    try:
        yield w
    finally:
        await w.client.aclose()
