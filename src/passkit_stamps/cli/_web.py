"""The web app's address options (as ``serve`` has them, same environment variables): commands
that print or build links (``card``, ``enrol-url``, ``pass``) take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..web.config import WebConfig

F = TypeVar("F", bound=Callable[..., Any])
ENV = "PASSKIT_STAMPS_"


def web_options(f: F) -> F:
    options = [
        click.option(
            "--public-url",
            envvar=ENV + "PUBLIC_URL",
            help="Public base URL of `serve` (https://...) (env PASSKIT_STAMPS_PUBLIC_URL).",
        ),
        click.option(
            "--mount-path",
            envvar=ENV + "MOUNT_PATH",
            default="",
            help="Path the app is mounted under, e.g. /wallet (env PASSKIT_STAMPS_MOUNT_PATH).",
        ),
        click.option(
            "--secret-key",
            envvar=ENV + "SECRET_KEY",
            help="The card page key `serve` uses (hex or base64) (env PASSKIT_STAMPS_SECRET_KEY).",
        ),
        click.option(
            "--allow-http",
            envvar=ENV + "ALLOW_HTTP",
            is_flag=True,
            help="Allow an http:// public URL (local testing only).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def web_config(
    public_url: str | None, mount_path: str, secret_key: str | None, allow_http: bool
) -> WebConfig | None:
    """The app's configuration, or None when the public URL or the secret key is not given."""
    if not public_url or not secret_key:
        return None
    from ..web.config import WebConfig
    from .serve import _secret_key

    key = _secret_key(secret_key)
    assert key is not None
    return WebConfig(
        public_url=public_url, mount_path=mount_path, secret_key=key, allow_http=allow_http
    )


def require_web_config(
    public_url: str | None, mount_path: str, secret_key: str | None, allow_http: bool
) -> WebConfig:
    config = web_config(public_url, mount_path, secret_key, allow_http)
    if config is None:
        raise click.UsageError(
            "the page URL needs --public-url and --secret-key (or PASSKIT_STAMPS_PUBLIC_URL and "
            "PASSKIT_STAMPS_SECRET_KEY), as `serve` has them"
        )
    return config
