"""CLI commands: verify a .pkpass the way Wallet would."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported in the command: cryptography and asn1crypto are large imports
    from ..apple.verify import VerifiedPass


def _summary(name: str, verified: VerifiedPass) -> list[str]:
    signed_at = (
        verified.signing_time.strftime("%Y-%m-%d %H:%M:%S UTC") if verified.signing_time else "?"
    )
    chain = (
        "checked against the given root CA"
        if verified.chain_checked
        else ("not checked (give --ca ROOT.pem)")
    )
    lines = [
        f"VALID {name}",
        f"  pass type:  {verified.pass_type_identifier} (team {verified.team_identifier})",
        f"  style:      {verified.style}",
        f"  serial:     {verified.serial_number}",
        f"  signed by:  {verified.signer_subject}",
        f"  signed at:  {signed_at} ({verified.digest_algorithm.upper()})",
        f"  chain:      {chain}",
        f"  files:      {len(verified.files)}: {', '.join(verified.files)}",
    ]
    lines.extend(f"  warning: {warning}" for warning in verified.warnings)
    return lines


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--ca",
    "ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Root CA certificate (PEM or DER) to check the chain against, e.g. AppleRootCA.pem.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Check certificate validity at this UTC time instead of now.",
)
def verify_command(file: Path, ca: Path | None, at: datetime | None) -> None:
    """Check a .pkpass (or each pass in a .pkpasses bundle): archive, manifest hashes, signature,
    pass.json, icon.

    Prints a summary when the pass is valid; otherwise its reasons (the first 50), and exits with
    status 1.
    """
    from ..apple.verify import ArchiveLimits, read_archive, verify_pkpass
    from ..errors import InvalidPassError, UnsafeArchiveError

    limits = ArchiveLimits()
    # Read one byte past the limit so an oversized file is refused without loading all of it.
    with file.open("rb") as handle:
        data = handle.read(limits.max_archive_bytes + 1)
    now = at.replace(tzinfo=UTC) if at else None
    root = ca.read_bytes() if ca else None
    passes = [(str(file), data)]
    try:
        files, _ = read_archive(data, limits)
    except InvalidPassError:
        files = {}  # verify_pkpass reports it
    if files and all(name.endswith(".pkpass") for name in files):
        # A .pkpasses bundle: each entry is a pass of its own.
        passes = [(f"{file}:{name}", files[name]) for name in files]
    failed = False
    for name, content in passes:
        try:
            verified = verify_pkpass(content, ca=root, now=now, limits=limits)
        except InvalidPassError as exc:
            failed = True
            kind = "UNSAFE" if isinstance(exc, UnsafeArchiveError) else "INVALID"
            cap = limits.max_reasons
            reasons = exc.reasons
            if len(reasons) > cap + 1:  # verify_pkpass caps them (cap + "and N more"); so do we
                reasons = (*reasons[:cap], f"and {len(reasons) - cap:,} more reason(s)")
            count = f"{len(reasons)} reason(s)" if len(reasons) <= cap else f"over {cap} reasons"
            click.echo(f"{kind} {name} ({count}):")
            for reason in reasons:
                click.echo(f"  - {reason}")
            continue
        click.echo("\n".join(_summary(name, verified)))
    if failed:
        raise click.exceptions.Exit(1)


COMMANDS: list[click.Command] = [verify_command]
