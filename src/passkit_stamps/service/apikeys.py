"""API keys for the till API, and the two look-ups a till needs: a card by the scanned barcode of
its pass, and a voucher's card by the voucher's scanned code.

A key is ``pks_<id>_<secret>``: ``id`` (16 hex characters) is public and names the key in lists,
the journal and revocation; ``secret`` is 256 random bits, base64url. The store keeps only the
SHA-256 of the secret: a leaked database gives no usable key.

Checking a key needs no store read per request (a till sends one per scan; a read would cost
more than the stamp): the process holds the table of active keys (ids, roles and the secrets'
SHA-256, never a secret), read again when it is older than :data:`KEY_TABLE_SECONDS`, so a key
revoked by another process is refused within that time (``revoke_api_key`` in this process:
at once). A key is looked up by id and its hash compared in constant time; an unknown (or
revoked) id is compared against a dummy hash. A key not found sends the check to the store
again when the table is older than :data:`KEY_MISS_SECONDS` (a key just created by another
process, e.g. ``passkit-stamps api-keys create``, works within that), then checks once more:
that depends on the table's age only, so an unknown key and a wrong secret are refused alike
(same error, same work).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
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
#: The key table is read again when older than this (a revocation elsewhere takes effect).
KEY_TABLE_SECONDS = 5.0
#: ... and when a key is not found in a table older than this (a key created elsewhere).
KEY_MISS_SECONDS = 0.5
_KEY_RE = re.compile(r"pks_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_VOUCHER_CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Compared against when the key id is unknown, so that case costs what a wrong secret costs.
_DUMMY_SHA256 = hashlib.sha256(b"no such key").hexdigest().encode()
_REFUSED = "unknown, revoked or malformed API key"
_NO_KEY: tuple[bytes, None] = (_DUMMY_SHA256, None)


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

    @cached_property  # made once per key, not per request (the table keeps its keys)
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


@dataclass
class KeyTable:
    """The active keys as this process last read them: id -> (secret's SHA-256 hex, key)."""

    keys: dict[str, tuple[bytes, ApiKey]] = field(default_factory=dict)
    #: time.monotonic() when the read that made ``keys`` started (-inf: never read).
    loaded_at: float = float("-inf")
    #: Bumped by every change made here: a read started before it is not installed.
    generation: int = 0
    loading: asyncio.Future[dict[str, tuple[bytes, ApiKey]]] | None = None

    def check(self, key_id: str, digest: bytes) -> ApiKey | None:
        """The key when ``digest`` is its secret's. An unknown id takes the same steps, against
        a dummy hash (no secret has it: it is the hash of no valid secret) and no key."""
        expected, key = self.keys.get(key_id, _NO_KEY)
        return key if hmac.compare_digest(expected, digest) else None


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
            table = self._api_keys
            table.generation += 1
            table.keys[key_id] = (_sha256(secret).encode(), key)
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
        table = self._api_keys
        table.generation += 1
        table.keys.pop(key_id, None)
        return _api_key(row)

    async def authenticate_api_key(self, token: str) -> ApiKey:
        """The active key ``token`` is, or ApiKeyError (the same for every way of being wrong)."""
        match = _KEY_RE.fullmatch(token) if isinstance(token, str) else None
        if match is None:  # malformed: no look-up (the shape of a key is no secret)
            raise ApiKeyError(_REFUSED)
        key_id, secret = match.groups()
        digest = _sha256(secret).encode()
        table = self._api_keys
        # A fresh table (nearly always) is used as it is: no coroutine a request.
        if time.monotonic() - table.loaded_at > KEY_TABLE_SECONDS:
            table = await self._key_table(KEY_TABLE_SECONDS)
        key = table.check(key_id, digest)
        if key is None:
            # Perhaps created by another process since the table was read: read it again if
            # it is not fresh, and check once more. Whether the id exists plays no part here.
            table = await self._key_table(KEY_MISS_SECONDS)
            key = table.check(key_id, digest)
            if key is None:
                raise ApiKeyError(_REFUSED)
        return key

    @property
    def _api_keys(self) -> KeyTable:
        table: KeyTable | None = getattr(self, "_api_key_table", None)
        if table is None:
            table = self._api_key_table = KeyTable()
        return table

    async def _key_table(self, max_age: float) -> KeyTable:
        """The key table, read again first when older than ``max_age`` seconds. Concurrent
        requests share one read."""
        table = self._api_keys
        if time.monotonic() - table.loaded_at <= max_age:
            return table
        loading = table.loading
        if (
            loading is None
            or loading.done()
            or loading.get_loop() is not asyncio.get_running_loop()
        ):
            loading = table.loading = asyncio.ensure_future(self._read_key_table(table))
        await asyncio.shield(loading)
        return table

    async def _read_key_table(self, table: KeyTable) -> dict[str, tuple[bytes, ApiKey]]:
        started, generation = time.monotonic(), table.generation
        rows = await self.store.run_read(store_apikeys.active_api_keys)
        keys = {r["id"]: (r["secret_sha256"].encode(), _api_key(r)) for r in rows}
        if table.generation == generation:  # else a key changed meanwhile: read again next time
            table.keys, table.loaded_at = keys, started
        return table.keys

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
