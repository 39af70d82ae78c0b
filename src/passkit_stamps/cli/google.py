"""CLI commands: Google Wallet classes, objects and Save links (printed, nothing is sent)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._options import LazyChoice, card_states
from ._preview import MAX_NAME, preview_card

if TYPE_CHECKING:  # imported inside the commands (only what each one needs)
    from ..model import Card, CardTemplate


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
    command = click.option(
        "--holder-name", help=f"The holder's name shown on the card (1 to {MAX_NAME} characters)."
    )(command)
    command = click.option(
        "--state",
        type=LazyChoice(card_states),
        default="active",
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
    from .. import engine
    from ..model import CardState

    if language is not None and language not in template.texts:
        raise click.ClickException(
            f"--language {language!r} is not a language of {template.key} "
            f"({', '.join(template.languages)})"
        )
    now = datetime.now(UTC)
    card = preview_card(
        template,
        serial=serial,
        stamps=stamps,
        holder_name=holder_name,
        language=language,
        now=now,
    )
    if state == CardState.VOIDED:
        return engine.void_card(template, card, now=now).card
    # A preview of how a completed or expired card looks: no engine operation leads there today.
    return card.model_copy(update={"state": CardState(state)})


@click.command("google-class")
@_common
@click.option("--callback-url", help="https:// URL for save/delete callbacks.")
def google_class(
    template_dir: Path, issuer_id: str, image_base_url: str, callback_url: str | None
) -> None:
    """Print the Google Wallet LoyaltyClass of a template as JSON."""
    from ..google.builders import GoogleSettings, build_loyalty_class
    from ..model import CardTemplate

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
    from ..google.builders import GoogleSettings, build_loyalty_object
    from ..model import CardTemplate

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
    from ..google.auth import ServiceAccount
    from ..google.builders import GoogleSettings, build_loyalty_class, build_loyalty_object
    from ..google.savelink import SaveLinkSigner
    from ..model import CardTemplate

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
