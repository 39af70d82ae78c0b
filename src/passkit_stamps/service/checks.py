"""Argument checks shared by the service's operations: each bad input is a typed error that
names the field and the rule (CardInputError), or "not found" where existence must not leak."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from ..errors import CardInputError, CardNotFoundError
from ..model import is_valid_serial

MAX_PAGE = 500
MAX_KEY_LENGTH = 200


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_page(offset: object, limit: object) -> tuple[int, int]:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise CardInputError(f"offset must be a whole number >= 0, got {offset!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise CardInputError(f"limit must be 1 to {MAX_PAGE}, got {limit!r}")
    return offset, limit


def enum_value(kind: Any, value: object, what: str) -> str:
    try:
        return str(kind(value).value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise CardInputError(f"unknown {what} {value!r}: use one of {allowed}") from None


def check_serial(serial: object) -> None:
    """A serial that cannot name a card is "no card" (checked before a query: PostgreSQL
    refuses some characters, e.g. NUL, with an untyped database error)."""
    if not isinstance(serial, str):
        raise CardInputError(f"serial must be a text, got {type(serial).__name__}")
    if not is_valid_serial(serial):
        raise CardNotFoundError(f"no card {serial!r:.80}")


def check_text(value: object, what: str, high: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= high or not value.isprintable():
        raise CardInputError(f"{what} must be 1 to {high} printable characters")


def check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise CardInputError(f"idempotency key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def request_digest(operation: str, serial: str | None, request: dict[str, Any]) -> str:
    body = json.dumps([operation, serial, request], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def search_text(search: object) -> str | None:
    """The search text, trimmed and lower-cased (None or "" for no search)."""
    if search is None:
        return None
    # NUL: PostgreSQL cannot take it in text and SQLite's FTS5 query parser chokes on it.
    if not isinstance(search, str) or len(search) > 200 or "\x00" in search:
        raise CardInputError("search must be a text of at most 200 characters, without NUL")
    return search.strip().lower()
