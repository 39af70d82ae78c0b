"""Template versions and their images (content-addressed)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import codec
from .schema import images, templates


def template_versions(conn: Connection, template_id: str) -> list[Mapping[Any, Any]]:
    query = (
        sa.select(
            templates.c.version,
            templates.c.content_digest,
            templates.c.rules_digest,
            templates.c.name,
        )
        .where(templates.c.id == template_id)
        .order_by(templates.c.version)
    )
    return list((conn.execute(query)).mappings())


def template_digest(conn: Connection, template_id: str, version: int) -> str | None:
    return conn.scalar(
        sa.select(templates.c.content_digest).where(
            templates.c.id == template_id, templates.c.version == version
        )
    )


def latest_version(conn: Connection, template_id: str) -> int | None:
    found = conn.scalar(
        sa.select(sa.func.max(templates.c.version)).where(templates.c.id == template_id)
    )
    return None if found is None else int(found)


def template_content(
    conn: Connection, template_id: str, version: int
) -> tuple[str, str, dict[str, bytes]] | None:
    """(content JSON, content digest, images) of one template version."""
    row = (
        conn.execute(
            sa.select(templates.c.content, templates.c.content_digest).where(
                templates.c.id == template_id, templates.c.version == version
            )
        )
    ).first()
    if row is None:
        return None
    refs = codec.image_refs(row.content)
    found = conn.execute(sa.select(images.c.sha256, images.c.data).where(images.c.sha256.in_(refs)))
    return row.content, row.content_digest, {sha: bytes(data) for sha, data in found}


def save_images(conn: Connection, found: Mapping[str, bytes]) -> None:
    if not found:
        return
    existing = set(conn.scalars(sa.select(images.c.sha256).where(images.c.sha256.in_(list(found)))))
    rows = [{"sha256": sha, "data": data} for sha, data in found.items() if sha not in existing]
    if rows:
        conn.execute(images.insert(), rows)


def insert_template(conn: Connection, encoded: codec.EncodedTemplate, now: datetime) -> None:
    save_images(conn, encoded.images)
    conn.execute(
        templates.insert().values(
            id=encoded.data["id"],
            version=encoded.data["version"],
            name=encoded.data["name"],
            stamps_required=encoded.data["stamps_required"],
            content=encoded.content,
            content_digest=encoded.content_digest,
            rules_digest=encoded.rules_digest,
            published_at=now,
            updated_at=now,
        )
    )


def replace_template(conn: Connection, encoded: codec.EncodedTemplate, now: datetime) -> None:
    save_images(conn, encoded.images)
    conn.execute(
        templates.update()
        .where(
            templates.c.id == encoded.data["id"],
            templates.c.version == encoded.data["version"],
        )
        .values(
            name=encoded.data["name"],
            content=encoded.content,
            content_digest=encoded.content_digest,
            updated_at=now,
        )
    )


def all_versions(conn: Connection) -> list[tuple[str, int, str]]:
    """Every published template version: (id, version, name), by id and version."""
    rows = conn.execute(
        sa.select(templates.c.id, templates.c.version, templates.c.name).order_by(
            templates.c.id, templates.c.version
        )
    )
    return [(r.id, r.version, r.name) for r in rows]
