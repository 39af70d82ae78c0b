"""The store backends every test package can run on: SQLite (always) and PostgreSQL (when
``PASSKIT_STAMPS_TEST_POSTGRES_URL`` is set, e.g. ``postgresql://postgres@127.0.0.1:5432/test``).

Each PostgreSQL store gets a schema of its own (``pks_test_<random>``, set as the connection's
``search_path``) that is dropped afterwards, so runs never see each other's rows.

    from store_backends import BACKENDS, open_test_store

    @pytest.fixture(params=BACKENDS)
    async def store(request, tmp_path):
        async with open_test_store(request.param, tmp_path) as opened:
            yield opened
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from passkit_stamps.store.store import Store

POSTGRES_ENV = "PASSKIT_STAMPS_TEST_POSTGRES_URL"
POSTGRES_SKIP = (
    f"PostgreSQL: {POSTGRES_ENV} not set (e.g. postgresql://postgres@127.0.0.1:5432/test); "
    "the PostgreSQL variant of this test is SKIPPED"
)
BACKENDS = ("sqlite", "postgresql")


def store_urls() -> dict[str, str | None]:
    """The base URL of each backend: SQLite makes a new file per store (None here);
    PostgreSQL's URL comes from the environment (None when unset)."""
    return {"sqlite": None, "postgresql": os.environ.get(POSTGRES_ENV) or None}


def postgres_url() -> str:
    """The test server's URL, or skip the calling test with a visible reason."""
    url = store_urls()["postgresql"]
    if not url:
        pytest.skip(POSTGRES_SKIP)
    return url


@asynccontextmanager
async def postgres_schema(url: str) -> AsyncIterator[str]:
    """A fresh schema on the test server, dropped (with everything in it) at the end."""
    import asyncpg

    name = "pks_test_" + secrets.token_hex(6)
    plain = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await admin.close()


@asynccontextmanager
async def open_test_store(
    kind: str, tmp_path: Path | None = None, *, pool_size: int = 10
) -> AsyncIterator[Store]:
    """An open, empty store of ``kind`` ("sqlite" or "postgresql"), cleaned up afterwards.
    Skips the test when PostgreSQL is asked for but not configured."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
            store = await Store.open(f"sqlite:///{Path(folder) / 'store.db'}")
            try:
                yield store
            finally:
                await store.close()
        return
    if kind != "postgresql":
        raise ValueError(f"unknown store backend {kind!r}: use one of {', '.join(BACKENDS)}")
    url = postgres_url()
    async with postgres_schema(url) as schema:
        store = await Store.open(
            url,
            # public stays on the path for extensions (pg_trgm) installed there
            connect_args={"server_settings": {"search_path": f"{schema},public"}},
            pool_size=pool_size,
        )
        try:
            yield store
        finally:
            await store.close()
