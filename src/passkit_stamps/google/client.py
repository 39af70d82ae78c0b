"""An async client for the Google Wallet REST API (loyalty classes and objects).

HTTP/2 over httpx, OAuth tokens from :class:`~.auth.TokenSource`, one token bucket shared by every
call, and one retry loop that knows which failures are worth retrying:

* 429 and 5xx and connection errors: retried with exponential back-off and full jitter, honouring
  ``Retry-After``, bounded in attempts and in total waiting time;
* 401: the token is refreshed once and the call repeated once;
* 400, 403, 404, 409: never retried, raised as typed errors carrying Google's reason and message.

Higher-level operations build on these: :meth:`WalletClient.ensure_class` (insert, or patch when
it exists), :meth:`WalletClient.upsert_object` (patch, or insert, creating the class if needed),
:meth:`WalletClient.add_message` (notify, or fall back to a silent message over the quota).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from ..errors import (
    GoogleAlreadyExistsError,
    GoogleAuthError,
    GoogleClassNotFoundError,
    GoogleConfigError,
    GoogleNotFoundError,
    GoogleNotificationQuotaError,
    GooglePermissionError,
    GoogleRateLimitedError,
    GoogleTransientError,
    GoogleValidationError,
    GoogleWalletError,
)
from .auth import CredentialsSource, ServiceAccount, TokenSource
from .builders import CLEARABLE_CLASS_FIELDS, CLEARABLE_OBJECT_FIELDS, Resource, patch_body
from .ratelimit import TokenBucket

DEFAULT_BASE_URL = "https://walletobjects.googleapis.com/walletobjects/v1/"
OBJECT_STATES = frozenset({"ACTIVE", "COMPLETED", "EXPIRED", "INACTIVE"})
#: Google's error bodies are small; never parse more than this of one.
MAX_ERROR_BODY = 64 * 1024
# 403 reasons that mean "slow down" rather than "not allowed".
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


class TokenProvider(Protocol):
    """Where the client gets access tokens (a :class:`~.auth.TokenSource` in production)."""

    async def token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry 429, 5xx and connection errors."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 32.0
    #: Total time the client may spend waiting between attempts of one call.
    max_total: float = 60.0

    def backoff(self, attempt: int, jitter: float) -> float:
        """Full-jitter exponential back-off for the ``attempt``-th failure (1-based)."""
        return float(jitter * min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1)))


@dataclass(frozen=True)
class UpsertResult:
    """The object as Google stored it, and whether it was inserted (rather than patched)."""

    resource: Resource
    inserted: bool
    class_ensured: bool = False


@dataclass(frozen=True)
class MessageResult:
    """The object after ``addMessage``; ``notified`` is false when the message went out silently
    and ``downgraded`` when that was because the notification quota was used up."""

    resource: Resource
    notified: bool
    downgraded: bool


class WalletClient:
    """The Google Wallet REST API for loyalty classes and objects. Use as ``async with``."""

    def __init__(
        self,
        credentials: CredentialsSource | ServiceAccount | TokenProvider = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        rate: float = 20.0,
        burst: float | None = None,
        retry: RetryPolicy = RetryPolicy(),
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise GoogleConfigError(f"invalid base URL {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self._owns_tokens = not (
            hasattr(credentials, "token") and hasattr(credentials, "invalidate")
        )
        self._tokens: TokenProvider = (
            TokenSource(credentials)  # type: ignore[arg-type]
            if self._owns_tokens
            else credentials  # type: ignore[assignment]
        )
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(http2=True, timeout=timeout)
        self.retry = retry
        self.limiter = TokenBucket(rate, burst=burst, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    async def __aenter__(self) -> WalletClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client opened."""
        if self._owns_http:
            await self._http.aclose()
        if self._owns_tokens and isinstance(self._tokens, TokenSource):
            await self._tokens.aclose()

    # -- the request loop -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        what: str = "",
    ) -> Resource:
        """One API call with rate limiting, token refresh on 401 and retries; returns the JSON
        answer (``{}`` when empty) or raises a :class:`GoogleWalletError` subclass."""
        url = self.base_url + path
        what = what or f"{method} {path}"
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        waited = 0.0
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            await self.limiter.acquire()
            retry_after: float | None = None
            try:
                token = await self._tokens.token()
                response = await self._http.request(
                    method,
                    url,
                    content=content,
                    params=params,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:
                error: GoogleWalletError = GoogleTransientError(
                    f"Google Wallet {what}: connection failed ({type(exc).__name__}: {exc})"
                )
            except GoogleTransientError as exc:  # the token endpoint was unreachable
                error = exc
            else:
                if response.is_success:
                    return _json(response)
                if response.status_code == 401:
                    if not refreshed:
                        refreshed = True
                        self._tokens.invalidate(token)
                        attempt -= 1  # a refresh is not a retry
                        continue
                    raise _error(response, what, GoogleAuthError)
                error = _error(response, what)
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if not isinstance(error, GoogleRateLimitedError | GoogleTransientError):
                raise error
            if attempt >= self.retry.max_attempts:
                raise error
            delay = retry_after if retry_after is not None else 0.0
            delay = max(delay, self.retry.backoff(attempt, self._jitter()))
            if waited + delay > self.retry.max_total:
                raise error
            waited += delay
            await self._sleep(delay)

    # -- classes ----------------------------------------------------------------------------

    async def insert_class(self, resource: Mapping[str, Any]) -> Resource:
        """Create a class; :class:`GoogleAlreadyExistsError` when its id exists."""
        return await self.request("POST", "loyaltyClass", body=resource, what="insert class")

    async def get_class(self, class_id: str) -> Resource:
        """A class by id; :class:`GoogleNotFoundError` when there is none."""
        return await self.request("GET", f"loyaltyClass/{_q(class_id)}", what="get class")

    async def patch_class(self, class_id: str, fields: Mapping[str, Any]) -> Resource:
        """Change fields of a class. Sends ``reviewStatus: UNDER_REVIEW``, which Google requires
        for changes to an approved class."""
        body = {**fields, "reviewStatus": "UNDER_REVIEW"}
        return await self.request(
            "PATCH", f"loyaltyClass/{_q(class_id)}", body=body, what="patch class"
        )

    async def ensure_class(self, resource: Mapping[str, Any]) -> Resource:
        """Insert the class, or patch it to ``resource`` when it exists already."""
        try:
            return await self.insert_class(resource)
        except GoogleAlreadyExistsError:
            body = patch_body(resource, CLEARABLE_CLASS_FIELDS)
            return await self.patch_class(str(resource["id"]), body)

    # -- objects ----------------------------------------------------------------------------

    async def insert_object(self, resource: Mapping[str, Any]) -> Resource:
        """Create an object; :class:`GoogleClassNotFoundError` when its class does not exist,
        :class:`GoogleAlreadyExistsError` when the object does."""
        try:
            return await self.request("POST", "loyaltyObject", body=resource, what="insert object")
        except GoogleNotFoundError as exc:
            raise GoogleClassNotFoundError(
                f"Google Wallet insert object: class {resource.get('classId')} not found "
                f"({exc.google_message})",
                status=exc.status,
                reason=exc.reason,
                google_message=exc.google_message,
            ) from None

    async def get_object(self, object_id: str) -> Resource:
        """An object by id; :class:`GoogleNotFoundError` when there is none."""
        return await self.request("GET", f"loyaltyObject/{_q(object_id)}", what="get object")

    async def patch_object(
        self, object_id: str, fields: Mapping[str, Any], *, notify: bool = False
    ) -> Resource:
        """Change fields of an object (arrays are replaced whole; ``None`` deletes a field).
        ``notify`` asks Google to notify the holder about the change (counts to the quota)."""
        body = dict(fields)
        if notify:
            body["notifyPreference"] = "NOTIFY_ON_UPDATE"
        return await self.request(
            "PATCH", f"loyaltyObject/{_q(object_id)}", body=body, what="patch object"
        )

    async def upsert_object(
        self,
        resource: Mapping[str, Any],
        *,
        loyalty_class: Mapping[str, Any] | None = None,
        notify: bool = False,
    ) -> UpsertResult:
        """Bring the object at Google to ``resource``: patch it, insert it when it does not
        exist, and create its class first (from ``loyalty_class``) when that is missing too."""
        object_id = str(resource["id"])
        body = patch_body(resource, CLEARABLE_OBJECT_FIELDS)
        try:
            return UpsertResult(await self.patch_object(object_id, body, notify=notify), False)
        except GoogleNotFoundError:
            pass
        class_ensured = False
        try:
            try:
                stored = await self.insert_object(resource)
            except GoogleClassNotFoundError:
                if loyalty_class is None:
                    raise
                await self.ensure_class(loyalty_class)
                class_ensured = True
                stored = await self.insert_object(resource)
        except GoogleAlreadyExistsError:
            # Created meanwhile (another worker, or an insert retried after a timeout): patch.
            stored = await self.patch_object(object_id, body, notify=notify)
            return UpsertResult(stored, False, class_ensured)
        return UpsertResult(stored, True, class_ensured)

    async def set_object_state(self, object_id: str, state: str) -> Resource:
        """Set an object's state: ``INACTIVE`` voids it, ``EXPIRED`` expires it (Google has no
        delete)."""
        if state not in OBJECT_STATES:
            raise GoogleConfigError(
                f"invalid object state {state!r}: use one of {', '.join(sorted(OBJECT_STATES))}"
            )
        return await self.patch_object(object_id, {"state": state})

    async def void_object(self, object_id: str) -> Resource:
        """Void a card: the object becomes ``INACTIVE``."""
        return await self.set_object_state(object_id, "INACTIVE")

    async def expire_object(self, object_id: str) -> Resource:
        """Expire a card: the object becomes ``EXPIRED``."""
        return await self.set_object_state(object_id, "EXPIRED")

    async def list_objects(self, class_id: str, *, page_size: int = 100) -> AsyncIterator[Resource]:
        """Every object of a class, page by page (a page may come without ``resources``)."""
        if not 1 <= page_size <= 1000:
            raise GoogleConfigError(f"page size must be 1 to 1000, got {page_size}")
        params: dict[str, Any] = {"classId": class_id, "maxResults": page_size}
        seen_tokens: set[str] = set()
        while True:
            page = await self.request("GET", "loyaltyObject", params=params, what="list objects")
            for resource in page.get("resources") or ():
                yield resource
            token = (page.get("pagination") or {}).get("nextPageToken")
            if not token or token in seen_tokens:  # a repeated token would loop forever
                return
            seen_tokens.add(token)
            params = {**params, "token": token}

    async def add_message(
        self,
        object_id: str,
        header: str,
        body: str,
        *,
        notify: bool = True,
        message_id: str | None = None,
    ) -> MessageResult:
        """Add a message to an object. With ``notify`` it is sent as ``TEXT_AND_NOTIFY``; when
        the pass has used its notifications (3 per 24 h: 403 ``quotaExceeded``) it is sent again
        as a silent ``TEXT`` and the result says ``downgraded``."""
        if not header.strip() or not body.strip():
            raise GoogleConfigError("a message needs a header and a body")
        message: dict[str, Any] = {
            "id": message_id or secrets.token_hex(8),
            "header": header,
            "body": body,
            "messageType": "TEXT_AND_NOTIFY" if notify else "TEXT",
        }
        path = f"loyaltyObject/{_q(object_id)}/addMessage"
        try:
            answer = await self.request("POST", path, body={"message": message}, what="add message")
            return MessageResult(_resource(answer), notified=notify, downgraded=False)
        except GoogleNotificationQuotaError:
            if not notify:
                raise
        message["messageType"] = "TEXT"
        answer = await self.request("POST", path, body={"message": message}, what="add message")
        return MessageResult(_resource(answer), notified=False, downgraded=True)


# -- helpers ----------------------------------------------------------------------------------


def _q(resource_id: str) -> str:
    if not resource_id:
        raise GoogleConfigError("empty resource id")
    return quote(resource_id, safe="")


def _resource(answer: Mapping[str, Any]) -> Resource:
    value = answer.get("resource")
    return dict(value) if isinstance(value, Mapping) else dict(answer)


def _json(response: httpx.Response) -> Resource:
    if not response.content:
        return {}
    try:
        value = response.json()
    except ValueError as exc:
        raise GoogleTransientError(
            f"Google Wallet answered {response.status_code} with a body that is not JSON"
        ) from exc
    return value if isinstance(value, dict) else {"value": value}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "¹" or "٣", which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error(
    response: httpx.Response, what: str, cls: type[GoogleWalletError] | None = None
) -> GoogleWalletError:
    """The typed error for a failed answer, with Google's reason and message."""
    status = response.status_code
    reason: str | None = None
    message = ""
    try:
        payload = json.loads(response.content[:MAX_ERROR_BODY])
        err = payload.get("error", {}) if isinstance(payload, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            details = err.get("errors") or []
            if details and isinstance(details[0], dict):
                reason = details[0].get("reason")
            reason = reason or err.get("status")
    except (ValueError, UnicodeDecodeError):
        message = response.text[:200]
    if cls is None:
        if status == 400:
            cls = GoogleValidationError
        elif status == 403 and reason == "quotaExceeded":
            cls = GoogleNotificationQuotaError
        elif status == 403 and reason in _RATE_REASONS:
            cls = GoogleRateLimitedError
        elif status == 403:
            cls = GooglePermissionError
        elif status == 404:
            cls = GoogleNotFoundError
        elif status == 409:
            cls = GoogleAlreadyExistsError
        elif status == 429:
            cls = GoogleRateLimitedError
        elif status >= 500:
            cls = GoogleTransientError
        else:
            cls = GoogleWalletError
    text = f"Google Wallet {what}: HTTP {status}"
    if reason:
        text += f" {reason}"
    if message:
        text += f": {message}"
    return cls(text, status=status, reason=reason, google_message=message or None)
