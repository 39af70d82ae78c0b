"""``passkit-stamps api-keys create|list|revoke`` against a SQLite store, and the key it prints
working (and then refused) through the API."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

from passkit_stamps.cli import main
from passkit_stamps.errors import ApiKeyError
from passkit_stamps.service import ApiRole, StampService
from passkit_stamps.store.store import Store


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)


async def _authenticate(db: str, key: str) -> ApiRole:
    store = await Store.open(db)
    try:
        return (await StampService(store).authenticate_api_key(key)).role
    finally:
        await store.close()


def test_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    created = run(db, "api-keys", "create", "--role", "staff", "--name", "till 1")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert re.fullmatch(r"pks_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert "not shown again" in created.stderr
    key_id = key[4:20]
    assert asyncio.run(_authenticate(db, key)) is ApiRole.STAFF

    manager = run(db, "api-keys", "create", "--role", "manager", "--name", "office", "--json")
    assert json.loads(manager.stdout)["role"] == "manager"

    listed = run(db, "api-keys", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [
        ("till 1", "staff", None),
        ("office", "manager", None),
    ]
    table = run(db, "api-keys", "list").stdout
    assert key_id in table and key[21:] not in table  # never a secret

    revoked = run(db, "api-keys", "revoke", key_id)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    try:
        asyncio.run(_authenticate(db, key))
    except ApiKeyError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a revoked key was accepted")
    assert json.loads(run(db, "api-keys", "list", "--json").stdout)[0]["revoked_at"]


def test_refusals_are_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    bad_role = CliRunner().invoke(main, ["api-keys", "create", "--role", "boss", "--name", "x"])
    assert bad_role.exit_code == 2
    run(db, "api-keys", "create", "--role", "staff", "--name", "till")
    unknown = CliRunner().invoke(main, ["api-keys", "revoke", "0123456789abcdef", "--db", db])
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "Error: no API key 0123456789abcdef"
