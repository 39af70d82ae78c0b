"""CLI commands: Google Wallet classes, objects and Save links (printed, nothing is sent)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ..google.auth import ServiceAccount
from ..google.builders import GoogleSettings, build_loyalty_class, build_loyalty_object
from ..google.savelink import SaveLinkSigner
from ..model import Card, CardState, CardTemplate, Holder


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--image-base-url",
        required=True,
        help="Public https:// URL under which the card images are served.",
    )(command)
    command = click.option(
        "--issuer-id", required=True, help="Issuer id from the Google Pay & Wallet Console."
    )(command)
    return click.argument(
        "template_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
    )(command)


def _card_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--language", help="Language of the card's texts (a template language)."
    )(command)
    command = click.option("--holder-name", help="The holder's name shown on the card.")(command)
    command = click.option(
        "--state",
        type=click.Choice([s.value for s in CardState]),
        default=CardState.ACTIVE.value,
        show_default=True,
    )(command)
    command = click.option("--stamps", type=int, default=0, show_default=True)(command)
    return click.option("--serial", required=True, help="The card number.")(command)


def _card(
    template: CardTemplate,
    serial: str,
    stamps: int,
    state: str,
    holder_name: str | None,
    language: str | None,
) -> Card:
    if not 0 <= stamps <= template.stamps_required:
        raise click.BadParameter(
            f"must be 0 to {template.stamps_required} for template {template.key}",
            param_hint="--stamps",
        )
    if language is not None and language not in template.texts:
        raise click.BadParameter(
            f"{language!r} is not a language of {template.key} ({', '.join(template.languages)})",
            param_hint="--language",
        )
    try:
        return Card(
            serial=serial,
            template_id=template.id,
            template_version=template.version,
            holder=Holder(name=holder_name),
            stamps=stamps,
            created_at=datetime.now(UTC),
            state=CardState(state),
            authentication_token=secrets.token_urlsafe(24),
            language=language,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise click.BadParameter(f"{where}: {first['msg']}") from None


@click.command("google-class")
@_common
@click.option("--callback-url", help="https:// URL for save/delete callbacks.")
def google_class(
    template_dir: Path, issuer_id: str, image_base_url: str, callback_url: str | None
) -> None:
    """Print the Google Wallet LoyaltyClass of a template as JSON."""
    template = CardTemplate.load(template_dir)
    settings = GoogleSettings(issuer_id, image_base_url, callback_url=callback_url)
    _print_json(build_loyalty_class(template, settings))


@click.command("google-object")
@_common
@_card_options
def google_object(
    template_dir: Path,
    issuer_id: str,
    image_base_url: str,
    serial: str,
    stamps: int,
    state: str,
    holder_name: str | None,
    language: str | None,
) -> None:
    """Print the Google Wallet LoyaltyObject of a card as JSON."""
    template = CardTemplate.load(template_dir)
    settings = GoogleSettings(issuer_id, image_base_url)
    card = _card(template, serial, stamps, state, holder_name, language)
    _print_json(build_loyalty_object(template, card, settings))


@click.command("google-link")
@_common
@_card_options
@click.option(
    "--service-account",
    "service_account",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The service account's JSON key file.",
)
@click.option("--origin", "origins", multiple=True, help="Web origin of the page with the button.")
@click.option("--with-class", is_flag=True, help="Also put the class in the link (if it fits).")
def google_link(
    template_dir: Path,
    issuer_id: str,
    image_base_url: str,
    serial: str,
    stamps: int,
    state: str,
    holder_name: str | None,
    language: str | None,
    service_account: Path,
    origins: tuple[str, ...],
    with_class: bool,
) -> None:
    """Print a Save to Google Wallet link for a card."""
    template = CardTemplate.load(template_dir)
    settings = GoogleSettings(issuer_id, image_base_url)
    card = _card(template, serial, stamps, state, holder_name, language)
    signer = SaveLinkSigner(ServiceAccount.load(service_account), origins=origins)
    link = signer.link(
        build_loyalty_object(template, card, settings),
        loyalty_class=build_loyalty_class(template, settings) if with_class else None,
    )
    click.echo(link.url)
    if link.requires_insert:
        click.echo(
            f"note: skinny link (the full one is over {signer.max_length} characters): insert "
            f"object {link.object_id} through the API before the link is used",
            err=True,
        )


COMMANDS: list[click.Command] = [google_class, google_object, google_link]
