"""Fixtures for the till API: the API mounted under /api inside a parent app, a service whose
clock moves an hour per reading (cool-downs never refuse a stamp), and one key per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from passkit_stamps.api import ApiConfig, create_api
from passkit_stamps.model import CardTemplate
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.web.config import WebConfig

MOUNT = "/api"
WEB = WebConfig(
    public_url="https://stamps.example.com",
    mount_path="/wallet",
    secret_key=b"api-tests-secret-key-0123456789ab",
)


class PastClock:
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


@dataclass
class Api:
    app: Starlette
    client: httpx.AsyncClient
    service: StampService
    staff: str
    manager: str
    staff_id: str
    manager_id: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def call(
        self, method: str, path: str, key: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers.update(self.auth(key))
        return await self.client.request(method, MOUNT + path, headers=headers, **kw)

    async def issue(self, **body: Any) -> dict[str, Any]:
        body.setdefault("template_id", "coffee")
        r = await self.call("POST", "/cards", self.manager, json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def make_parent(service: StampService, config: ApiConfig) -> Starlette:
    return Starlette(routes=[Mount(MOUNT, app=create_api(service, config))])


@pytest.fixture
async def api(service: StampService) -> AsyncIterator[Api]:
    staff = await service.create_api_key("till 1", "staff")
    manager = await service.create_api_key("back office", "manager")
    parent = make_parent(service, ApiConfig(web=WEB, rate=1000, burst=1000))
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(
            parent,
            client,
            service,
            staff.secret,
            manager.secret,
            staff.key.id,
            manager.key.id,
        )
