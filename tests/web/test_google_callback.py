"""The Google save/delete callback endpoint, with callbacks signed like Google signs them."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from passkit_stamps.engine import EventType, Platform
from passkit_stamps.google import ids
from passkit_stamps.google.callbacks import PROTOCOL, SENDER_ID, RootKey
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.web.config import GoogleWebConfig

from .conftest import MOUNT, Wallet, make_wallet

ISSUER = "3388000000012345678"
CALLBACK = MOUNT + "/google/callback"


def _lv(*parts: str) -> bytes:
    return b"".join(struct.pack("<I", len(p.encode())) + p.encode() for p in parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return _b64(key.sign(data, ec.ECDSA(hashes.SHA256())))


class Google:
    """Signs callbacks with a root key and an intermediate key, as Google's sender does."""

    def __init__(self) -> None:
        self.root = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = ec.generate_private_key(ec.SECP256R1())
        self.nonce = 0

    def root_key(self) -> RootKey:
        return RootKey(self.root.public_key(), PROTOCOL, None)

    def callback(
        self, serial: str, event: str = "save", *, issuer: str = ISSUER, **over: object
    ) -> bytes:
        self.nonce += 1
        now_ms = int(time.time() * 1000)
        public = self.intermediate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signed_key = json.dumps(
            {"keyValue": _b64(public), "keyExpiration": str(now_ms + 3_600_000)}
        )
        message = {
            "classId": f"{ISSUER}.coffee",
            "objectId": ids.object_id(ISSUER, serial),
            "eventType": event,
            "expTimeMillis": now_ms + 60_000,
            "count": 1,
            "nonce": f"nonce-{self.nonce}",
        }
        message.update(over)
        signed_message = json.dumps(message)
        return json.dumps(
            {
                "signature": _sign(
                    self.intermediate, _lv(SENDER_ID, issuer, PROTOCOL, signed_message)
                ),
                "intermediateSigningKey": {
                    "signedKey": signed_key,
                    "signatures": [_sign(self.root, _lv(SENDER_ID, PROTOCOL, signed_key))],
                },
                "protocolVersion": PROTOCOL,
                "signedMessage": signed_message,
            }
        ).encode()


@pytest.fixture
def google() -> Google:
    return Google()


@pytest.fixture
async def gwallet(service: StampService, dev_pki: DevPKI, google: Google) -> AsyncIterator[Wallet]:
    config = GoogleWebConfig(issuer_id=ISSUER, callback_options={"root_keys": [google.root_key()]})
    w = make_wallet(service, dev_pki, google=config)
    try:
        yield w
    finally:
        await w.client.aclose()


async def _google_events(wallet: Wallet, serial: str) -> list[tuple[EventType, object]]:
    return [
        (e.type, e.data.get("platform"))
        for e in await wallet.service.card_history(serial)
        if e.type in (EventType.PASS_ADDED, EventType.PASS_REMOVED)
    ]


async def test_save_and_delete_are_recorded(gwallet: Wallet, google: Google) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    response = await gwallet.client.post(CALLBACK, content=google.callback(serial, "save"))
    assert response.status_code == 200
    assert (await gwallet.service.get_card(serial)).platforms == {Platform.GOOGLE}
    response = await gwallet.client.post(CALLBACK, content=google.callback(serial, "del"))
    assert response.status_code == 200
    assert (await gwallet.service.get_card(serial)).platforms == frozenset()
    assert await _google_events(gwallet, serial) == [
        (EventType.PASS_ADDED, "google"),
        (EventType.PASS_REMOVED, "google"),
    ]


async def test_a_replayed_nonce_is_answered_200_and_recorded_once(
    gwallet: Wallet, google: Google
) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    body = google.callback(serial, "save")
    assert (await gwallet.client.post(CALLBACK, content=body)).status_code == 200
    await gwallet.client.post(CALLBACK, content=google.callback(serial, "del"))
    assert (await gwallet.client.post(CALLBACK, content=body)).status_code == 200  # the retry
    assert (await gwallet.service.get_card(serial)).platforms == frozenset()


async def test_bad_signatures_are_400(gwallet: Wallet, google: Google) -> None:
    serial = (await gwallet.service.issue_card("coffee")).card.serial
    tampered = json.loads(google.callback(serial))
    tampered["signedMessage"] = tampered["signedMessage"].replace('"save"', '"del"')
    other_issuer = google.callback(serial, issuer="1111")
    for body in (json.dumps(tampered).encode(), other_issuer, b"{}", b"not json"):
        response = await gwallet.client.post(CALLBACK, content=body)
        assert response.status_code == 400
    expired = google.callback(serial, expTimeMillis=1)
    assert (await gwallet.client.post(CALLBACK, content=expired)).status_code == 400
    assert (await gwallet.service.get_card(serial)).platforms == frozenset()


async def test_unknown_objects_and_big_bodies(gwallet: Wallet, google: Google) -> None:
    response = await gwallet.client.post(CALLBACK, content=google.callback("NO-SUCH-CARD"))
    assert response.status_code == 200  # nothing to record; Google must not retry
    foreign = google.callback("x", objectId="999.someone-else")
    assert (await gwallet.client.post(CALLBACK, content=foreign)).status_code == 200
    assert (await gwallet.client.post(CALLBACK, content=b"x" * 20_000)).status_code == 413


async def test_no_callback_route_without_google(wallet: Wallet) -> None:
    assert (await wallet.client.post(CALLBACK, content=b"{}")).status_code == 404
