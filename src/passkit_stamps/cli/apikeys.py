"""``api-keys create|list|revoke``: the till API's keys (see docs/merchant.md).

``create`` prints the key once: only its SHA-256 is stored, so a lost key is revoked and
replaced, never shown again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .cards import _db_option, _echo_json, _run, _table, _when

if TYPE_CHECKING:
    from ..service import ApiKey


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role.value,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@click.group("api-keys")
def api_keys() -> None:
    """Keys of the till API: create (printed once), list, revoke."""


@api_keys.command("create")
@click.option(
    "--role",
    type=click.Choice(["staff", "manager"]),
    required=True,
    help="staff: look up, stamp, redeem; manager: everything.",
)
@click.option("--name", required=True, help="Who or what uses the key (e.g. 'till 1').")
@_db_option
def create_command(role: str, name: str, db: str, as_json: bool) -> None:
    """Create a key and print it (the only time it is shown)."""
    created = _run(db, lambda service: service.create_api_key(name, role))
    if as_json:
        _echo_json({**_key_json(created.key), "key": created.secret})
        return
    click.echo(created.secret)
    click.echo(
        f"API key {created.key.id} ({created.key.role.value}, {created.key.name!r}): "
        "store it now, it is not shown again.",
        err=True,
    )


@api_keys.command("list")
@_db_option
def list_command(db: str, as_json: bool) -> None:
    """Every key (never a secret), revoked ones included."""
    keys = _run(db, lambda service: service.list_api_keys(), create=False)
    if as_json:
        _echo_json([_key_json(k) for k in keys])
        return
    rows = [
        (
            k.id,
            k.role.value,
            k.name,
            _when(k.created_at),
            _when(k.revoked_at) if k.revoked_at else "",
        )
        for k in keys
    ]
    click.echo(_table(["id", "role", "name", "created", "revoked"], rows))


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID")
@_db_option
def revoke_command(key_id: str, db: str, as_json: bool) -> None:
    """Revoke the key with this id: it is refused from now on (other server processes: within
    5 seconds)."""
    key = _run(db, lambda service: service.revoke_api_key(key_id), create=False)
    if as_json:
        _echo_json(_key_json(key))
        return
    click.echo(f"API key {key.id} ({key.name!r}) revoked")


COMMANDS: list[click.Command] = [api_keys]
