"""API keys for the till API, and the two look-ups a till needs: a card by the scanned barcode of
its pass, and a voucher's card by the voucher's scanned code.

A key is ``pks_<id>_<secret>``: ``id`` (16 hex characters) is public and names the key in lists,
the journal and revocation; ``secret`` is 256 random bits, base64url. The store keeps only the
SHA-256 of the secret: a leaked database gives no usable key. Checking a key looks it up by id
and compares the hash in constant time; an unknown id is compared against a dummy hash, so an
unknown key and a wrong secret are refused alike (same error, same work).

Verified keys are cached in the process for :data:`KEY_CACHE_SECONDS` (a till sends a request per
scan; a store read per request would cost more than the stamp). ``revoke_api_key`` clears the
cache, so a revocation takes effect at once in this process and within that time in others.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..errors import (
    ApiKeyError,
    ApiKeyInputError,
    ApiKeyNotFoundError,
    NotFoundError,
    VoucherError,
)
from ..model import is_valid_serial
from ..store import apikeys as store_apikeys
from ..store.schema import utc
from .cards import CardOperations
from .reads import CardReads
from .results import CardDetails, Change

KEY_PREFIX = "pks_"
KEY_CACHE_SECONDS = 5.0
_KEY_RE = re.compile(r"pks_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_VOUCHER_CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Compared against when the key id is unknown, so that case costs what a wrong secret costs.
_DUMMY_SHA256 = hashlib.sha256(b"no such key").hexdigest()
_REFUSED = "unknown, revoked or malformed API key"


class ApiRole(StrEnum):
    """What a key may do: ``staff`` look up, stamp and redeem; ``manager`` everything."""

    STAFF = "staff"
    MANAGER = "manager"


@dataclass(frozen=True)
class ApiKey:
    """A key as listed (never its secret)."""

    id: str
    name: str
    role: ApiRole
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def actor(self) -> str:
        """What the journal records for what this key does."""
        return f"api-key:{self.id} ({self.name})"


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: ``secret`` is the whole key to hand to the till; shown once."""

    key: ApiKey
    secret: str = ""

    def __repr__(self) -> str:  # the secret never lands in a log by accident
        return f"NewApiKey(key={self.key!r}, secret='***')"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        role=ApiRole(row["role"]),
        created_at=utc(row["created_at"]) or row["created_at"],
        revoked_at=utc(row["revoked_at"]),
    )


class ApiKeyOperations(CardOperations, CardReads):
    async def create_api_key(self, name: str, role: ApiRole | str) -> NewApiKey:
        """A new key with ``role`` (staff or manager). Raises ApiKeyInputError."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name.strip()):
            raise ApiKeyInputError("API key name must be 1 to 100 characters, no control codes")
        try:
            wanted = ApiRole(role)
        except ValueError:
            raise ApiKeyInputError(
                f"unknown API key role {role!r}: use one of staff, manager"
            ) from None
        name = name.strip()
        for _ in range(3):
            key_id = secrets.token_hex(8)
            secret = secrets.token_urlsafe(32)
            now = self._now()

            def body(
                conn: Connection, key_id: str = key_id, secret: str = secret, now: datetime = now
            ) -> None:
                store_apikeys.insert_api_key(
                    conn,
                    key_id=key_id,
                    name=name,
                    role=wanted.value,
                    secret_sha256=_sha256(secret),
                    now=now,
                )

            try:
                await self.store.run_write(body)
            except IntegrityError:  # a 64-bit id collided: draw again
                continue
            key = ApiKey(id=key_id, name=name, role=wanted, created_at=now)
            return NewApiKey(key=key, secret=f"{KEY_PREFIX}{key_id}_{secret}")
        raise ApiKeyInputError("could not draw a free API key id")  # pragma: no cover

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, oldest first, revoked ones included."""
        rows = await self.store.run_read(store_apikeys.all_api_keys)
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key by id (again: no change). Raises ApiKeyNotFoundError."""
        if not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{16}", key_id):
            raise ApiKeyNotFoundError(f"no API key {key_id!r:.40}")
        now = self._now()

        def body(conn: Connection) -> Any:
            if not store_apikeys.revoke_api_key(conn, key_id, now):
                raise ApiKeyNotFoundError(f"no API key {key_id}")
            return store_apikeys.api_key(conn, key_id)

        row = await self.store.run_write(body)
        self._key_cache().clear()
        return _api_key(row)

    async def authenticate_api_key(self, token: str) -> ApiKey:
        """The active key ``token`` is, or ApiKeyError (the same for every way of being wrong)."""
        if not isinstance(token, str):
            raise ApiKeyError(_REFUSED)
        match = _KEY_RE.fullmatch(token)
        # The cache is keyed by the digest of the whole key: no secret is held in memory.
        digest = _sha256(token)
        cache = self._key_cache()
        cached = cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if match is None:
            raise ApiKeyError(_REFUSED)
        key_id, secret = match.groups()
        row = await self.store.run_read(lambda conn: store_apikeys.api_key(conn, key_id))
        expected = row["secret_sha256"] if row is not None else _DUMMY_SHA256
        right = hmac.compare_digest(expected.encode(), _sha256(secret).encode())
        if row is None or not right or row["revoked_at"] is not None:
            raise ApiKeyError(_REFUSED)
        key = _api_key(row)
        if len(cache) >= 1000:  # bounded: forget everything rather than track ages
            cache.clear()
        cache[digest] = (key, time.monotonic() + KEY_CACHE_SECONDS)
        return key

    def _key_cache(self) -> dict[str, tuple[ApiKey, float]]:
        cache: dict[str, tuple[ApiKey, float]] | None = getattr(self, "_api_key_cache", None)
        if cache is None:
            cache = {}
            self._api_key_cache = cache
        return cache

    async def find_card_by_barcode(self, message: str) -> CardDetails:
        """The card whose pass shows this barcode. Our passes encode the card's serial (Apple's
        ``barcodes[0].message``, Google's ``barcode.value``); scanners often add a line end,
        which is ignored. Raises CardNotFoundError (unknown, deleted or not one of ours)."""
        if not isinstance(message, str):
            raise ApiKeyInputError("barcode message must be a text")
        return await self.get_card(message.strip())

    async def redeem_voucher_by_code(
        self,
        voucher_code: str,
        *,
        serial: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> Change:
        """Redeem the voucher with this (scanned) code on whichever card holds it, or on
        ``serial`` when given. The code's card is looked up first: a code never moves to
        another card, so the redemption (one transaction, as ``redeem_voucher``) stays right.
        Raises NotFoundError (no live card holds the code), VoucherError (redeemed; a code on
        two cards, which random codes make practically impossible: name the serial)."""
        if not isinstance(voucher_code, str) or not _VOUCHER_CODE_RE.fullmatch(
            voucher_code.strip()
        ):
            raise NotFoundError(f"no voucher {voucher_code!r:.80}")
        code = voucher_code.strip()
        if serial is None:
            found = await self.store.run_read(
                lambda conn: store_apikeys.serials_with_voucher(conn, code)
            )
            if not found:
                raise NotFoundError(f"no voucher {code}")
            if len(found) > 1:
                raise VoucherError(f"voucher code {code} is on several cards: give the serial")
            serial = found[0]
        elif not is_valid_serial(serial):
            raise NotFoundError(f"no voucher {code}")
        return await self.redeem_voucher(serial, code, idempotency_key=idempotency_key, actor=actor)
