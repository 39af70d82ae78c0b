"""What opening a store leaves on disk and in the database.

- SQLite files (the database, its ``-wal`` and ``-shm``) hold every authentication token and the
  holders' personal data: they are created 0600 whatever the umask.
- Opening for reading (``Store.open(url, create=False)``, the CLI's reading commands) a store that
  does not exist or has no tables raises StoreNotFoundError and creates nothing: no file, no
  tables.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from passkit_stamps.cli import main
from passkit_stamps.errors import StoreError, StoreNotFoundError
from passkit_stamps.store.store import Store
from store_backends import postgres_schema, postgres_url

READING_COMMANDS = (
    ("cards",),
    ("card", "ABCD-EFGH-JKMN"),
    ("history", "ABCD-EFGH-JKMN"),
    ("journal",),
    ("export-csv",),
    ("templates", "list"),
)
#: Commands that change a card: on a missing store they can only fail (no template, no card),
#: so they create nothing either.
CARD_COMMANDS = (
    ("issue", "coffee", "--name", "Ada"),
    ("stamp", "ABCD-EFGH-JKMN"),
    ("set-stamps", "ABCD-EFGH-JKMN", "3"),
    ("redeem", "ABCD-EFGH-JKMN", "FREE-1234"),
    ("coupon", "ABCD-EFGH-JKMN", "Birthday cake"),
    ("message", "ABCD-EFGH-JKMN", "Hello"),
    ("void", "ABCD-EFGH-JKMN"),
    ("delete", "ABCD-EFGH-JKMN"),
)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- file permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
async def test_sqlite_files_are_created_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "stamps.db"
    with umask(mask):
        store = await Store.open(f"sqlite:///{path}")
        try:
            # A write makes sure the WAL holds something (and both side files exist).
            async with store.write() as conn:
                await conn.exec_driver_sql("UPDATE counters SET value = value + 1")
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(f.exists() for f in files), [f.name for f in files if not f.exists()]
            assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        finally:
            await store.close()


async def test_a_store_reopened_keeps_its_files_0600(tmp_path: Path) -> None:
    path = tmp_path / "stamps.db"
    with umask(0o022):
        await (await Store.open(f"sqlite:///{path}")).close()
        # Closing the last connection checkpoints and removes the side files; reopening makes
        # them again, from the database file's mode.
        store = await Store.open(f"sqlite:///{path}")
        try:
            async with store.write() as conn:
                await conn.exec_driver_sql("UPDATE counters SET value = value + 1")
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert mode(name) == 0o600, name
        finally:
            await store.close()


def test_cli_publish_creates_the_store_0600(tmp_path: Path, templates_dir: Path) -> None:
    path = tmp_path / "cli.db"
    with umask(0o002):
        result = CliRunner().invoke(
            main,
            ["templates", "publish", str(templates_dir / "coffee"), "--db", f"sqlite:///{path}"],
        )
    assert result.exit_code == 0, result.output
    assert mode(path) == 0o600


# -- reading a store that is not there -------------------------------------------------------------


async def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(StoreNotFoundError) as caught:
        await Store.open(f"sqlite:///{path}", create=False)
    assert isinstance(caught.value, StoreError)
    message = str(caught.value)
    assert str(path) in message and "templates publish" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


async def test_reading_an_empty_sqlite_file_creates_no_tables(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreNotFoundError):
        await Store.open(f"sqlite:///{path}", create=False)
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


async def test_reading_an_existing_sqlite_store_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stamps.db'}"
    await (await Store.open(url)).close()
    store = await Store.open(url, create=False)
    try:
        assert await store.schema_version() >= 1
    finally:
        await store.close()


@pytest.mark.parametrize("command", READING_COMMANDS + CARD_COMMANDS, ids=lambda c: " ".join(c))
def test_cli_commands_on_a_missing_sqlite_file_create_nothing(
    tmp_path: Path, command: tuple[str]
) -> None:
    path = tmp_path / "typo.db"
    result = CliRunner().invoke(main, [*command, "--db", f"sqlite:///{path}"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "no store" in lines[0] and str(path) in lines[0], lines[0]
    assert not result.exception or isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []


async def _our_tables(url: str, schema: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
        )
    finally:
        await conn.close()
    return [r["tablename"] for r in rows]


async def test_reading_an_empty_postgres_schema_creates_no_tables() -> None:
    url = postgres_url()
    async with postgres_schema(url) as schema:
        with pytest.raises(StoreNotFoundError) as caught:
            await Store.open(
                url,
                create=False,
                connect_args={"server_settings": {"search_path": f"{schema},public"}},
            )
        assert "templates publish" in str(caught.value)
        assert await _our_tables(url, schema) == []


@asynccontextmanager
async def empty_postgres_database(url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server (the CLI takes only a URL: no search_path)."""
    import asyncpg

    name = "pks_test_" + secrets.token_hex(6)
    plain = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield plain.rsplit("/", 1)[0] + "/" + name
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_cli_reading_commands_on_an_empty_postgres_database() -> None:
    import asyncio

    url = postgres_url()
    async with empty_postgres_database(url) as db_url:
        for command in (("templates", "list"), ("cards",), ("stamp", "ABCD-EFGH-JKMN")):
            # CliRunner runs asyncio.run itself: keep it off this test's event loop.
            result = await asyncio.to_thread(CliRunner().invoke, main, [*command, "--db", db_url])
            assert result.exit_code != 0, result.output
            assert len(result.output.strip().splitlines()) == 1, result.output
            assert "no store" in result.output
        assert await _our_tables(db_url, "public") == []


async def test_a_missing_postgres_database_is_not_found() -> None:
    url = postgres_url()
    missing = url.rsplit("/", 1)[0] + "/pks_no_such_db_" + secrets.token_hex(4)
    with pytest.raises(StoreNotFoundError):
        await Store.open(missing, create=False)
