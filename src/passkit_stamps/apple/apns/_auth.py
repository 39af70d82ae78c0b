"""APNs authentication: the Pass Type ID certificate as TLS client certificate, or an ES256
provider token (JWT) from a ``.p8`` key."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ...errors import APNsInputError, APNsProviderTokenError
from ..credentials import SigningCredentials, Source

__all__ = ["TokenAuth", "client_ssl_context"]

_MIN_REFRESH = 20 * 60.0  # Apple: not more often than every 20 minutes ...
_MAX_REFRESH = 60 * 60.0  # ... and at least every 60 (older tokens are refused)
_ID = re.compile(r"^[A-Z0-9]{10}$")


class TokenAuth:
    """Provider-token authentication: an ES256 JWT signed with the ``.p8`` key of ``key_id``,
    issued by ``team_id``. One token is reused for ``refresh_after`` seconds (20 to 60 minutes,
    40 by default) and never minted more often, except once when APNs calls it expired.

    ``clock`` (seconds since the epoch) is injectable for tests.
    """

    def __init__(
        self,
        key: Source,
        *,
        key_id: str,
        team_id: str,
        refresh_after: float = 40 * 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(key_id, str) or not _ID.match(key_id):
            raise APNsInputError(f"key_id {key_id!r} must be Apple's 10-character key id")
        if not isinstance(team_id, str) or not _ID.match(team_id):
            raise APNsInputError(f"team_id {team_id!r} must be Apple's 10-character team id")
        if not _MIN_REFRESH <= refresh_after < _MAX_REFRESH:
            raise APNsInputError(
                f"refresh_after {refresh_after!r} must be from 1200 s (20 minutes) to below "
                "3600 s (60 minutes): Apple refuses older tokens and newer ones minted more often"
            )
        self.key_id = key_id
        self.team_id = team_id
        self.refresh_after = refresh_after
        self._clock = clock
        self._key = _load_p8(key)
        self._header: bytes | None = None
        self._issued_at = 0.0
        self.minted = 0  # how many tokens were signed (tests and logs)

    def header(self) -> bytes:
        """The ``authorization`` value (``bearer <jwt>``), minted only when due."""
        now = self._clock()
        if self._header is None or now - self._issued_at >= self.refresh_after:
            return self._mint(now)
        return self._header

    def renew_expired(self, used: bytes | None) -> bool:
        """APNs answered ExpiredProviderToken to ``used``: mint a new token unless that already
        happened (another push got the same answer). False when ``used`` was itself minted after
        such an answer: the clock is wrong and renewing again will not help."""
        if used is not None and used != self._header:
            return True  # a newer token exists already: retry with it
        if self._renewed_after_expiry:
            return False
        self._mint(self._clock())
        self._renewed_after_expiry = True
        return True

    _renewed_after_expiry = False

    def _mint(self, now: float) -> bytes:
        token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._header = b"bearer " + token.encode("ascii")
        self._issued_at = now
        self._renewed_after_expiry = False
        self.minted += 1
        return self._header


def _load_p8(key: Source) -> ec.EllipticCurvePrivateKey:
    if isinstance(key, bytes | bytearray):
        data, label = bytes(key), "<bytes>"
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        data, label = key.encode("ascii", "replace"), "<text>"
    else:
        label = str(key)
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise APNsProviderTokenError(
                f"APNs key {label} cannot be read ({exc.strerror or exc}): give the .p8 file "
                "downloaded from the developer portal (Keys)"
            ) from None
    try:
        loaded = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        raise APNsProviderTokenError(
            f"APNs key {label} is not a readable .p8 key (an unencrypted PEM EC private key)"
        ) from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise APNsProviderTokenError(f"APNs key {label} is not a P-256 EC key: ES256 needs one")
    return loaded


def client_ssl_context(
    credentials: SigningCredentials | None,
    *,
    ca: Source | None = None,
) -> ssl.SSLContext:
    """A TLS context for APNs: HTTP/2 by ALPN, TLS 1.2+, the system's trust store or ``ca``
    (a PEM file or bytes), and the Pass Type ID certificate as client certificate.

    ``ssl`` loads client keys only from files: the key is written to a 0600 temporary file that
    is removed right after loading, so it never stays on disk."""
    if ca is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    elif isinstance(ca, bytes | bytearray) or (isinstance(ca, str) and "-----BEGIN" in ca):
        text = ca.decode("ascii", "replace") if isinstance(ca, bytes | bytearray) else ca
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=text)
        except ssl.SSLError as exc:
            raise APNsInputError(f"ca: not a PEM certificate ({exc})") from None
    else:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise APNsInputError(f"ca {ca}: not a readable PEM certificate file ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if credentials is not None:
        _load_client_certificate(context, credentials)
    return context


def _load_client_certificate(context: ssl.SSLContext, credentials: SigningCredentials) -> None:
    pem = credentials.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + b"".join(
        c.public_bytes(serialization.Encoding.PEM)
        for c in (credentials.certificate, credentials.wwdr)
    )
    fd, name = tempfile.mkstemp(prefix="apns-", suffix=".pem")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
