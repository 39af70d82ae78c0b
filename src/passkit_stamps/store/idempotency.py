"""Idempotency keys: an operation's stored result, written in the operation's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import idempotency


def idempotent_result(conn: Connection, key: str) -> Mapping[Any, Any] | None:
    row = (conn.execute(sa.select(idempotency).where(idempotency.c.key == key))).mappings()
    return row.first()


def save_idempotent_result(
    conn: Connection,
    key: str,
    *,
    operation: str,
    request_digest: str,
    serial: str | None,
    result: str,
    now: datetime,
) -> None:
    conn.execute(
        idempotency.insert().values(
            key=key,
            operation=operation,
            request_digest=request_digest,
            serial=serial,
            result=result,
            created_at=now,
        )
    )
