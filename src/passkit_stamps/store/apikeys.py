"""API keys of the till API (only the SHA-256 of each secret is stored), and the voucher lookup
by code that the API's "redeem by scanning" needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import api_keys, cards, vouchers


def insert_api_key(
    conn: Connection, *, key_id: str, name: str, role: str, secret_sha256: str, now: datetime
) -> None:
    conn.execute(
        api_keys.insert().values(
            id=key_id, name=name, role=role, secret_sha256=secret_sha256, created_at=now
        )
    )


def api_key(conn: Connection, key_id: str) -> Mapping[Any, Any] | None:
    return conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()


def active_api_keys(conn: Connection) -> Sequence[Mapping[Any, Any]]:
    """Every key not revoked: the table the API checks keys against."""
    query = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
    return list(conn.execute(query).mappings())


def all_api_keys(conn: Connection) -> Sequence[Mapping[Any, Any]]:
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    return list(conn.execute(query).mappings())


def revoke_api_key(conn: Connection, key_id: str, now: datetime) -> bool:
    """Mark the key revoked (a revoked key keeps its first revocation time); False: no such key."""
    found = conn.execute(
        sa.select(api_keys.c.revoked_at).where(api_keys.c.id == key_id).with_for_update()
    ).first()
    if found is None:
        return False
    if found[0] is None:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=now))
    return True


def serials_with_voucher(conn: Connection, code: str, *, limit: int = 2) -> list[str]:
    """The live cards holding a voucher with this code (``ix_vouchers_code``): codes are random,
    so normally one; ``limit`` 2 is enough to tell an ambiguous code."""
    query = (
        sa.select(vouchers.c.serial)
        .join(cards, cards.c.serial == vouchers.c.serial)
        .where(vouchers.c.code == code, cards.c.deleted_at.is_(None))
        .order_by(vouchers.c.serial)
        .limit(limit)
    )
    return [r[0] for r in conn.execute(query)]
