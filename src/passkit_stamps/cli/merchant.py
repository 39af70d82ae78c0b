"""CLI commands for what a merchant does: ``pass`` (a card's signed .pkpass), ``update-holder``,
``templates migrate``, ``enrol-url`` (the enrolment page's URL and QR poster) and ``import``
(customers from another stamp platform). ``card`` (cards.py) prints the card page URL with the
options of :mod:`._web`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from ._signing import load_signing_credentials, signing_options
from ._web import require_web_config, web_options
from .cards import _db_option, _echo_change, _echo_json, _run, templates_group

if TYPE_CHECKING:
    from ..service import StampService
    from ..service.imports import ImportReport, ImportRow

ENV = "PASSKIT_STAMPS_"
#: Rows per import transaction: big enough to amortise a commit, small enough to keep memory flat.
IMPORT_BATCH = 500


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (a pass holds the card's token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file existed with wider rights
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
    finally:
        if fd != -1:
            os.close(fd)


@click.command("pass")
@click.argument("serial")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the .pkpass (created 0600).",
)
@signing_options(lambda name: ENV + name.upper())
@web_options
@click.option("--db", envvar=ENV + "DB", default="sqlite:///passkit-stamps.db", show_default=True)
def pass_command(serial: str, output: Path, db: str, **options: Any) -> None:
    """Write the card's current signed pass (.pkpass): what a device would download now."""
    from ..apple.bundle import PassBuilder

    signing = {
        n: options.pop(n) for n in ("p12", "p12_password", "cert", "key", "key_password", "wwdr")
    }
    credentials = load_signing_credentials(**signing)
    web_service_url = None
    if options.get("public_url"):
        config = require_web_config(**options)
        web_service_url = config.web_service_url
    details = _run(db, lambda s: s.get_card(serial), create=False)
    builder = PassBuilder(
        credentials,
        web_service_url=web_service_url,
        allow_http=bool(options.get("allow_http")),
    )
    data = builder.build(details.template, details.card)
    _write_private(output, data)
    click.echo(f"wrote {output} ({len(data)} bytes)")


def _birthday(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None or value == "":
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD, e.g. 1990-12-31") from None


@click.command("update-holder")
@click.argument("serial")
@click.option("--name", default=None, help="New name ('' erases).")
@click.option("--email", default=None, help="New e-mail address ('' erases).")
@click.option("--phone", default=None, help="New phone number ('' erases).")
@click.option("--birthday", default=None, callback=_birthday, help="YYYY-MM-DD ('' erases).")
@_db_option
def update_holder(serial: str, db: str, as_json: bool, **given: Any) -> None:
    """Edit the customer's details on a card; options left out keep their value."""
    from ..model import Holder

    changes = {k: (v or None) for k, v in given.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --name, --email, --phone or --birthday")

    async def action(service: StampService) -> Any:
        current = (await service.get_card(serial)).card.holder
        holder = Holder(**(current.model_dump() | changes))
        return await service.update_holder(serial, holder, actor="cli")

    _echo_change(_run(db, action, create=False), as_json)


@templates_group.command("migrate")
@click.argument("template_id")
@click.option("--to-version", type=int, required=True, help="The version to move cards to.")
@click.option("--from-version", type=int, default=None, help="Only cards of this version.")
@_db_option
def migrate(
    template_id: str, to_version: int, from_version: int | None, db: str, as_json: bool
) -> None:
    """Move active cards of a template to another version, keeping their stamps."""
    moved = _run(
        db,
        lambda s: s.migrate_cards(template_id, to_version, from_version=from_version, actor="cli"),
        create=False,
    )
    if as_json:
        _echo_json({"template": template_id, "to_version": to_version, "moved": moved})
    else:
        click.echo(f"moved {moved} card(s) of {template_id} to v{to_version}")


@click.command("enrol-url")
@click.argument("template_id")
@click.option(
    "--qr",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a printable QR poster of the URL: FILE.png or FILE.svg.",
)
@web_options
@click.option("--db", envvar=ENV + "DB", default="sqlite:///passkit-stamps.db", show_default=True)
def enrol_url(template_id: str, qr: Path | None, db: str, **options: Any) -> None:
    """Print the public enrolment page URL of a published template (customers open it, or scan
    its QR code, to get a card)."""
    from ..web.enrol import enrolment_poster, enrolment_url

    config = require_web_config(**options)
    kind = None
    if qr is not None:
        kind = qr.suffix.lower().lstrip(".")
        if kind not in ("png", "svg"):
            raise click.UsageError("--qr FILE must end in .png or .svg")
    _run(db, lambda s: s.get_template(template_id), create=False)  # published?
    click.echo(enrolment_url(config, template_id))
    if qr is not None and kind is not None:
        qr.write_bytes(enrolment_poster(config, template_id, kind))
        click.echo(f"wrote {qr}", err=True)


@click.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--template", "template_id", required=True, help="The template to issue cards of.")
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="The file's encoding.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@_db_option
def import_command(
    csv_file: Path,
    template_id: str,
    dry_run: bool,
    encoding: str,
    progress: bool | None,
    db: str,
    as_json: bool,
) -> None:
    """Import customers from another stamp platform: a CSV file with a header row and columns
    name, email, phone, stamps (current stamps) and optionally serial (an existing card
    number). Bad rows are reported with their line number (and skipped); re-running the same
    file imports nothing twice. Stamps are journalled as an adjustment."""
    import asyncio

    from ..errors import ImportRowError
    from ..service import StampService
    from ..service.imports import ImportReport, read_import_rows
    from ..store.store import Store

    size = csv_file.stat().st_size
    show = sys.stderr.isatty() if progress is None else progress

    async def main() -> ImportReport:
        store = await Store.open(db, create=False)
        try:
            service = StampService(store)
            template = await service.get_template(template_id)
            total = ImportReport()
            with (
                csv_file.open(encoding=encoding, newline="") as f,
                click.progressbar(
                    length=size,
                    label="importing" if not dry_run else "checking",
                    file=sys.stderr,
                    hidden=not show,
                ) as bar,
            ):
                batch: list[ImportRow] = []

                async def flush() -> None:
                    report = await service.import_customers(template_id, batch, dry_run=dry_run)
                    total.imported += report.imported
                    total.skipped += report.skipped
                    total.bad += report.bad
                    for error in report.errors:
                        click.echo(error, err=True)
                    batch.clear()

                for row in read_import_rows(_counted(f, bar), template):
                    if isinstance(row, ImportRowError):
                        total.bad += 1
                        click.echo(str(row), err=True)
                        continue
                    batch.append(row)
                    if len(batch) >= IMPORT_BATCH:
                        await flush()
                if batch:
                    await flush()
            return total
        finally:
            await store.close()

    report = asyncio.run(main())
    verb = "would import" if dry_run else "imported"
    if as_json:
        _echo_json(
            {
                "dry_run": dry_run,
                "imported": report.imported,
                "skipped": report.skipped,
                "bad": report.bad,
            }
        )
    else:
        click.echo(
            f"{verb} {report.imported}, already imported {report.skipped}, bad rows {report.bad}"
        )
    if report.bad:
        sys.exit(1)


def _counted(f: TextIO, bar: Any) -> Iterator[str]:
    """The file's lines, moving the progress bar by their size (in bytes, about)."""
    pending = 0
    for line in f:
        pending += len(line)
        if pending >= 65536:
            bar.update(pending)
            pending = 0
        yield line
    bar.update(pending)


COMMANDS: list[click.Command] = [pass_command, update_holder, enrol_url, import_command]
