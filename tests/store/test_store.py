"""Opening stores: URLs, the schema version, SQLite settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from passkit_stamps.errors import StoreError
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.service import StampService
from passkit_stamps.store import SCHEMA_VERSION, Store, normalize_url, schema
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
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
        # The worker-thread connections the service's transactions use are set up the same way.
        settings = await store.run_read(
            lambda c: [
                c.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous")
            ]
        )
        assert settings == ["wal", 1]


async def test_sqlite_synchronous_is_configurable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with await Store.open(url, sqlite_synchronous="full") as store:
        assert await store.run_read(lambda c: c.exec_driver_sql("PRAGMA synchronous").scalar()) == 2
    with pytest.raises(StoreError, match="sqlite_synchronous"):
        await Store.open(url, sqlite_synchronous="sometimes")


async def test_upgrade_from_schema_1_indexes_existing_cards_for_search(
    tmp_path: Path, coffee: CardTemplate
) -> None:
    """A database written by schema 1 (no FTS table) gets the search index, filled, on open."""
    full = tmp_path / "full.db"
    async with await Store.open(f"sqlite:///{full}") as store:
        service = StampService(store)
        await service.publish_template(coffee)
        await service.issue_card("coffee", Holder(name="Ada Lovelace"))
    # What schema 1 left behind: its tables as step 1 made them (upgrade(target=1)), holding
    # the rows above (schema 1's columns). Later steps add tables and columns, so the database
    # is built at version 1 rather than taken back from the current schema.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema.upgrade(conn, target=1)
        conn.exec_driver_sql(f"ATTACH DATABASE '{full}' AS full")
        tables = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT name FROM main.sqlite_master WHERE type = 'table'"
                " AND name NOT IN ('schema_version', 'counters')"
            )
        ]
        for table in tables:
            columns = ", ".join(
                f'"{r[1]}"' for r in conn.exec_driver_sql(f'PRAGMA main.table_info("{table}")')
            )
            conn.exec_driver_sql(
                f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM full."{table}"'
            )
    engine.dispose()
    async with await Store.open(url) as store:
        assert store.has_search_index
        assert await store.schema_version() == SCHEMA_VERSION
        service = StampService(store)
        assert (await service.list_cards(search="lovelace")).total == 1
        await service.issue_card("coffee", Holder(name="Ada Byron"))
        # Only these two cards exist: a card number holding "ADA" cannot add a third.
        found = (await service.list_cards(search="ada")).items
        assert sorted(c.holder.name or "" for c in found) == ["Ada Byron", "Ada Lovelace"]
