"""Service-account credentials and OAuth access tokens for the Google Wallet API.

google-auth signs the JWT-bearer assertion and parses the token answer, but it has no httpx
transport. :class:`HttpxRequest` is that transport (a ``google.auth.transport.Request`` over a
synchronous ``httpx.Client``); :class:`TokenSource` runs the refresh in a worker thread so the
event loop never blocks, caches the token until shortly before it expires, and lets concurrent
callers share one refresh.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import service_account

from ..errors import GoogleAuthError, GoogleTransientError

SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
#: The project's own variable, read before Google's ``GOOGLE_APPLICATION_CREDENTIALS``. Either may
#: hold a path to the key file; the project's may also hold the JSON itself.
ENV_VAR = "PASSKIT_STAMPS_GOOGLE_CREDENTIALS"
GOOGLE_ENV_VAR = "GOOGLE_APPLICATION_CREDENTIALS"
#: A key file is small; refuse anything larger rather than read it.
MAX_KEY_FILE = 64 * 1024
_REQUIRED_KEYS = ("type", "client_email", "private_key", "private_key_id", "token_uri")

CredentialsSource = str | Path | Mapping[str, Any] | None


def load_service_account_info(source: CredentialsSource = None) -> dict[str, Any]:
    """The service-account key as a dict, from a path, a dict, or (``None``) the environment:
    ``PASSKIT_STAMPS_GOOGLE_CREDENTIALS`` (path or JSON), then ``GOOGLE_APPLICATION_CREDENTIALS``.
    Raises :class:`GoogleAuthError` naming the source and what is wrong."""
    where: str
    if source is None:
        value = os.environ.get(ENV_VAR) or os.environ.get(GOOGLE_ENV_VAR)
        if not value:
            raise GoogleAuthError(
                f"no Google service account: pass a key file or set {ENV_VAR} or {GOOGLE_ENV_VAR}"
            )
        if value.lstrip().startswith("{"):
            return _check_info(_parse(value, f"${ENV_VAR}"), f"${ENV_VAR}")
        source = value
    if isinstance(source, Mapping):
        return _check_info(dict(source), "service-account info")
    path = Path(source)
    where = str(path)
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise GoogleAuthError(f"{where}: too large for a service-account key file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoogleAuthError(f"{where}: service-account key file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoogleAuthError(f"{where}: unreadable service-account key file ({exc})") from None
    return _check_info(_parse(text, where), where)


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise GoogleAuthError(f"{where}: not JSON ({exc.args[0]})") from None
    if not isinstance(value, dict):
        raise GoogleAuthError(f"{where}: not a service-account key (expected a JSON object)")
    return value


def _check_info(info: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [k for k in _REQUIRED_KEYS if not isinstance(info.get(k), str) or not info.get(k)]
    if missing:
        raise GoogleAuthError(
            f"{where}: not a service-account key (missing {', '.join(missing)}); download a "
            "JSON key of the service account from the Google Cloud console"
        )
    if info["type"] != "service_account":
        raise GoogleAuthError(f"{where}: key type is {info['type']!r}, not 'service_account'")
    return info


@dataclass(frozen=True)
class ServiceAccount:
    """A service account's identity and RSA signing key (for Save links and tokens)."""

    email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    token_uri: str
    info: Mapping[str, Any] = field(repr=False)

    @classmethod
    def load(cls, source: CredentialsSource = None) -> ServiceAccount:
        """Load from a path, a dict or the environment (see :func:`load_service_account_info`)."""
        info = load_service_account_info(source)
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise GoogleAuthError(
                f"service account {info['client_email']}: unreadable private key ({exc})"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise GoogleAuthError(
                f"service account {info['client_email']}: the private key is not RSA"
            )
        return cls(
            email=info["client_email"],
            private_key_id=info["private_key_id"],
            private_key=key,
            token_uri=info["token_uri"],
            info=info,
        )


# -- the google-auth transport over httpx ------------------------------------------------------


class _HttpxResponse(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest(transport.Request):
    """google-auth's transport interface over a synchronous ``httpx.Client``."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _HttpxResponse:
        try:
            response = self._client.request(
                method,
                url,
                content=body,
                headers=dict(headers or {}),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return _HttpxResponse(response)


class TokenSource:
    """OAuth access tokens for a service account, cached and refreshed before expiry.

    ``token()`` is safe to call from many tasks at once: one refresh runs (in a worker thread),
    the others wait for it. ``invalidate(token)`` after a 401 forces the next call to refresh,
    once, however many requests saw that 401.
    """

    def __init__(
        self,
        credentials: CredentialsSource | ServiceAccount = None,
        *,
        scopes: tuple[str, ...] = (SCOPE,),
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        account = (
            credentials
            if isinstance(credentials, ServiceAccount)
            else ServiceAccount.load(credentials)
        )
        self.account = account
        try:
            credentials_from_info = service_account.Credentials.from_service_account_info
            self._credentials = credentials_from_info(  # type: ignore[no-untyped-call]
                dict(account.info), scopes=list(scopes)
            )
        except (ValueError, KeyError) as exc:
            raise GoogleAuthError(f"service account {account.email}: {exc}") from None
        self._margin = refresh_margin
        self._clock = clock
        self._timeout = timeout
        self._http: httpx.Client | None = None  # made on first refresh (creating one costs)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0  # how many times a token was fetched (for tests and metrics)

    async def token(self) -> str:
        """A valid access token (refreshed first when missing, invalidated or near expiry)."""
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():  # another task may have refreshed while we waited
                await asyncio.to_thread(self._refresh)
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """The API refused ``token`` (401): drop it unless a newer one has replaced it."""
        if token == self._token:
            self._token = None

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at - self._margin

    def _refresh(self) -> None:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout)
        try:
            self._credentials.refresh(HttpxRequest(self._http))
        except google_exceptions.RefreshError as exc:
            raise GoogleAuthError(
                f"the token endpoint refused service account {self.account.email}: {_first(exc)}"
            ) from None
        except google_exceptions.TransportError as exc:
            raise GoogleTransientError(f"token endpoint unreachable: {_first(exc)}") from None
        # google-auth dates the expiry by the wall clock (naive UTC); keep the lifetime it
        # granted but measure it on our clock, so an injected clock works in tests.
        expiry = self._credentials.expiry
        lifetime = (
            (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() if expiry else 3600.0
        )
        self._expires_at = self._clock() + lifetime
        self._token = self._credentials.token
        self.refreshes += 1

    async def aclose(self) -> None:
        """Close the token endpoint's connection pool."""
        if self._http is not None:
            self._http.close()


def _first(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__
