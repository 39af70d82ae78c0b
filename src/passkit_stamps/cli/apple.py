"""CLI commands: build one signed Apple Wallet pass, or sample passes for every template."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._preview import MAX_NAME, preview_card, sample_card, samples
from ._signing import load_signing_credentials, signing_options

if TYPE_CHECKING:  # imported inside the commands: Pillow and cryptography are large imports
    from ..model import CardTemplate

_MIN_TOKEN = 16


def _load_template(folder: Path) -> CardTemplate:
    from ..model import CardTemplate

    if not folder.is_dir():
        raise click.ClickException(f"template folder {folder} does not exist")
    return CardTemplate.load(folder)


@click.command("build")
@click.argument("template_dir", type=click.Path(path_type=Path))
@click.option("--serial", required=True, help="Card number, also the pass serial number.")
@click.option("--stamps", required=True, type=int, help="Stamps on the card (0 to required).")
@click.option(
    "--holder-name", help=f"The holder's name, shown on the pass (1 to {MAX_NAME} characters)."
)
@click.option("--web-service-url", help="Base URL of the pass web service (without /v1).")
@click.option("--auth-token", help="Authentication token (>= 16 characters); random if absent.")
@click.option("--allow-http", is_flag=True, help="Allow an http:// web service URL (testing).")
@signing_options()
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(path_type=Path), help="The .pkpass."
)
def build_command(
    template_dir: Path,
    serial: str,
    stamps: int,
    holder_name: str | None,
    web_service_url: str | None,
    auth_token: str | None,
    allow_http: bool,
    p12: Path | None,
    p12_password: str | None,
    cert: Path | None,
    key: Path | None,
    key_password: str | None,
    wwdr: Path | None,
    out: Path,
) -> None:
    """Build one signed .pkpass of TEMPLATE_DIR's card with SERIAL and N stamps."""
    from ..apple.bundle import PassBuilder
    from ..model import is_valid_serial

    if auth_token is not None and web_service_url is None:
        raise click.UsageError("--auth-token is used only with --web-service-url")
    if allow_http and web_service_url is None:
        raise click.UsageError("--allow-http is used only with --web-service-url")
    if not is_valid_serial(serial):
        raise click.ClickException(
            f"--serial {serial!r} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )
    if auth_token is not None and len(auth_token) < _MIN_TOKEN:
        raise click.ClickException(
            f"--auth-token must be at least {_MIN_TOKEN} characters (Apple's minimum)"
        )
    template = _load_template(template_dir)
    card = preview_card(
        template, serial=serial, stamps=stamps, holder_name=holder_name, now=datetime.now(UTC)
    )
    if auth_token is not None:
        card = card.model_copy(update={"authentication_token": auth_token})
    credentials = load_signing_credentials(p12, p12_password, cert, key, key_password, wwdr)
    builder = PassBuilder(credentials, web_service_url=web_service_url, allow_http=allow_http)
    data = builder.build(template, card)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    for warning in credentials.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"wrote {out} ({len(data):,} bytes, {template.key}, {stamps}/{template.stamps_required})"
    )


# -- samples ---------------------------------------------------------------------------------------


@click.command("samples")
@click.option(
    "--templates",
    "templates_dir",
    default="templates",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder of templates (one sub-folder with template.toml each).",
)
@click.option(
    "--out",
    "out_dir",
    default="out",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to write <template>/<serial>.pkpass.",
)
@click.option(
    "--certs",
    "certs_dir",
    default="certs.example/dev",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Development PKI folder (made when missing, reused when valid).",
)
def samples_command(templates_dir: Path, out_dir: Path, certs_dir: Path) -> None:
    """Sign sample passes of every template with a development certificate.

    The passes open in tools that check the chain against root-ca.pem in the --certs folder
    (e.g. `passkit-stamps verify --ca certs.example/dev/root-ca.pem PASS`), not on an iPhone:
    Wallet trusts only Apple-issued certificates.
    """
    from ..apple.bundle import PassBuilder, build_pkpasses
    from ..model import TEMPLATE_FILE, CardTemplate
    from ..runtime.devpki import make_dev_pki

    if not templates_dir.is_dir():
        raise click.ClickException(f"templates folder {templates_dir} does not exist")
    folders = sorted(p.parent for p in templates_dir.glob(f"*/{TEMPLATE_FILE}"))
    if not folders:
        raise click.ClickException(f"no templates ({TEMPLATE_FILE}) found in {templates_dir}")
    pki = make_dev_pki(certs_dir)
    builder = PassBuilder(pki.credentials())
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[tuple[str, str, str, int]] = []
    for folder in folders:
        template = CardTemplate.load(folder)
        target = out_dir / template.id
        target.mkdir(parents=True, exist_ok=True)
        passes = []
        for sample in samples(template):
            card = sample_card(template, sample, now)
            data = builder.build(template, card)
            path = target / f"{card.serial}.pkpass"
            path.write_bytes(data)
            passes.append(data)
            state = " voided" if sample.voided else ""
            progress = f"{card.stamps}/{template.stamps_required}{state}"
            rows.append((str(path), template.key, progress, len(data)))
        bundle = build_pkpasses(passes)
        path = target / f"{template.id}.pkpasses"
        path.write_bytes(bundle)
        rows.append((str(path), template.key, f"{len(passes)} passes", len(bundle)))
    header = ("file", "template", "stamps", "size")
    widths = [max(len(header[i]), *(len(str(r[i])) for r in rows)) for i in range(3)]
    size_width = max(len("size"), *(len(f"{r[3]:,}") for r in rows))
    click.echo(
        f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  "
        f"{header[3]:>{size_width}}"
    )
    for file, key, progress, size in rows:
        click.echo(
            f"{file:<{widths[0]}}  {key:<{widths[1]}}  {progress:<{widths[2]}}  "
            f"{size:>{size_width},}"
        )
    click.echo(f"signed with the development certificate in {certs_dir} (root: {pki.root_cert})")


COMMANDS: list[click.Command] = [build_command, samples_command]
