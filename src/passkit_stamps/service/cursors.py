"""Opaque page cursors: the position after the last row of a page, for keyset pages.

A cursor carries only the sort key's value and the serial (or the journal id) of the last row
it follows, plus the order it was made for; it is checked strictly when it comes back (shape,
types, lengths, the same order asked), so a forged or damaged cursor is a CardInputError naming
``cursor``, never a database error. It needs no key, so any process of a fleet reads any
other's cursors. A cursor selects nothing by itself: the filters of the request apply, so a
forged one can only start a page at another position of a list its caller may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from ..errors import CardInputError
from ..model import is_valid_serial

MAX_CURSOR = 600
_CARDS = "c1"
_JOURNAL = "j1"
_TIME_KEYS = ("created_at", "last_stamp_at")


def _pack(kind: str, body: list[Any]) -> str:
    raw = json.dumps([kind, *body], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(cursor: object, kind: str, size: int) -> list[Any]:
    if not isinstance(cursor, str) or not 1 <= len(cursor) <= MAX_CURSOR:
        raise CardInputError(f"cursor must be a text of 1 to {MAX_CURSOR} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CardInputError("cursor is not one this service made") from None
    if not isinstance(found, list) or len(found) != size + 1 or found[0] != kind:
        raise CardInputError("cursor is not one this service made for this list")
    return found[1:]


def card_cursor(sort_key: str, descending: bool, value: Any, serial: str) -> str:
    """The cursor after a card row of a list sorted by ``sort_key``."""
    if isinstance(value, datetime):
        value = value.isoformat()
    return _pack(_CARDS, [sort_key, descending, value, serial])


def read_card_cursor(cursor: object, sort_key: str, descending: bool) -> tuple[Any, str]:
    """(sort value, serial) of a cursor made for this order; CardInputError otherwise."""
    key, desc, value, serial = _unpack(cursor, _CARDS, 4)
    if key != sort_key or desc is not descending:
        raise CardInputError(
            f"cursor was made for another sort order than {'-' if descending else ''}{sort_key}"
        )
    if not isinstance(serial, str) or not is_valid_serial(serial):
        raise CardInputError("cursor names no valid card position")
    if value is None:
        if sort_key not in ("last_stamp_at", "name"):
            raise CardInputError("cursor names no valid card position")
        return None, serial
    if sort_key in _TIME_KEYS:
        if not isinstance(value, str) or len(value) > 40:
            raise CardInputError("cursor names no valid card position")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise CardInputError("cursor names no valid card position") from None
        if moment.tzinfo is None:
            raise CardInputError("cursor names no valid card position")
        return moment, serial
    if sort_key == "stamps":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
            raise CardInputError("cursor names no valid card position")
        return value, serial
    if sort_key == "name":
        if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
            raise CardInputError("cursor names no valid card position")
        return value, serial
    # serial: the serial itself is the position
    if value != serial:
        raise CardInputError("cursor names no valid card position")
    return value, serial


def journal_cursor(newest_first: bool, event_id: int) -> str:
    """The cursor after a journal row."""
    return _pack(_JOURNAL, [newest_first, event_id])


def read_journal_cursor(cursor: object, newest_first: bool) -> int:
    """The journal id a cursor made for this order follows; CardInputError otherwise."""
    desc, event_id = _unpack(cursor, _JOURNAL, 2)
    if desc is not newest_first:
        raise CardInputError("cursor was made for the other journal order")
    if not isinstance(event_id, int) or isinstance(event_id, bool) or not 0 <= event_id < 2**63:
        raise CardInputError("cursor names no valid journal position")
    return event_id
