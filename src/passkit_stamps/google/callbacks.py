"""Google Wallet save/delete callbacks: ``ECv2SigningOnly`` verification.

Google POSTs a signed message to the class's ``callbackOptions.url`` whenever a holder saves or
deletes an object. :func:`verify_callback` checks it in the documented order — root keys,
intermediate key signature, intermediate key expiry, message signature, message expiry — then
de-duplicates on the nonce, and returns a typed :class:`CallbackEvent`. Every failure raises
:class:`~passkit_stamps.errors.CallbackVerificationError` with a message that says which step
failed (a replayed nonce raises its subclass ``CallbackReplayError``, which a web handler may
answer with 200 because Google retries).

The callback URL is public, so everything here assumes a hostile sender: the body is parsed with
bounded nesting and number sizes, at most :data:`MAX_INTERMEDIATE_SIGNATURES` signatures of a
plausible length are accepted before any is verified, the ECDSA checks run in worker threads
(at most :data:`MAX_VERIFY_THREADS` at a time per event loop, so junk floods neither block the
loop nor take every thread; at most :data:`MAX_VERIFY_WAITERS` wait for them, the rest are
refused at once with ``CallbackBusyError``), and a failed root-key fetch is remembered for a
growing interval.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import struct
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import anyio
import anyio.to_thread
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import _boundedjson as boundedjson
from ..errors import CallbackBusyError, CallbackReplayError, CallbackVerificationError

PROTOCOL = "ECv2SigningOnly"
SENDER_ID = "GooglePayPasses"
ROOT_KEYS_URL = "https://pay.google.com/gp/m/issuer/keys"
#: A callback is a few hundred bytes; refuse anything much larger before parsing it.
MAX_BODY = 16 * 1024
#: The root-key document is small too.
MAX_KEYS_DOCUMENT = 64 * 1024
#: Root keys without an expiry are re-fetched after this long.
DEFAULT_KEY_TTL = 24 * 3600.0
#: Google signs its intermediate key once per root key; a few allow for a key rotation. Every
#: signature costs one ECDSA verification per root key, so more are refused before verifying.
MAX_INTERMEDIATE_SIGNATURES = 4
#: A DER ECDSA P-256 signature is at most 72 bytes (96 base64 characters).
MAX_SIGNATURE_CHARS = 128
#: Worker threads verifying signatures at the same time, per event loop.
MAX_VERIFY_THREADS = 2
#: Callbacks verifying or waiting to, per event loop: each holds its body (<= 16 KiB) and a task,
#: so a flood beyond this is refused before any work instead of queueing without bound.
MAX_VERIFY_WAITERS = 64
#: After a failed root-key fetch, the next one waits this long, doubling up to the maximum.
MIN_KEY_FETCH_BACKOFF = 1.0
MAX_KEY_FETCH_BACKOFF = 300.0
#: 9999-12-31T23:59:59.999Z, the last millisecond a datetime holds.
MAX_TIME_MS = 253_402_300_799_999


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
        # The last failed fetch, and when the next may be tried (see MIN_KEY_FETCH_BACKOFF).
        self._failure: CallbackVerificationError | None = None
        self._retry_at = 0.0
        self._backoff = 0.0

    async def current(self) -> tuple[RootKey, ...]:
        """The unexpired root keys for the protocol (fetched when the cache ran out).

        Concurrent callers share one fetch. While Google's key URL fails, the failure is
        remembered and the URL tried again only after a growing interval (1 s doubling to
        5 min), so a flood of callbacks cannot turn into a flood of fetches; meanwhile cached
        keys that have not expired are still used.
        """
        if self._clock() >= self._valid_until and self._clock() >= self._retry_at:
            async with self._lock:
                if self._clock() >= self._valid_until and self._clock() >= self._retry_at:
                    await self._refresh_or_back_off()
        keys = self._unexpired()
        if not keys and self._failure is not None:
            wait = max(self._retry_at - self._clock(), 0.0)
            raise CallbackVerificationError(f"{self._failure} (next attempt in {wait:.0f} s)")
        return keys

    def _unexpired(self) -> tuple[RootKey, ...]:
        now_ms = self._clock() * 1000
        return tuple(k for k in self._keys if k.expires_at_ms is None or k.expires_at_ms > now_ms)

    async def _refresh_or_back_off(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:  # any fetcher's failure: remembered, never a 500
            failure = (
                exc
                if isinstance(exc, CallbackVerificationError)
                else CallbackVerificationError(
                    f"cannot fetch Google's root keys: {type(exc).__name__}"
                )
            )
            self._backoff = min(
                max(self._backoff * 2, MIN_KEY_FETCH_BACKOFF), MAX_KEY_FETCH_BACKOFF
            )
            self._retry_at = self._clock() + self._backoff
            self._failure = failure
        else:
            self._failure, self._retry_at, self._backoff = None, 0.0, 0.0

    async def _refresh(self) -> None:
        self.fetches += 1
        raw = await self._fetch()
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
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            document = boundedjson.loads(text)
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
        expires = (
            _millis(entry.get("keyExpiration"), "root keyExpiration")
            if "keyExpiration" in entry
            else None
        )
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


def _millis(value: Any, what: str = "time") -> int:
    """A time in milliseconds since the epoch (Google sends numbers or digit strings), within
    the range a datetime holds: 1e20 or a 5,000-digit string is a verification error."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CallbackVerificationError(f"{what} is not a time in milliseconds")
    if isinstance(value, str) and len(value) > 20:
        raise CallbackVerificationError(f"{what} is not a time in milliseconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise CallbackVerificationError(f"{what} is out of range")
    try:
        millis = int(value)
    except ValueError:
        raise CallbackVerificationError(f"{what} is not a time in milliseconds") from None
    if not 0 <= millis <= MAX_TIME_MS:
        raise CallbackVerificationError(f"{what} is out of range")
    return millis


def _signature(value: Any, what: str) -> bytes:
    """A base64 signature, refused before decoding when no P-256 signature is that long."""
    if isinstance(value, str) and len(value) > MAX_SIGNATURE_CHARS:
        raise CallbackVerificationError(f"callback {what} is longer than an ECDSA signature")
    return _b64(value, what)


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
        value = boundedjson.loads(text)
    except boundedjson.JSONLimitError as exc:
        raise CallbackVerificationError(f"callback {what} is not valid JSON: {exc}") from None
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

    # Everything that needs no key and no signature check comes first, so a body that cannot
    # pass costs neither a key fetch nor an ECDSA verification.
    intermediate = envelope.get("intermediateSigningKey")
    if not isinstance(intermediate, Mapping):
        raise CallbackVerificationError("callback has no intermediateSigningKey")
    signed_key = intermediate.get("signedKey")
    signatures = intermediate.get("signatures")
    if not isinstance(signed_key, str) or not isinstance(signatures, list) or not signatures:
        raise CallbackVerificationError("callback intermediateSigningKey is incomplete")
    if len(signatures) > MAX_INTERMEDIATE_SIGNATURES:
        raise CallbackVerificationError(
            f"callback intermediateSigningKey has more than {MAX_INTERMEDIATE_SIGNATURES} "
            "signatures"
        )
    decoded = [_signature(s, "intermediate signature") for s in signatures]
    key_fields = _object(signed_key, "signedKey")
    key_expires_ms = _millis(key_fields.get("keyExpiration"), "intermediate keyExpiration")
    intermediate_key = _public_key(key_fields.get("keyValue"))
    signed_message = envelope.get("signedMessage")
    if not isinstance(signed_message, str):
        raise CallbackVerificationError("callback has no signedMessage")
    signature = _signature(envelope.get("signature"), "signature")

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

    # 2.-4. The intermediate key signed by a root key, its expiry, and the message signed by
    # the intermediate key for this issuer: in a worker thread (ECDSA costs ~0.1 ms each).
    failed = await _run_verification(
        _check_signatures,
        [root.public_key for root in keys],
        decoded,
        _lv(sender_id, protocol, signed_key),
        key_expires_ms <= now_ms,
        intermediate_key,
        signature,
        _lv(sender_id, issuer_id, protocol, signed_message),
    )
    if failed == "intermediate":
        raise CallbackVerificationError(
            "intermediate signing key is not signed by any Google root key"
        )
    if failed == "expired":
        raise CallbackVerificationError("intermediate signing key has expired")
    if failed == "message":
        raise CallbackVerificationError(
            f"callback signature does not verify for issuer {issuer_id} "
            "(tampered, or meant for another issuer)"
        )

    # 5. The message's expiry, its content, and the nonce.
    message = _object(signed_message, "signedMessage")
    expires_ms = _millis(message.get("expTimeMillis"), "callback expTimeMillis")
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


def _check_signatures(
    roots: list[ec.EllipticCurvePublicKey],
    signatures: list[bytes],
    key_data: bytes,
    key_expired: bool,
    intermediate_key: ec.EllipticCurvePublicKey,
    signature: bytes,
    message_data: bytes,
) -> str | None:
    """Steps 2 to 4 (run in a worker thread): the first step that failed, or None."""
    if not any(_verifies(root, sig, key_data) for root in roots for sig in signatures):
        return "intermediate"
    if key_expired:
        return "expired"
    if not _verifies(intermediate_key, signature, message_data):
        return "message"
    return None


# One limiter per event loop (anyio's limiters belong to the loop that made them).
_VERIFY_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


async def _run_verification(check: Callable[..., str | None], *args: Any) -> str | None:
    """Run ``check`` in a worker thread, at most :data:`MAX_VERIFY_THREADS` at a time per loop:
    the event loop stays free for other requests, and a flood of junk callbacks queues here
    instead of taking every thread of the default pool."""
    loop = asyncio.get_running_loop()
    limiter = _VERIFY_LIMITERS.get(loop)
    if limiter is None:
        limiter = _VERIFY_LIMITERS[loop] = anyio.CapacityLimiter(MAX_VERIFY_THREADS)
    if limiter.borrowed_tokens + limiter.statistics().tasks_waiting >= MAX_VERIFY_WAITERS:
        raise CallbackBusyError(
            "too many callbacks are waiting for verification; nothing was checked, retry later"
        )
    return await anyio.to_thread.run_sync(check, *args, limiter=limiter)
