"""Save/delete callbacks signed with self-made P-256 root and intermediate keys, and every kind of
tampering."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from passkit_stamps.errors import CallbackReplayError, CallbackVerificationError
from passkit_stamps.google.callbacks import (
    CallbackEventType,
    MemoryNonceStore,
    RootKeys,
    parse_root_keys,
    verify_callback,
)

ISSUER = "3388000000012345678"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR_MS = 3_600_000


def lv(*parts: str) -> bytes:
    return b"".join(struct.pack("<I", len(p.encode())) + p.encode() for p in parts)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def der(key: ec.EllipticCurvePrivateKey) -> str:
    return b64(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return b64(key.sign(data, ec.ECDSA(hashes.SHA256())))


ROOT = ec.generate_private_key(ec.SECP256R1())
OTHER_ROOT = ec.generate_private_key(ec.SECP256R1())
INTERMEDIATE = ec.generate_private_key(ec.SECP256R1())


def keys_document(
    *roots: ec.EllipticCurvePrivateKey,
    expires_ms: int = NOW_MS + 48 * HOUR_MS,
    protocol: str = "ECv2SigningOnly",
) -> dict[str, Any]:
    return {
        "keys": [
            {"keyValue": der(r), "protocolVersion": protocol, "keyExpiration": str(expires_ms)}
            for r in roots
        ]
    }


def callback(
    *,
    root: ec.EllipticCurvePrivateKey = ROOT,
    intermediate: ec.EllipticCurvePrivateKey = INTERMEDIATE,
    issuer: str = ISSUER,
    key_expires_ms: int = NOW_MS + HOUR_MS,
    message_expires_ms: int = NOW_MS + 60_000,
    event: str = "save",
    nonce: str = "nonce-1",
    protocol: str = "ECv2SigningOnly",
    sender: str = "GooglePayPasses",
    tamper: str | None = None,
) -> bytes:
    signed_key = json.dumps({"keyValue": der(intermediate), "keyExpiration": str(key_expires_ms)})
    message = json.dumps(
        {
            "classId": f"{issuer}.coffee",
            "objectId": f"{issuer}.113772",
            "eventType": event,
            "expTimeMillis": message_expires_ms,
            "count": 1,
            "nonce": nonce,
        }
    )
    body: dict[str, Any] = {
        "signature": sign(intermediate, lv(sender, issuer, protocol, message)),
        "intermediateSigningKey": {
            "signedKey": signed_key,
            "signatures": [sign(root, lv(sender, protocol, signed_key))],
        },
        "protocolVersion": protocol,
        "signedMessage": message,
    }
    if tamper == "message":
        body["signedMessage"] = message.replace("113772", "999999")
    elif tamper == "signed_key":
        body["intermediateSigningKey"]["signedKey"] = signed_key.replace(
            str(key_expires_ms), str(key_expires_ms + 1)
        )
    return json.dumps(body).encode()


class Fetcher:
    def __init__(self, *documents: Any) -> None:
        self.documents = list(documents)
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.documents[min(self.calls, len(self.documents)) - 1]


def root_keys(*roots: ec.EllipticCurvePrivateKey, **kwargs: Any) -> RootKeys:
    return RootKeys(
        Fetcher(json.dumps(keys_document(*(roots or (ROOT,)), **kwargs)).encode()),
        clock=lambda: NOW.timestamp(),
    )


async def verify(body: bytes, **kwargs: Any) -> Any:
    kwargs.setdefault("root_keys", root_keys())
    kwargs.setdefault("now", NOW)
    return await verify_callback(body, kwargs.pop("issuer_id", ISSUER), **kwargs)


async def test_valid_save_and_delete() -> None:
    event = await verify(callback(), nonce_store=MemoryNonceStore())
    assert event.event_type is CallbackEventType.SAVE
    assert (event.class_id, event.object_id) == (f"{ISSUER}.coffee", f"{ISSUER}.113772")
    assert event.nonce == "nonce-1" and event.count == 1
    assert event.expires_at == NOW + timedelta(minutes=1)
    deleted = await verify(callback(event="del", nonce="n2"))
    assert deleted.event_type is CallbackEventType.DELETE


async def test_any_of_several_roots_and_signatures() -> None:
    event = await verify(callback(root=OTHER_ROOT), root_keys=root_keys(ROOT, OTHER_ROOT))
    assert event.nonce == "nonce-1"


async def test_configurable_sender_id() -> None:
    body = callback(sender="GoogleWalletPasses")
    with pytest.raises(CallbackVerificationError):
        await verify(body)
    assert await verify(body, sender_id="GoogleWalletPasses")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (callback(tamper="message"), "signature does not verify"),
        (callback(tamper="signed_key"), "not signed by any Google root key"),
        (callback(root=OTHER_ROOT), "not signed by any Google root key"),
        (
            callback(intermediate=OTHER_ROOT, root=ROOT).replace(
                b'"signature": "', b'"signature": "AA'
            ),
            "not valid base64|signature does not verify",
        ),
        (callback(key_expires_ms=NOW_MS - 1), "intermediate signing key has expired"),
        (callback(message_expires_ms=NOW_MS - 1), "message has expired"),
        (callback(issuer="1111"), "signature does not verify for issuer"),
        (callback(protocol="ECv1"), "protocol 'ECv1' is not 'ECv2SigningOnly'"),
        (callback(event="update"), "neither 'save' nor 'del'"),
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"protocolVersion": "ECv2SigningOnly"}', "no intermediateSigningKey"),
        (b" " * 20_000, "larger than"),
    ],
    ids=[
        "message",
        "signed-key",
        "unknown-root",
        "bad-signature",
        "expired-key",
        "expired-message",
        "wrong-issuer",
        "protocol",
        "event-type",
        "malformed-json",
        "not-object",
        "no-intermediate",
        "too-large",
    ],
)
async def test_tampering_is_refused(body: bytes, match: str) -> None:
    with pytest.raises(CallbackVerificationError, match=match):
        await verify(body)


async def test_signed_for_another_issuer_and_claiming_ours() -> None:
    # Correctly signed for issuer 1111, presented to issuer 1111, but the class belongs elsewhere.
    body = callback(issuer="1111")
    message = json.loads(json.loads(body)["signedMessage"])
    assert message["classId"].startswith("1111.")
    event = await verify(body, issuer_id="1111")
    assert event.class_id == "1111.coffee"
    with pytest.raises(CallbackVerificationError, match="for issuer"):
        await verify(body, issuer_id=ISSUER)


async def test_replayed_nonce() -> None:
    store = MemoryNonceStore()
    await verify(callback(), nonce_store=store)
    with pytest.raises(CallbackReplayError, match="seen before"):
        await verify(callback(), nonce_store=store)
    await verify(callback(nonce="other"), nonce_store=store)


async def test_rejected_callbacks_do_not_spend_their_nonce() -> None:
    store = MemoryNonceStore()
    with pytest.raises(CallbackVerificationError):
        await verify(callback(message_expires_ms=NOW_MS - 1), nonce_store=store)
    assert await verify(callback(), nonce_store=store)


async def test_memory_nonce_store_is_bounded() -> None:
    store = MemoryNonceStore(max_size=3)
    for n in "abcd":
        assert not await store.seen(n)
    assert await store.seen("d") and await store.seen("c")
    assert not await store.seen("a")  # forgotten: the oldest went first
    with pytest.raises(ValueError):
        MemoryNonceStore(max_size=0)


async def test_expired_and_foreign_root_keys_are_ignored() -> None:
    expired = root_keys(expires_ms=NOW_MS - 1)
    with pytest.raises(CallbackVerificationError, match="no valid ECv2SigningOnly key"):
        await verify(callback(), root_keys=expired)
    other_protocol = root_keys(protocol="ECv1")
    with pytest.raises(CallbackVerificationError, match="no valid"):
        await verify(callback(), root_keys=other_protocol)


async def test_root_keys_cached_until_the_earliest_expiry() -> None:
    now = [NOW.timestamp()]
    soon, later = NOW_MS + 10 * 60_000, NOW_MS + 48 * HOUR_MS
    document = {
        "keys": [
            {
                "keyValue": der(OTHER_ROOT),
                "protocolVersion": "ECv2SigningOnly",
                "keyExpiration": str(soon),
            },
            {
                "keyValue": der(ROOT),
                "protocolVersion": "ECv2SigningOnly",
                "keyExpiration": str(later),
            },
            {
                "keyValue": "garbage",
                "protocolVersion": "ECv2SigningOnly",
                "keyExpiration": str(later),
            },
        ]
    }
    fetcher = Fetcher(document)
    keys = RootKeys(fetcher, clock=lambda: now[0])
    assert len(await keys.current()) == 2  # the unreadable key is skipped
    await keys.current()
    assert fetcher.calls == 1
    now[0] += 11 * 60  # the first key expired: fetch again
    assert len(await keys.current()) == 1
    assert fetcher.calls == 2


async def test_root_key_document_errors() -> None:
    for raw, match in [
        (b"nope", "not JSON"),
        (b"{}", "no 'keys' list"),
        (b"x" * 70_000, "too large"),
    ]:
        with pytest.raises(CallbackVerificationError, match=match):
            parse_root_keys(raw, now_ms=NOW_MS)


async def test_root_keys_given_directly() -> None:
    keys = parse_root_keys(keys_document(ROOT), now_ms=NOW_MS)
    assert (await verify(callback(), root_keys=keys)).nonce == "nonce-1"
    with pytest.raises(CallbackVerificationError, match="no unexpired Google root key"):
        await verify(callback(), root_keys=keys, now=NOW + timedelta(days=3))


@pytest.fixture
def key_server() -> Any:
    """A real HTTP server on 127.0.0.1 serving a root-key document at /keys (404 elsewhere)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    document = json.dumps(keys_document(ROOT)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/keys"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document if ok else b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_default_fetcher_gets_keys_over_http(key_server: str) -> None:
    keys = RootKeys(key_url=f"{key_server}/keys", clock=lambda: NOW.timestamp())
    assert (await verify(callback(), root_keys=keys)).nonce == "nonce-1"
    missing = RootKeys(key_url=f"{key_server}/nothing", clock=lambda: NOW.timestamp())
    with pytest.raises(CallbackVerificationError, match="HTTP 404"):
        await verify(callback(), root_keys=missing)
