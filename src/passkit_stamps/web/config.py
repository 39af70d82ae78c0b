"""The web app's configuration: where it is reachable, its keys, and optional Google settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import WebConfigError
from .requests import page_secret

if TYPE_CHECKING:
    pass

#: Paths of the app's own pages, relative to where it is mounted.
IMAGES_PATH = "/images"
CARDS_PATH = "/cards"
GOOGLE_CALLBACK_PATH = "/google/callback"


@dataclass(frozen=True)
class GoogleWebConfig:
    """Google Wallet for the web app.

    ``service_account`` (a :class:`passkit_stamps.google.auth.ServiceAccount`) signs the "Save to
    Google Wallet" links on card pages; ``callback_keys`` / ``callback_sender_id`` /
    ``callback_keys_url`` configure the save/delete callback check (see
    :mod:`passkit_stamps.google.callbacks`). Google fetches stamp images from the app's public
    URL, so that URL must be public HTTPS when Google is used.
    """

    issuer_id: str
    service_account: Any = None
    #: Web origins allowed to show the Save button (the JWT's ``origins``).
    origins: tuple[str, ...] = ()
    #: Accept save/delete callbacks at ``/google/callback``.
    callbacks: bool = True
    #: Extra keyword arguments for :func:`passkit_stamps.google.callbacks.verify_callback`
    #: (e.g. a fixed key set in tests, or another sender id).
    callback_options: dict[str, Any] = field(default_factory=dict)
    country_code: str | None = None
    #: The REST client that inserts an object before a skinny Save link is followed (a
    #: :class:`passkit_stamps.google.client.WalletClient`); made from ``service_account`` when
    #: None, against ``api_base_url`` when given.
    wallet_client: Any = None
    api_base_url: str | None = None


@dataclass(frozen=True)
class WebConfig:
    """Where the app is reachable and how it signs its links.

    ``public_url`` is the public base URL of the server (``https://stamps.example.com``) and
    ``mount_path`` the path the app is mounted under (``/wallet``; empty at the root). Passes get
    ``webServiceURL`` = public URL + mount path (devices append ``/v1/...`` themselves).
    ``secret_key`` keys the per-card page secrets (keep it stable: changing it changes every
    card page URL).
    """

    public_url: str
    secret_key: bytes
    mount_path: str = ""
    #: Plain-HTTP public URLs are refused unless this is set (devices need HTTPS in production).
    allow_http: bool = False
    google: GoogleWebConfig | None = None
    #: How many device log messages are kept in memory.
    device_log_size: int = 500

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
            raise WebConfigError(
                f"invalid public URL {self.public_url!r}: use e.g. https://stamps.example.com"
            )
        if parts.scheme == "http" and not self.allow_http:
            raise WebConfigError(
                f"public URL {self.public_url!r} is plain HTTP: devices need HTTPS "
                "(allow_http / --allow-http is for local testing only)"
            )
        if self.mount_path and (
            not self.mount_path.startswith("/") or self.mount_path.endswith("/")
        ):
            raise WebConfigError(
                f"invalid mount path {self.mount_path!r}: start with '/', no trailing '/'"
            )
        if self.base_url.rstrip("/").endswith("/v1"):
            raise WebConfigError(
                f"the web service URL {self.base_url!r} ends in /v1: leave it out, devices "
                "append /v1/... themselves"
            )
        if not isinstance(self.secret_key, bytes) or len(self.secret_key) < 16:
            raise WebConfigError("secret_key must be at least 16 random bytes")
        if self.device_log_size < 1:
            raise WebConfigError("device_log_size must be at least 1")

    @property
    def base_url(self) -> str:
        """Public URL + mount path, without a trailing slash: the passes' ``webServiceURL``."""
        return self.public_url.rstrip("/") + self.mount_path

    @property
    def web_service_url(self) -> str:
        return self.base_url

    @property
    def image_base_url(self) -> str:
        """Where the content-addressed images are served (Google's ``image_base_url``)."""
        return self.base_url + IMAGES_PATH

    @property
    def google_callback_url(self) -> str:
        return self.base_url + GOOGLE_CALLBACK_PATH

    def card_page_path(self, serial: str) -> str:
        """The card page's path relative to the mount point: ``/cards/<serial>/<secret>``."""
        return f"{CARDS_PATH}/{serial}/{page_secret(self.secret_key, serial)}"

    def card_page_url(self, serial: str) -> str:
        """The card page's public URL (the merchant's "share URL" for the card)."""
        return self.base_url + self.card_page_path(serial)


def card_page_url(config: WebConfig, serial: str) -> str:
    """The public URL of a card's page (see :meth:`WebConfig.card_page_url`)."""
    return config.card_page_url(serial)
