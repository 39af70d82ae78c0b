"""The journal ("Card Events"), its pages, and the pass change tag (see :mod:`.changes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..engine import Event
from . import changes
from .schema import cards, events, holders, templates


def next_change_tag(conn: Connection) -> int:
    """This transaction's pass change tag: see :mod:`.changes` (no lock on PostgreSQL)."""
    return changes.next_change_tag(conn)


def event_row(e: Event, actor: str | None) -> dict[str, Any]:
    """The journal row of an engine event."""
    return {
        "type": e.type.value,
        "at": e.at,
        "serial": e.serial,
        "template_id": e.template_id,
        "template_version": e.template_version,
        "code": e.code,
        "stamps": e.stamps,
        "required": e.required,
        "reward": e.reward,
        "voucher_code": e.voucher_code,
        "data": dict(e.data),
        "actor": actor,
    }


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Append journal rows; their sequence ids in order."""
    if not rows:
        return []
    return [int(i) for i in conn.execute(_INSERT_EVENTS, list(rows)).scalars()]


_INSERT_EVENTS = events.insert().returning(events.c.id, sort_by_parameter_order=True)


def _journal_select() -> sa.Select[Any]:
    """Journal rows with their template's name and the card's holder (``template_name``,
    ``holder_name``, ``holder_email``; None once gone)."""
    return (
        sa.select(
            events,
            templates.c.name.label("template_name"),
            holders.c.name.label("holder_name"),
            holders.c.email.label("holder_email"),
        )
        .outerjoin(
            templates,
            sa.and_(
                templates.c.id == events.c.template_id,
                templates.c.version == events.c.template_version,
            ),
        )
        .outerjoin(cards, cards.c.serial == events.c.serial)
        .outerjoin(holders, holders.c.id == cards.c.holder_id)
    )


def card_events(conn: Connection, serial: str) -> list[Mapping[Any, Any]]:
    """The journal rows of one card, oldest first."""
    query = _journal_select().where(events.c.serial == serial).order_by(events.c.id)
    return list(conn.execute(query).mappings())


def events_by_id(conn: Connection, ids: Sequence[int]) -> list[Mapping[Any, Any]]:
    if not ids:
        return []
    query = _journal_select().where(events.c.id.in_(list(ids))).order_by(events.c.id)
    return list(conn.execute(query).mappings())


def journal_page(
    conn: Connection,
    *,
    types: Sequence[str] | None,
    template_id: str | None,
    serial: str | None,
    since: datetime | None,
    until: datetime | None,
    offset: int,
    limit: int,
    newest_first: bool,
    after_id: int | None = None,
) -> tuple[int, list[Mapping[Any, Any]]]:
    """(how many match, one page of journal rows) filtered by type, template, card and
    ``since <= at < until``. ``after_id``: the keyset page after that sequence id (in the
    page's order), not counted (-1): an index range at any depth."""
    where: list[sa.ColumnElement[bool]] = []
    if types is not None:
        where.append(events.c.type.in_(list(types)))
    if template_id is not None:
        where.append(events.c.template_id == template_id)
    if serial is not None:
        where.append(events.c.serial == serial)
    if since is not None:
        where.append(events.c.at >= since)
    if until is not None:
        where.append(events.c.at < until)
    order = events.c.id.desc() if newest_first else events.c.id.asc()
    if after_id is not None:
        later = events.c.id < after_id if newest_first else events.c.id > after_id
        query = _journal_select().where(*where, later).order_by(order).limit(limit)
        return -1, list(conn.execute(query).mappings())
    query = _journal_select().where(*where).order_by(order).offset(offset).limit(limit)
    count = sa.select(sa.func.count()).select_from(events).where(*where)
    total = int(conn.scalar(count) or 0)
    return total, list(conn.execute(query).mappings())
