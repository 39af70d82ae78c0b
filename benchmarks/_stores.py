"""The throw-away store every benchmark seeds: a SQLite file in a temporary folder, or a fresh
schema on the PostgreSQL server at ``pg_url`` (dropped afterwards, with everything in it)."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from passkit_stamps.store import Store


@asynccontextmanager
async def open_store(kind: str, pg_url: str, **options: Any) -> AsyncIterator[Store]:
    """An open, empty store of ``kind`` ("sqlite" or "postgresql"); ``options`` go to
    ``Store.open`` for PostgreSQL (e.g. ``pool_size``)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            store = await Store.open(f"sqlite:///{Path(folder) / 'bench.db'}")
            try:
                yield store
            finally:
                await store.close()
        return
    import asyncpg

    schema = "pks_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        store = await Store.open(
            pg_url,
            connect_args={"server_settings": {"search_path": f"{schema},public"}},
            **options,
        )
        try:
            yield store
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
