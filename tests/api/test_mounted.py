"""The API inside the main web app (``create_app(..., api=ApiConfig())``): served under
``<mount>/api``, its card URLs are the web app's, and the pass URL it returns serves the pass."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from passkit_stamps.api import ApiConfig
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.web.app import create_app

from .conftest import WEB


async def test_api_mounted_in_the_web_app(service: StampService, dev_pki: DevPKI) -> None:
    key = await service.create_api_key("office", "manager")
    wallet = create_app(service, dev_pki.credentials(), WEB, api=ApiConfig())
    parent = Starlette(routes=[Mount(WEB.mount_path, app=wallet)])
    transport = httpx.ASGITransport(app=parent)
    auth = {"Authorization": f"Bearer {key.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url=WEB.public_url) as client:
        doc = (await client.get("/wallet/api/openapi.json")).json()
        assert doc["servers"] == [{"url": "/wallet/api"}]
        r = await client.post("/wallet/api/cards", json={"template_id": "coffee"}, headers=auth)
        assert r.status_code == 201, r.text
        card = r.json()["card"]
        assert card["card_page_url"] == WEB.card_page_url(card["serial"])
        pkpass = await client.get(card["pass_url"])
        assert pkpass.status_code == 200
        assert pkpass.headers["content-type"] == "application/vnd.apple.pkpass"
    # Off unless asked for.
    plain = create_app(service, dev_pki.credentials(), WEB)
    transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/wallet", app=plain)]))
    async with httpx.AsyncClient(transport=transport, base_url=WEB.public_url) as client:
        assert (await client.get("/wallet/api/openapi.json")).status_code == 404
