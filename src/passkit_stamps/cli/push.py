"""CLI command: send a Wallet pass update push to devices, one result line per token: the tool
for "my iPhone does not update the pass"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._signing import load_signing_credentials, signing_options

if TYPE_CHECKING:
    from ..apple.apns import APNsClient

# Apple's production endpoint (as apple.apns.DEFAULT_HOST/PORT; the client package loads
# cryptography and h2, which --help should not pay for: tests/test_imports.py).
DEFAULT_HOST = "api.push.apple.com"
DEFAULT_PORT = 443


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, DEFAULT_PORT
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT", param_hint="--apns-host")
    return host, int(port)


@click.command("push")
@click.argument("tokens", nargs=-1, required=True)
@click.option(
    "--pass-type-id",
    required=True,
    help="The pass type identifier (the APNs topic), e.g. pass.com.example.stamps.",
)
@signing_options()
@click.option("--apns-key", type=click.Path(dir_okay=False, path_type=Path), help="APNs .p8 key.")
@click.option("--apns-key-id", help="Its 10-character key id.")
@click.option("--team-id", help="Your 10-character team id.")
@click.option(
    "--apns-host",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    help="APNs HOST:PORT (port 443 or 2197); another host for tests and proxies.",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA file to trust for the APNs server (default: the system's).",
)
def push_command(
    tokens: tuple[str, ...],
    pass_type_id: str,
    p12: Path | None,
    p12_password: str | None,
    cert: Path | None,
    key: Path | None,
    key_password: str | None,
    wwdr: Path | None,
    apns_key: Path | None,
    apns_key_id: str | None,
    team_id: str | None,
    apns_host: str,
    ca: Path | None,
) -> None:
    """Send one pass update push to each device push TOKEN and print each result on one line:
    TOKEN delivered|dead-token|retry-later|failed ... Exits 1 unless every push was delivered."""
    from ..apple.apns import APNsClient, TokenAuth, check_token
    from ..errors import APNsInputError

    host, port = _host_port(apns_host)
    signing = any(v is not None for v in (p12, cert, key, wwdr))
    token_given = any(v is not None for v in (apns_key, apns_key_id, team_id))
    if signing and token_given:
        raise click.UsageError("give signing options (certificate auth) or --apns-key, not both")
    token_auth = None
    credentials = None
    if token_given:
        if apns_key is None or apns_key_id is None or team_id is None:
            raise click.UsageError("token auth needs --apns-key FILE, --apns-key-id and --team-id")
        token_auth = TokenAuth(apns_key, key_id=apns_key_id, team_id=team_id)
    elif signing:
        credentials = load_signing_credentials(p12, p12_password, cert, key, key_password, wwdr)
        if credentials.pass_type_identifier != pass_type_id:
            raise click.UsageError(
                f"--pass-type-id {pass_type_id} is not the certificate's pass type "
                f"{credentials.pass_type_identifier}: a Pass Type ID certificate pushes only to "
                "its own pass type"
            )
    else:
        raise click.UsageError(
            "authentication: give the pass type's certificate (--p12 or --cert/--key, with "
            "--wwdr) or a token key (--apns-key, --apns-key-id, --team-id)"
        )
    client = APNsClient(
        credentials,
        token_auth=token_auth,
        topic=pass_type_id,
        host=host,
        port=port,
        ca=ca,
        retries=2,
        backoff_max=5.0,
    )
    for token in tokens:
        try:
            check_token(token)
        except APNsInputError as exc:
            raise click.BadParameter(str(exc), param_hint="TOKEN") from None
    delivered = asyncio.run(_push_all(client, tokens))
    if delivered < len(tokens):
        raise SystemExit(1)


async def _push_all(client: APNsClient, tokens: tuple[str, ...]) -> int:
    delivered = 0
    async with client:
        async for result in client.push_many(tokens):
            click.echo(str(result))
            delivered += result.ok
    return delivered


COMMANDS = [push_command]
