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
    count_limit: int | None = None,
) -> tuple[int, list[Mapping[Any, Any]]]:
    """(how many match, one page of journal rows) filtered by type, template, card and
    ``since <= at < until``, counted up to ``count_limit`` when given (``count_limit + 1``:
    more). ``after_id``: the keyset page after that sequence id (in the page's order), not
    counted (-1): an index range at any depth. The first page (offset 0) is read the same way
    from the start; deeper offset pages read and skip the rows before them."""
    others: list[sa.ColumnElement[bool]] = []
    if template_id is not None:
        others.append(events.c.template_id == template_id)
    if serial is not None:
        others.append(events.c.serial == serial)
    if since is not None:
        others.append(events.c.at >= since)
    if until is not None:
        others.append(events.c.at < until)
    where = others if types is None else [events.c.type.in_(list(types)), *others]
    order = events.c.id.desc() if newest_first else events.c.id.asc()
    if after_id is None and offset:
        query = _journal_select().where(*where).order_by(order).offset(offset).limit(limit)
        rows: list[Mapping[Any, Any]] = list(conn.execute(query).mappings())
        if rows and len(rows) < limit:
            return offset + len(rows), rows  # the last page: no count needed
        return _count(conn, where, count_limit), rows
    later: list[sa.ColumnElement[bool]] = []
    if after_id is not None:
        later.append(events.c.id < after_id if newest_first else events.c.id > after_id)
    if types is not None and len(set(types)) > 1:
        # One range of the (type, id) index per type, each at most a page, merged: a walk of
        # the journal in id order would read every row of the other types (a rare type's page
        # would cost the journal's depth).
        parts = [
            _journal_select()
            .where(*others, events.c.type == t, *later)
            .order_by(order)
            .limit(limit)
            .subquery()
            for t in sorted(set(types))
        ]
        merged = sa.union_all(*(sa.select(p) for p in parts)).subquery()
        query = (
            sa.select(merged)
            .order_by(merged.c.id.desc() if newest_first else merged.c.id.asc())
            .limit(limit)
        )
    else:
        query = _journal_select().where(*where, *later).order_by(order).limit(limit)
    found: list[Mapping[Any, Any]] = list(conn.execute(query).mappings())
    if after_id is not None:
        return -1, found
    if len(found) < limit:
        return len(found), found  # the whole list on one page
    return _count(conn, where, count_limit), found


def _count(conn: Connection, where: Sequence[sa.ColumnElement[bool]], limit: int | None) -> int:
    """How many journal rows match, counted up to ``limit + 1`` when given."""
    if limit is None:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(events).where(*where)) or 0)
    capped = sa.select(events.c.id).where(*where).limit(limit + 1).subquery()
    return int(conn.scalar(sa.select(sa.func.count()).select_from(capped)) or 0)
