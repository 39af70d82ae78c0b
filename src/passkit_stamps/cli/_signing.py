"""The signing-credential options and their one loader, shared by ``build`` and ``serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # imported when credentials are loaded: cryptography is a large import
    from ..apple.credentials import SigningCredentials

F = TypeVar("F", bound=Callable[..., Any])


def signing_options(envvar: Callable[[str], str] | None = None) -> Callable[[F], F]:
    """``--p12 [--p12-password] | --cert --key [--key-password]`` and ``--wwdr``.

    ``envvar`` maps an option name to the environment variable it may also come from.
    """

    def env(name: str) -> str | None:
        return envvar(name) if envvar else None

    path = click.Path(dir_okay=False, path_type=Path)
    options = [
        click.option("--p12", envvar=env("p12"), type=path, help="Certificate and key (.p12)."),
        click.option("--p12-password", envvar=env("p12_password"), help="Password of the .p12."),
        click.option("--cert", envvar=env("cert"), type=path, help="Pass Type ID certificate."),
        click.option("--key", envvar=env("key"), type=path, help="Its private key (PEM or DER)."),
        click.option("--key-password", envvar=env("key_password"), help="Password of --key."),
        click.option("--wwdr", envvar=env("wwdr"), type=path, help="Apple WWDR intermediate (G4)."),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def load_signing_credentials(
    p12: Path | None,
    p12_password: str | None,
    cert: Path | None,
    key: Path | None,
    key_password: str | None,
    wwdr: Path | None,
) -> SigningCredentials:
    """Credentials from the options of :func:`signing_options`; a wrong combination is a usage
    error (exit 2) naming the options, a missing password names the option that gives it."""
    from ..apple.credentials import SigningCredentials
    from ..errors import WrongPasswordError

    if wwdr is None:
        raise click.UsageError("--wwdr is required: Apple's WWDR intermediate certificate (FILE)")
    if p12 is not None and (cert is not None or key is not None):
        raise click.UsageError("give either --p12 or --cert/--key, not both")
    if p12 is None and (cert is None or key is None):
        raise click.UsageError("signing needs --p12 FILE, or both --cert FILE and --key FILE")
    if p12 is not None and key_password is not None:
        raise click.UsageError("--key-password goes with --key; use --p12-password")
    if p12 is None and p12_password is not None:
        raise click.UsageError("--p12-password goes with --p12; use --key-password")
    try:
        return SigningCredentials.load(
            p12=p12,
            p12_password=p12_password,
            certificate=cert,
            key=key,
            key_password=key_password,
            wwdr=wwdr,
        )
    except WrongPasswordError:
        # The library's message names its Python argument (password=...); here the fix is an
        # option.
        if p12 is not None and p12_password is None:
            raise WrongPasswordError(
                f".p12 file {p12} is password-protected: give its password with --p12-password"
            ) from None
        if key is not None and key_password is None:
            raise WrongPasswordError(
                f"private key {key} is encrypted: give its password with --key-password"
            ) from None
        raise
