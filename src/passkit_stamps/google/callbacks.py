"""Google Wallet save/delete callbacks: ``ECv2SigningOnly`` verification.

Google POSTs a signed message to the class's ``callbackOptions.url`` whenever a holder saves or
deletes an object. :func:`verify_callback` checks it in the documented order — root keys,
intermediate key signature, intermediate key expiry, message signature, message expiry — then
de-duplicates on the nonce, and returns a typed :class:`CallbackEvent`. Every failure raises
:class:`~passkit_stamps.errors.CallbackVerificationError` with a message that says which step
failed (a replayed nonce raises its subclass ``CallbackReplayError``, which a web handler may
answer with 200 because Google retries).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import CallbackReplayError, CallbackVerificationError

PROTOCOL = "ECv2SigningOnly"
SENDER_ID = "GooglePayPasses"
ROOT_KEYS_URL = "https://pay.google.com/gp/m/issuer/keys"
#: A callback is a few hundred bytes; refuse anything much larger before parsing it.
MAX_BODY = 16 * 1024
#: The root-key document is small too.
MAX_KEYS_DOCUMENT = 64 * 1024
#: Root keys without an expiry are re-fetched after this long.
DEFAULT_KEY_TTL = 24 * 3600.0


class CallbackEventType(StrEnum):
    SAVE = "save"
    DELETE = "del"


@dataclass(frozen=True)
class CallbackEvent:
    """A verified save or delete of an object."""

    class_id: str
    object_id: str
    event_type: CallbackEventType
    nonce: str
    count: int | None
    expires_at: datetime


@dataclass(frozen=True)
class RootKey:
    """One of Google's root signing keys."""

    public_key: ec.EllipticCurvePublicKey
    protocol_version: str
    expires_at_ms: int | None


class NonceStore(Protocol):
    """Remembers callback nonces to drop replays. ``seen`` records ``nonce`` and answers whether
    it had been recorded before (atomically, for stores shared between workers)."""

    async def seen(self, nonce: str) -> bool: ...


class MemoryNonceStore:
    """A bounded in-memory :class:`NonceStore` (one process): forgets the oldest nonces first."""

    def __init__(self, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._nonces: OrderedDict[str, None] = OrderedDict()

    async def seen(self, nonce: str) -> bool:
        if nonce in self._nonces:
            self._nonces.move_to_end(nonce)
            return True
        self._nonces[nonce] = None
        if len(self._nonces) > self.max_size:
            self._nonces.popitem(last=False)
        return False


KeyFetcher = Callable[[], Awaitable[bytes | str | Mapping[str, Any]]]


def http_key_fetcher(url: str = ROOT_KEYS_URL, *, timeout: float = 10.0) -> KeyFetcher:
    """A fetcher that GETs the root-key document from ``url``."""

    async def fetch() -> bytes:
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                raise CallbackVerificationError(
                    f"cannot fetch Google's root keys from {url}: {type(exc).__name__}"
                ) from None
        if response.status_code != 200:
            raise CallbackVerificationError(
                f"cannot fetch Google's root keys from {url}: HTTP {response.status_code}"
            )
        return response.content

    return fetch


class RootKeys:
    """Google's root keys, fetched through ``fetch`` and cached until the earliest expiry."""

    def __init__(
        self,
        fetch: KeyFetcher | None = None,
        *,
        key_url: str = ROOT_KEYS_URL,
        protocol: str = PROTOCOL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch or http_key_fetcher(key_url)
        self._protocol = protocol
        self._clock = clock
        self._keys: tuple[RootKey, ...] = ()
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def current(self) -> tuple[RootKey, ...]:
        """The unexpired root keys for the protocol (fetched when the cache ran out)."""
        if self._clock() >= self._valid_until:
            async with self._lock:
                if self._clock() >= self._valid_until:
                    await self._refresh()
        now_ms = self._clock() * 1000
        return tuple(k for k in self._keys if k.expires_at_ms is None or k.expires_at_ms > now_ms)

    async def _refresh(self) -> None:
        raw = await self._fetch()
        self.fetches += 1
        keys = parse_root_keys(raw, protocol=self._protocol, now_ms=self._clock() * 1000)
        if not keys:
            raise CallbackVerificationError(
                f"Google's root-key document has no valid {self._protocol} key"
            )
        expiries = [k.expires_at_ms / 1000 for k in keys if k.expires_at_ms is not None]
        self._keys = keys
        self._valid_until = min([*expiries, self._clock() + DEFAULT_KEY_TTL])


def parse_root_keys(
    raw: bytes | str | Mapping[str, Any], *, protocol: str = PROTOCOL, now_ms: float
) -> tuple[RootKey, ...]:
    """The unexpired keys of ``protocol`` in a root-key document ``{"keys": [...]}``."""
    if isinstance(raw, bytes | str):
        if len(raw) > MAX_KEYS_DOCUMENT:
            raise CallbackVerificationError("Google's root-key document is too large")
        try:
            document = json.loads(raw)
        except ValueError:
            raise CallbackVerificationError("Google's root-key document is not JSON") from None
    else:
        document = raw
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise CallbackVerificationError("Google's root-key document has no 'keys' list")
    keys = []
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("protocolVersion") != protocol:
            continue
        expires = _millis(entry.get("keyExpiration")) if "keyExpiration" in entry else None
        if expires is not None and expires <= now_ms:
            continue
        try:
            keys.append(RootKey(_public_key(entry.get("keyValue")), protocol, expires))
        except CallbackVerificationError:
            continue  # one unreadable key must not hide the others
    return tuple(keys)


_DEFAULT_ROOT_KEYS: RootKeys | None = None


def default_root_keys() -> RootKeys:
    """A process-wide :class:`RootKeys` for Google's published URL (created on first use)."""
    global _DEFAULT_ROOT_KEYS
    if _DEFAULT_ROOT_KEYS is None:
        _DEFAULT_ROOT_KEYS = RootKeys()
    return _DEFAULT_ROOT_KEYS


# -- verification -----------------------------------------------------------------------------


def _lv(*parts: str) -> bytes:
    """Length-value encoding: each part as a 4-byte little-endian length and its UTF-8 bytes."""
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8")
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise CallbackVerificationError(f"callback {what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CallbackVerificationError(f"callback {what} is not valid base64") from None


def _public_key(value: Any) -> ec.EllipticCurvePublicKey:
    der = _b64(value, "public key")
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise CallbackVerificationError("unreadable public key (expected DER)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CallbackVerificationError("public key is not an EC P-256 key")
    return key


def _millis(value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise CallbackVerificationError(f"not a time in milliseconds: {value!r}") from None


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _object(text: Any, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise CallbackVerificationError(f"callback {what} is missing or not a JSON string")
    try:
        value = json.loads(text)
    except ValueError:
        raise CallbackVerificationError(f"callback {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CallbackVerificationError(f"callback {what} is not a JSON object")
    return value


async def verify_callback(
    body: bytes | str,
    issuer_id: str,
    *,
    root_keys: RootKeys | Sequence[RootKey] | None = None,
    nonce_store: NonceStore | None = None,
    sender_id: str = SENDER_ID,
    protocol: str = PROTOCOL,
    now: datetime | None = None,
    max_body: int = MAX_BODY,
) -> CallbackEvent:
    """Verify a save/delete callback body and return its event.

    ``root_keys`` defaults to Google's published keys (fetched and cached); pass a
    :class:`RootKeys` with another fetcher, or the keys themselves, to use others. ``nonce_store``
    drops replays (``CallbackReplayError``). ``sender_id`` is ``GooglePayPasses`` (some newer docs
    say ``GoogleWalletPasses``).
    """
    now_ms = (now or datetime.now(UTC)).timestamp() * 1000
    if len(body) > max_body:
        raise CallbackVerificationError(f"callback body larger than {max_body} bytes")
    envelope = _object(body.decode("utf-8", "replace") if isinstance(body, bytes) else body, "body")

    # 0. The protocol.
    if envelope.get("protocolVersion") != protocol:
        raise CallbackVerificationError(
            f"callback protocol {envelope.get('protocolVersion')!r} is not {protocol!r}"
        )

    # 1. Root keys: unexpired keys of the protocol.
    if root_keys is None:
        root_keys = default_root_keys()
    keys = await root_keys.current() if isinstance(root_keys, RootKeys) else tuple(root_keys)
    keys = tuple(
        k
        for k in keys
        if k.protocol_version == protocol and (k.expires_at_ms is None or k.expires_at_ms > now_ms)
    )
    if not keys:
        raise CallbackVerificationError("no unexpired Google root key to verify the callback")

    # 2. The intermediate key, signed by a root key.
    intermediate = envelope.get("intermediateSigningKey")
    if not isinstance(intermediate, Mapping):
        raise CallbackVerificationError("callback has no intermediateSigningKey")
    signed_key = intermediate.get("signedKey")
    signatures = intermediate.get("signatures")
    if not isinstance(signed_key, str) or not isinstance(signatures, list) or not signatures:
        raise CallbackVerificationError("callback intermediateSigningKey is incomplete")
    key_data = _lv(sender_id, protocol, signed_key)
    decoded = [_b64(s, "intermediate signature") for s in signatures]
    if not any(_verifies(root.public_key, sig, key_data) for root in keys for sig in decoded):
        raise CallbackVerificationError(
            "intermediate signing key is not signed by any Google root key"
        )

    # 3. The intermediate key's expiry.
    key_fields = _object(signed_key, "signedKey")
    if _millis(key_fields.get("keyExpiration")) <= now_ms:
        raise CallbackVerificationError("intermediate signing key has expired")
    intermediate_key = _public_key(key_fields.get("keyValue"))

    # 4. The message, signed by the intermediate key for this issuer.
    signed_message = envelope.get("signedMessage")
    if not isinstance(signed_message, str):
        raise CallbackVerificationError("callback has no signedMessage")
    signature = _b64(envelope.get("signature"), "signature")
    if not _verifies(
        intermediate_key, signature, _lv(sender_id, issuer_id, protocol, signed_message)
    ):
        raise CallbackVerificationError(
            f"callback signature does not verify for issuer {issuer_id} "
            "(tampered, or meant for another issuer)"
        )

    # 5. The message's expiry, its content, and the nonce.
    message = _object(signed_message, "signedMessage")
    expires_ms = _millis(message.get("expTimeMillis"))
    if expires_ms <= now_ms:
        raise CallbackVerificationError("callback message has expired")
    try:
        event_type = CallbackEventType(str(message.get("eventType")))
    except ValueError:
        raise CallbackVerificationError(
            f"callback eventType {message.get('eventType')!r} is neither 'save' nor 'del'"
        ) from None
    class_id, object_id, nonce = (message.get(k) for k in ("classId", "objectId", "nonce"))
    for name, value in (("classId", class_id), ("objectId", object_id), ("nonce", nonce)):
        if not isinstance(value, str) or not value:
            raise CallbackVerificationError(f"callback message has no {name}")
    assert isinstance(class_id, str) and isinstance(object_id, str) and isinstance(nonce, str)
    if not class_id.startswith(f"{issuer_id}."):
        raise CallbackVerificationError(f"callback class {class_id} is not of issuer {issuer_id}")
    count = message.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise CallbackVerificationError("callback count is not an integer")
    if nonce_store is not None and await nonce_store.seen(nonce):
        raise CallbackReplayError(f"callback nonce {nonce!r} was seen before (replay)")
    return CallbackEvent(
        class_id=class_id,
        object_id=object_id,
        event_type=event_type,
        nonce=nonce,
        count=count,
        expires_at=datetime.fromtimestamp(expires_ms / 1000, UTC),
    )
