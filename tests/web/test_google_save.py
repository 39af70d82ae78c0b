"""The card page's "Save to Google Wallet" button: a skinny link's object is inserted first.

Google's REST API cannot run here, so it is played by respx (the only mock in these tests).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from passkit_stamps.google.auth import ServiceAccount
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.web.app import web_context
from passkit_stamps.web.config import GoogleWebConfig

from .conftest import Wallet, make_wallet

ISSUER = "3388000000012345678"
API = "https://wallet.test/walletobjects/v1"
TOKEN_URI = "https://oauth2.test/token"


@pytest.fixture(scope="module")
def account() -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ServiceAccount.load(
        {
            "type": "service_account",
            "project_id": "stamps-test",
            "private_key_id": "key-1",
            "private_key": pem,
            "client_email": "wallet@stamps-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": TOKEN_URI,
        }
    )


@pytest.fixture
async def gwallet(
    service: StampService, dev_pki: DevPKI, account: ServiceAccount
) -> AsyncIterator[Wallet]:
    config = GoogleWebConfig(issuer_id=ISSUER, service_account=account, api_base_url=API)
    w = make_wallet(service, dev_pki, google=config)
    try:
        yield w
    finally:
        await w.client.aclose()
        await web_context(w.app).google.aclose()


def google_api() -> respx.MockRouter:
    router = respx.mock(assert_all_called=False)
    router.post(TOKEN_URI).respond(
        json={"access_token": "token-1", "expires_in": 3600, "token_type": "Bearer"}
    )
    return router


def not_found(what: str) -> httpx.Response:
    return httpx.Response(
        404, json={"error": {"code": 404, "message": f"{what} not found", "status": "NOT_FOUND"}}
    )


async def test_the_page_button_goes_through_the_app(gwallet: Wallet) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    page = (await gwallet.client.get(gwallet.page_path(serial))).text
    assert f'href="{gwallet.page_path(serial)}/google"' in page
    assert "pay.google.com" not in page  # no signing, no API call on a page view


async def test_a_skinny_link_inserts_the_object_once_then_redirects(gwallet: Wallet) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    with google_api() as api:
        patch = api.patch(url__regex=rf"{API}/loyaltyObject/.+").mock(
            return_value=not_found("object")
        )
        insert = api.post(f"{API}/loyaltyObject").mock(
            side_effect=lambda request: httpx.Response(200, json=json.loads(request.content))
        )
        first = await gwallet.client.get(gwallet.page_path(serial) + "/google")
        second = await gwallet.client.get(gwallet.page_path(serial) + "/google")
    assert first.status_code == second.status_code == 303
    link = first.headers["location"]
    assert link.startswith("https://pay.google.com/gp/v/save/")
    claims = jwt.decode(link.rsplit("/", 1)[1], options={"verify_signature": False})
    (obj,) = claims["payload"]["loyaltyObjects"]
    assert set(obj) == {"id", "classId"}  # skinny: the object had to exist first
    assert patch.call_count == 1 and insert.call_count == 1  # the second click calls nothing
    inserted = json.loads(insert.calls[0].request.content)
    assert inserted["id"] == obj["id"] and inserted["accountId"] == serial
    stored = await gwallet.service.google_object(serial)
    assert stored is not None and stored.object_id == obj["id"]


async def test_google_refusing_the_insert_is_a_502_and_nothing_is_stored(gwallet: Wallet) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    denied = {
        "error": {
            "code": 403,
            "message": "caller does not have permission",
            "errors": [{"reason": "permissionDenied"}],
            "status": "PERMISSION_DENIED",
        }
    }
    with google_api() as api:
        api.patch(url__regex=rf"{API}/loyaltyObject/.+").respond(403, json=denied)
        response = await gwallet.client.get(gwallet.page_path(serial) + "/google")
    assert response.status_code == 502
    assert "try again later" in response.text
    assert await gwallet.service.google_object(serial) is None


async def test_a_wrong_secret_or_no_google_is_404(gwallet: Wallet, wallet: Wallet) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    assert (await gwallet.client.get(f"/wallet/cards/{serial}/wrong/google")).status_code == 404
    other = (await wallet.service.issue_card("coffee")).card.serial
    assert (await wallet.client.get(wallet.page_path(other) + "/google")).status_code == 404
