"""Opening stores: URLs, the schema version, SQLite settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from passkit_stamps.errors import StoreError
from passkit_stamps.store import SCHEMA_VERSION, Store, normalize_url
from passkit_stamps.store.schema import schema_version


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_url_forms(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("url", ["", "   ", "mysql://x/y", "file.db", "sqlite:///:memory:"])
async def test_bad_urls(url: str) -> None:
    with pytest.raises(StoreError):
        await Store.open(url)


async def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        await Store.open("postgresql://nobody:secret@127.0.0.1:1/none")


async def test_newer_schema_refused_on_each_backend(store: Store) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    again = await Store.open(store.url, connect_args=store.connect_args)
    await again.close()  # reopening an up-to-date schema is fine
    async with store.write() as conn:
        await conn.execute(
            schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=sa.func.now())
        )
    with pytest.raises(StoreError, match="newer than this library"):
        await Store.open(store.url, connect_args=store.connect_args)


async def test_reopen_keeps_data_and_refuses_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cards.db'}"
    async with await Store.open(url) as store:
        assert await store.schema_version() == SCHEMA_VERSION
    async with await Store.open(url) as store:
        async with store.read() as conn:
            rows = await conn.scalar(sa.select(sa.func.count()).select_from(schema_version))
        assert rows == SCHEMA_VERSION  # no step ran twice
        async with store.write() as conn:
            await conn.execute(
                schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=sa.func.now())
            )
    with pytest.raises(StoreError, match="newer"):
        await Store.open(url)


async def test_sqlite_settings(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 's.db'}")
    async with store, store.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 5000
