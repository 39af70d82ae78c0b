""" "Save to Google Wallet" links: an RS256 JWT signed with the service account's key.

A link must stay at most 1,800 characters (browsers and mail clients truncate longer ones). The
full object is put in the JWT when it fits; otherwise the link is *skinny* (the object's id and
class id only) and the object must be inserted through the REST API before the link is used —
:attr:`SaveLink.requires_insert` says so. The length is computed before signing, so every link
costs exactly one RSA signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt

from ..errors import GoogleConfigError
from .auth import ServiceAccount
from .builders import skinny_object

SAVE_URL = "https://pay.google.com/gp/v/save/"
MAX_LINK_LENGTH = 1800
AUDIENCE = "google"
TYP = "savetowallet"

_JWS = jwt.PyJWS()


@dataclass(frozen=True)
class SaveLink:
    """A Save to Google Wallet link.

    ``skinny`` is true when the JWT carries only ids: the object (and its class) must exist at
    Google before the holder opens the link (insert it first; see ``WalletClient.upsert_object``).
    """

    url: str
    skinny: bool
    object_id: str
    class_id: str

    @property
    def requires_insert(self) -> bool:
        """Whether the object must be inserted through the API before the link works."""
        return self.skinny

    @property
    def jwt(self) -> str:
        """The signed JWT (the last path segment of the link)."""
        return self.url.removeprefix(SAVE_URL)


def _b64_len(n: int) -> int:
    """Length of unpadded base64url for ``n`` bytes."""
    return (4 * n + 2) // 3


def check_origin(origin: str) -> str:
    """Return ``origin`` if it is a web origin (``https://host[:port]``), else raise."""
    parts = urlsplit(origin) if isinstance(origin, str) else None
    if (
        parts is None
        or parts.scheme not in ("https", "http")
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in origin)
    ):
        raise GoogleConfigError(
            f"invalid origin {origin!r}: use a web origin such as https://shop.example"
        )
    return origin.rstrip("/")


class SaveLinkSigner:
    """Signs Save links for one service account (the reusable, fast form of :func:`save_link`)."""

    def __init__(
        self,
        account: ServiceAccount,
        *,
        origins: Sequence[str] = (),
        max_length: int = MAX_LINK_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.origins = [check_origin(o) for o in origins]
        self.max_length = max_length
        self._clock = clock
        self._headers = {"kid": account.private_key_id}
        header_json = json.dumps(
            {"typ": "JWT", "alg": "RS256", **self._headers}, separators=(",", ":")
        )
        # Everything in the link but the payload: prefix, header, two dots, signature.
        self._fixed_length = (
            len(SAVE_URL)
            + _b64_len(len(header_json.encode()))
            + 2
            + _b64_len(account.private_key.key_size // 8)
        )

    def link(
        self,
        loyalty_object: Mapping[str, Any],
        *,
        loyalty_class: Mapping[str, Any] | None = None,
    ) -> SaveLink:
        """A link that saves ``loyalty_object`` (and creates ``loyalty_class`` if given and the
        link stays short enough). Falls back to a skinny link when the full one is too long."""
        if not loyalty_object.get("id") or not loyalty_object.get("classId"):
            raise GoogleConfigError("a Save link needs an object with 'id' and 'classId'")
        payload: dict[str, Any] = {"loyaltyObjects": [loyalty_object]}
        if loyalty_class is not None:
            payload["loyaltyClasses"] = [loyalty_class]
        full = self._claims(payload)
        if self._fixed_length + _b64_len(len(full)) <= self.max_length:
            return self._sign(full, loyalty_object, skinny=False)
        skinny = self._claims({"loyaltyObjects": [skinny_object(loyalty_object)]})
        if self._fixed_length + _b64_len(len(skinny)) > self.max_length:
            raise GoogleConfigError(
                f"even a skinny Save link would exceed {self.max_length} characters: "
                "shorten the ids or the origins"
            )
        return self._sign(skinny, loyalty_object, skinny=True)

    def _claims(self, payload: Mapping[str, Any]) -> bytes:
        claims = {
            "iss": self.account.email,
            "aud": AUDIENCE,
            "typ": TYP,
            "iat": int(self._clock()),
            "origins": self.origins,
            "payload": payload,
        }
        # Compact separators and raw UTF-8: every byte saved keeps more links un-skinny.
        return json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()

    def _sign(self, claims: bytes, obj: Mapping[str, Any], *, skinny: bool) -> SaveLink:
        token = _JWS.encode(
            claims, self.account.private_key, algorithm="RS256", headers=self._headers
        )
        return SaveLink(
            url=SAVE_URL + token,
            skinny=skinny,
            object_id=str(obj["id"]),
            class_id=str(obj["classId"]),
        )


def save_link(
    account: ServiceAccount,
    loyalty_object: Mapping[str, Any],
    *,
    loyalty_class: Mapping[str, Any] | None = None,
    origins: Sequence[str] = (),
    max_length: int = MAX_LINK_LENGTH,
    clock: Callable[[], float] = time.time,
) -> SaveLink:
    """A Save to Google Wallet link for ``loyalty_object`` (see :class:`SaveLinkSigner`)."""
    signer = SaveLinkSigner(account, origins=origins, max_length=max_length, clock=clock)
    return signer.link(loyalty_object, loyalty_class=loyalty_class)
