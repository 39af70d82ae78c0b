"""The SQL store (SQLAlchemy Core, async) for SQLite and PostgreSQL; see ``docs/storage.md``."""

from __future__ import annotations

from .schema import SCHEMA_VERSION
from .store import Store, normalize_url

__all__ = ["SCHEMA_VERSION", "Store", "normalize_url"]
