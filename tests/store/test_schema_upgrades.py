"""Schema steps are frozen DDL: a database left at any past schema version and upgraded through
``Store.open`` ends exactly like a freshly created one, and the ``Table`` objects the queries use
describe what the steps create.

Compared from the database's own catalogue (not SQLAlchemy's reflection, which would hide
differences it normalises): tables, columns with their types, nullability and defaults, primary
keys, foreign keys, unique constraints and indexes; on SQLite also the FTS5 search table and its
triggers, on PostgreSQL each index's definition (so the pg_trgm index counts too).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from passkit_stamps.store import schema
from passkit_stamps.store.store import Store, normalize_url
from store_backends import BACKENDS, postgres_schema, postgres_url

PAST_VERSIONS = [version for version, _ in schema.UPGRADES if version < schema.SCHEMA_VERSION]

#: What the steps create that the Table objects do not describe (dialect-specific search
#: machinery, built by hand in the steps on purpose).
NOT_IN_METADATA_INDEXES = {"ix_cards_search_trgm", "ix_cards_holder_live"}

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _squash(sql: str | None) -> str | None:
    return None if sql is None else re.sub(r"\s+", " ", sql).strip()


def snapshot(conn: sa.Connection) -> dict[str, Any]:
    """The schema as the database's catalogue describes it."""
    if conn.dialect.name == "sqlite":
        return _sqlite_snapshot(conn)
    return _postgres_snapshot(conn)


def _sqlite_snapshot(conn: sa.Connection) -> dict[str, Any]:
    def rows(sql: str) -> list[Any]:
        return list(conn.exec_driver_sql(sql))

    tables: dict[str, Any] = {}
    indexes: dict[str, Any] = {}
    for (name,) in rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ):
        columns = {
            r[1]: {"type": r[2].upper(), "not_null": bool(r[3]), "default": r[4], "pk": r[5]}
            for r in rows(f'PRAGMA table_info("{name}")')
        }
        foreign_keys = sorted(
            (r[0], r[1], r[2], r[3], r[4]) for r in rows(f'PRAGMA foreign_key_list("{name}")')
        )
        tables[name] = {"columns": columns, "foreign_keys": foreign_keys}
        for _seq, index, unique, origin, partial in rows(f'PRAGMA index_list("{name}")'):
            key = index if not index.startswith("sqlite_autoindex_") else f"{name}:{origin}"
            columns_of_index = [r[2] for r in rows(f'PRAGMA index_info("{index}")')]
            indexes[key] = (name, columns_of_index, bool(unique), origin, bool(partial))
    special = {
        (kind, name): _squash(sql)
        for kind, name, sql in rows(
            "SELECT type, name, sql FROM sqlite_master WHERE type = 'trigger' OR "
            "(type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%')"
        )
    }
    return {"tables": tables, "indexes": indexes, "virtual_tables_and_triggers": special}


def _postgres_snapshot(conn: sa.Connection) -> dict[str, Any]:
    here = conn.exec_driver_sql("SELECT current_schema()").scalar_one()

    def rows(sql: str) -> list[Any]:
        return list(conn.execute(sa.text(sql), {"s": here}))

    tables: dict[str, Any] = {}
    for table, column, data_type, length, precision, nullable, default in rows(
        "SELECT table_name, column_name, data_type, character_maximum_length, "
        "numeric_precision, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = :s"
    ):
        tables.setdefault(table, {})[column] = {
            "type": (data_type, length, precision),
            "nullable": nullable,
            "default": default,
        }
    constraints = {
        (table, name): definition
        for table, name, definition in rows(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = :s"
        )
    }
    indexes = {
        name: definition.replace(f"{here}.", "SCHEMA.")
        for name, definition in rows(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"
        )
    }
    return {"tables": tables, "constraints": constraints, "indexes": indexes}


def assert_same_schema(found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal snapshots, or a failure listing each differing entry (not a truncated dict)."""
    flat_found, flat_expected = _flatten(found), _flatten(expected)
    differences = [
        f"{key}: {flat_found.get(key, '(missing)')!r} != {flat_expected.get(key, '(missing)')!r}"
        for key in sorted(flat_found.keys() | flat_expected.keys())
        if flat_found.get(key, "(missing)") != flat_expected.get(key, "(missing)")
    ]
    assert not differences, "schemas differ:\n" + "\n".join(differences)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}/{key}"))
        return flat
    return {prefix: value}


# -- databases at a chosen version ---------------------------------------------------------------


@asynccontextmanager
async def empty_database(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(url, connect_args) of an empty database: a SQLite file or a PostgreSQL schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
            yield f"sqlite:///{Path(folder) / 'store.db'}", {}
        return
    url = postgres_url()
    async with postgres_schema(url) as name:
        yield url, {"server_settings": {"search_path": f"{name},public"}}


async def build_at(url: str, connect_args: dict[str, Any], version: int) -> None:
    """The database as a release with schema ``version`` left it (steps 1..version)."""
    engine = create_async_engine(normalize_url(url), connect_args=connect_args)
    try:
        async with engine.begin() as conn:
            reached = await conn.run_sync(lambda c: schema.upgrade(c, target=version))
            assert reached == version
    finally:
        await engine.dispose()


async def snapshot_of(url: str, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Open through the normal path (creating or upgrading) and describe the schema."""
    store = await Store.open(url, connect_args=connect_args)
    try:
        assert await store.schema_version() == schema.SCHEMA_VERSION
        async with store.read() as conn:
            return await conn.run_sync(snapshot)
    finally:
        await store.close()


async def fresh_snapshot(kind: str, tmp_path: Path) -> dict[str, Any]:
    async with empty_database(kind, tmp_path) as (url, connect_args):
        return await snapshot_of(url, connect_args)


# -- tests ---------------------------------------------------------------------------------------


def test_there_is_a_past_version_to_upgrade_from() -> None:
    assert list(range(1, schema.SCHEMA_VERSION)) == PAST_VERSIONS
    assert [v for v, _ in schema.UPGRADES] == list(range(1, schema.SCHEMA_VERSION + 1))


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("version", PAST_VERSIONS)
async def test_upgrading_a_past_version_gives_the_fresh_schema(
    kind: str, version: int, tmp_path: Path
) -> None:
    fresh = await fresh_snapshot(kind, tmp_path)
    async with empty_database(kind, tmp_path) as (url, connect_args):
        await build_at(url, connect_args, version)
        async with _engine(url, connect_args) as engine, engine.connect() as conn:
            before = await conn.run_sync(snapshot)
        assert before != fresh  # the comparison sees what the later steps change
        upgraded = await snapshot_of(url, connect_args)
    assert_same_schema(upgraded, fresh)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_upgrading_from_version_1_keeps_cards_searchable(kind: str, tmp_path: Path) -> None:
    """Step 2 builds the SQLite search index from cards already there."""
    async with empty_database(kind, tmp_path) as (url, connect_args):
        await build_at(url, connect_args, 1)
        async with _engine(url, connect_args) as engine, engine.begin() as conn:
            await _insert_cards(conn, [("S-1", 7, "active", "s-1 ada lovelace")])
        store = await Store.open(url, connect_args=connect_args)
        try:
            async with store.read() as conn:
                if store.is_sqlite:
                    assert store.has_search_index
                    found = await conn.execute(
                        sa.text("SELECT rowid FROM cards_search WHERE search_text MATCH 'love'")
                    )
                    assert found.scalars().all() == [7]
                rows = await conn.execute(sa.text("SELECT serial FROM cards"))
                assert rows.scalars().all() == ["S-1"]
        finally:
            await store.close()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_tables_describe_what_the_steps_create(kind: str, tmp_path: Path) -> None:
    """A column, index or constraint added to a Table without a step (or the other way round)
    fails here: queries would meet a schema other than the one they were written for."""
    from_steps = await fresh_snapshot(kind, tmp_path)
    async with (
        empty_database(kind, tmp_path) as (url, connect_args),
        _engine(url, connect_args) as engine,
        engine.begin() as conn,
    ):
        await conn.run_sync(schema.metadata.create_all)
        from_tables = await conn.run_sync(snapshot)
    for name in NOT_IN_METADATA_INDEXES:
        from_steps["indexes"].pop(name, None)
    if kind == "sqlite":
        # FTS5 search table and its shadow tables, with the triggers that feed it.
        search = schema.SQLITE_SEARCH_TABLE
        for name in [t for t in from_steps["tables"] if t.startswith(search)]:
            del from_steps["tables"][name]
        for name in [i for i, d in from_steps["indexes"].items() if d[0].startswith(search)]:
            del from_steps["indexes"][name]
        from_steps["virtual_tables_and_triggers"] = {}
    assert_same_schema(from_steps, from_tables)


async def _insert_cards(conn: Any, rows: list[tuple[str, int, str, str]]) -> None:
    """A template and cards (serial, holder id, state, search text) in the columns of step 1,
    each with a holder named Ada."""
    await conn.execute(
        sa.text("INSERT INTO templates VALUES ('coffee', 1, 'Coffee', 8, '{}', 'c', 'r', :t, :t)"),
        {"t": _T0},
    )
    for serial, holder, state, search_text in rows:
        await conn.execute(
            sa.text("INSERT INTO holders (id, name, created_at) VALUES (:h, 'Ada', :t)"),
            {"h": holder, "t": _T0},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO cards (serial, template_id, template_version, holder_id, "
                "stamps, rounds_completed, state, created_at, authentication_token, "
                "search_text, change_tag, updated_at) VALUES (:s, 'coffee', 1, :h, 0, 0, "
                ":state, :t, 'token-token-token-token', :text, 0, :t)"
            ),
            {"s": serial, "h": holder, "state": state, "text": search_text, "t": _T0},
        )


@pytest.mark.parametrize("version", [7, 8, 9])
async def test_an_analyzed_sqlite_store_gets_figures_for_the_new_page_indexes(
    version: int, tmp_path: Path
) -> None:
    """Steps 8 to 10 analyze the indexes they add when someone analyzed the store before:
    without figures SQLite would take those indexes for selective beside the old ones' real
    figures. Every index a later step adds has its row in sqlite_stat1."""
    async with empty_database("sqlite", tmp_path) as (url, connect_args):
        await build_at(url, connect_args, version)
        async with _engine(url, connect_args) as engine, engine.begin() as conn:
            await _insert_cards(conn, [("S-1", 7, "active", "s-1"), ("S-2", 8, "voided", "s-2")])
            await conn.exec_driver_sql("ANALYZE")
            before = set((await conn.exec_driver_sql("SELECT idx FROM sqlite_stat1")).scalars())
        store = await Store.open(url, connect_args=connect_args)
        try:
            async with store.read() as conn:
                found = (await conn.exec_driver_sql("SELECT idx FROM sqlite_stat1")).scalars()
                after = set(found)
        finally:
            await store.close()
    added = {
        index.name
        for index in schema.cards.indexes
        if index.name and index.name.startswith(("ix_cards_live_", "ix_cards_inactive_"))
    } - before
    assert added, "the steps after this version add page indexes"
    assert added <= after, added - after


@asynccontextmanager
async def _engine(url: str, connect_args: dict[str, Any]) -> AsyncIterator[Any]:
    engine = create_async_engine(normalize_url(url), connect_args=connect_args)
    try:
        yield engine
    finally:
        await engine.dispose()
