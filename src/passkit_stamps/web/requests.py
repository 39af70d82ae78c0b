"""Strict parsing of what a device (or a browser) sends: headers, path parameters, bodies.

Pure functions, except :func:`read_body`, which reads an ASGI request stream and stops as soon as
the body passes its limit (so a client cannot make the server buffer an unbounded body). Every
refusal is a :class:`~passkit_stamps.errors.RequestError` (400) or
:class:`~passkit_stamps.errors.RequestTooLargeError` (413) whose message names what was wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from .. import _boundedjson as boundedjson
from ..errors import RequestError, RequestTooLargeError
from ..model import is_valid_serial

#: Body limits: a registration is ``{"pushToken": "<64 hex>"}``; a log batch is a few lines.
MAX_REGISTER_BODY = 4 * 1024
MAX_LOG_BODY = 64 * 1024
MAX_CALLBACK_BODY = 16 * 1024
#: A device's log line is kept up to this many characters.
MAX_LOG_MESSAGE = 1_000

# Apple's device library identifiers are opaque (32 hex characters in practice); accept the
# characters a URL path segment carries without escaping, and bound the length.
_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Reverse-DNS pass type identifiers, e.g. "pass.com.example.stamps".
_PASS_TYPE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,254}")
# The same rule as model.Card.serial.
# APNs device tokens are hex strings (32 bytes today; Apple says they may grow).
_PUSH_TOKEN = re.compile(r"[0-9A-Fa-f]{8,512}")
# Change tags are ours (opaque to the device), so only what we could have issued is accepted.
_TAG = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_APPLE_PASS_AUTH = re.compile(r"ApplePass ([\x21-\x7e]{1,256})")
_PAGE_SECRET = re.compile(r"[A-Za-z0-9_-]{22}")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


# -- path parameters ----------------------------------------------------------------------------


def device_library_identifier(value: str) -> str:
    """A device library identifier from the path; RequestError when malformed."""
    if not _DEVICE_ID.fullmatch(value):
        raise RequestError("malformed device library identifier")
    return value


def is_pass_type_identifier(value: str) -> bool:
    """Whether ``value`` looks like a pass type identifier (an unknown one is a 404, not a 400)."""
    return bool(_PASS_TYPE_ID.fullmatch(value))


def serial_number(value: str) -> str:
    """A pass serial number from the path; RequestError when malformed."""
    if not is_valid_serial(value):
        raise RequestError("malformed serial number")
    return value


def updated_since_tag(value: str | None) -> str | None:
    """The ``passesUpdatedSince`` query parameter: None when absent (every registered pass)."""
    if value is None:
        return None
    if not _TAG.fullmatch(value):
        raise RequestError("malformed passesUpdatedSince tag")
    return value


# -- headers ------------------------------------------------------------------------------------


def apple_pass_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: ApplePass <token>`` header, or None when the header is
    absent or not exactly that form (both are a 401: a device sends nothing else)."""
    if authorization is None:
        return None
    match = _APPLE_PASS_AUTH.fullmatch(authorization)
    return match.group(1) if match else None


def tokens_equal(expected: str, given: str) -> bool:
    """Constant-time comparison of an authentication token (no timing oracle on its prefix)."""
    return hmac.compare_digest(expected.encode(), given.encode())


def if_modified_since(value: str | None) -> datetime | None:
    """The ``If-Modified-Since`` date, or None when absent or unparseable (RFC 9110: a client
    that sends an invalid date gets the full answer)."""
    if not value or len(value) > 64:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000" means UTC without claiming a zone
            parsed = parsed.replace(tzinfo=UTC)
        # In UTC here, where a year-9999 date that overflows on conversion is still caught.
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def http_date(moment: datetime) -> str:
    """An HTTP date (IMF-fixdate, GMT), truncated to whole seconds like the header."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


#: How long after a change its Last-Modified second counts as settled (see :func:`last_modified`).
SETTLE = timedelta(seconds=2)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def change_second(last_modified: datetime) -> datetime:
    """The whole second that stands for a change: the change time rounded UP, so that every
    later change has a later second than the one a client was told (HTTP dates have no
    fractions)."""
    moment = _aware(last_modified)
    whole = moment.replace(microsecond=0)
    return whole + timedelta(seconds=1) if moment.microsecond else whole


def last_modified(changed: datetime, now: datetime) -> str:
    """The ``Last-Modified`` header for a pass whose content last changed at ``changed``,
    answered at ``now`` (taken before the pass was read).

    Normally :func:`change_second`. While that second has not settled (``now`` is less than
    :data:`SETTLE` after it), another change could still land in the same second, so the
    header is one second earlier: the client's next ``If-Modified-Since`` then gets the pass
    again instead of a 304 that would hide the second change. A device never misses an update.
    """
    second = change_second(changed)
    if _aware(now) < second + SETTLE:
        second -= timedelta(seconds=1)
    return http_date(second)


def not_modified(changed: datetime, since: datetime | None) -> bool:
    """Whether a client holding the version of ``since`` (an ``If-Modified-Since`` date) has
    the content that last changed at ``changed``."""
    if since is None:
        return False
    return _aware(since) >= change_second(changed)


# -- bodies -------------------------------------------------------------------------------------


def check_content_length(content_length: str | None, limit: int) -> None:
    """Refuse a declared ``Content-Length`` that is malformed (400) or over ``limit`` (413),
    before the body is read."""
    if content_length is not None:
        # ASCII digits only: str.isdigit() also accepts "¹" (latin-1 0xB9), which int() refuses.
        if not _CONTENT_LENGTH.fullmatch(content_length):
            raise RequestError("malformed Content-Length")
        if int(content_length) > limit:
            raise RequestTooLargeError(f"request body over {limit} bytes")


async def read_body(
    chunks: AsyncIterator[bytes], limit: int, *, content_length: str | None = None
) -> bytes:
    """Read a request body of at most ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading; a body that passes
    the limit while streaming is refused at that chunk, so nothing beyond ``limit`` is buffered.
    """
    check_content_length(content_length, limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise RequestTooLargeError(f"request body over {limit} bytes")
    return bytes(body)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("request body is not UTF-8") from exc
    try:
        # Bounded: nesting depth, integer digits, finite numbers (a 5,000-digit integer or
        # 8,000 nested brackets would otherwise escape as ValueError/RecursionError: a 500).
        value = boundedjson.loads(text)
    except boundedjson.JSONLimitError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise RequestError("request body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise RequestError("request body must be a JSON object")
    return value


def register_push_token(body: bytes) -> str:
    """The push token of a registration body ``{"pushToken": "<hex>"}``."""
    data = _json_object(body)
    token = data.get("pushToken")
    if token is None:
        raise RequestError("missing pushToken")
    if not isinstance(token, str) or not _PUSH_TOKEN.fullmatch(token):
        raise RequestError("pushToken must be a hex string of 8 to 512 characters")
    return token


def log_messages(body: bytes, *, max_length: int = MAX_LOG_MESSAGE) -> list[str]:
    """The messages of a device log body ``{"logs": ["...", ...]}``, each cut to
    ``max_length`` characters (with a trailing "…" when cut)."""
    data = _json_object(body)
    logs = data.get("logs")
    if not isinstance(logs, list) or not all(isinstance(m, str) for m in logs):
        raise RequestError("logs must be a list of strings")
    return [m if len(m) <= max_length else m[: max_length - 1] + "…" for m in logs]


# -- the card page secret -----------------------------------------------------------------------


def page_secret(key: bytes, serial: str) -> str:
    """The per-card secret in a card page URL: HMAC-SHA256 of the serial under the app's key,
    128 bits, base64url (22 characters)."""
    mac = hmac.new(key, b"card-page\x00" + serial.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def page_secret_valid(key: bytes, serial: str, secret: str) -> bool:
    """Whether ``secret`` is the card page secret of ``serial`` (constant time)."""
    if not _PAGE_SECRET.fullmatch(secret):
        return False
    return hmac.compare_digest(page_secret(key, serial).encode(), secret.encode())
