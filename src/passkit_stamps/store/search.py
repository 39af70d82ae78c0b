"""The issued-cards list (search, filters, sort, pages) and the customer export.

Inputs arrive checked (the service validates them and names the rule); here they become SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .cards import PLATFORMS, on_platform, platforms, select_cards
from .schema import SQLITE_SEARCH_TABLE, cards, holders, templates, vouchers

#: The keys the list can be sorted by (``-key``: descending).
SORT_KEYS = ("created_at", "last_stamp_at", "stamps", "serial", "name")

#: SQLite's FTS5 search table (see store.schema); its rowid is the card's holder_id.
_FTS = sa.table(SQLITE_SEARCH_TABLE, sa.column("rowid", sa.Integer))
#: SQLite: the largest rowid of cards, about how many cards were ever stored (an index lookup).
_CARDS_ROWS_EVER: sa.Select[Any] = sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(
    cards
)


@dataclass(frozen=True)
class CardFilter:
    """Which live cards a list or export covers (values already checked)."""

    #: Trimmed, lower-cased search text ("" or None: no search).
    search: str | None = None
    #: Whether the search runs on SQLite's FTS5 trigram index (see :func:`uses_search_index`).
    search_index: bool = False
    template_id: str | None = None
    template_version: int | None = None
    platform: str | None = None
    state: str | None = None
    min_stamps: int | None = None
    max_stamps: int | None = None
    has_vouchers_ready: bool | None = None
    #: The time of the read: a card past its ``expires_at`` lists and filters as ``expired``
    #: before the expiry sweep writes it (None: the stored state as it is).
    now: datetime | None = None


#: States a card leaves for ``expired`` when its expiry time comes (engine.is_due_to_expire).
_EXPIRING = ("active", "completed")


def _due(now: datetime) -> sa.ColumnElement[bool]:
    """Stored as active or completed, but its expiry time has come at ``now``."""
    return sa.and_(
        cards.c.state.in_(_EXPIRING),
        cards.c.expires_at.is_not(None),
        cards.c.expires_at <= now,
    )


def state_column(now: datetime | None) -> sa.ColumnElement[Any]:
    """The card's state as a read at ``now`` shows it, labelled ``state``."""
    if now is None:
        return cards.c.state
    return sa.case((_due(now), sa.literal("expired")), else_=cards.c.state).label("state")


def _state_is(state: str, now: datetime | None) -> sa.ColumnElement[bool]:
    """``state_column(now) == state``, written so the state index still serves it."""
    if now is None or state not in ("expired", *_EXPIRING):
        return cards.c.state == state
    if state == "expired":
        return sa.or_(cards.c.state == "expired", _due(now))
    return sa.and_(
        cards.c.state == state,
        sa.or_(cards.c.expires_at.is_(None), cards.c.expires_at > now),
    )


def uses_search_index(has_search_index: bool, text: str | None) -> bool:
    """Whether a search for this text runs on SQLite's FTS5 trigram index (3 characters or
    more: a trigram index cannot answer shorter texts, which scan instead)."""
    return bool(text) and has_search_index and len(text or "") >= 3


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` escaped (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(f: CardFilter, *, dense_search: bool = False) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [cards.c.deleted_at.is_(None)]
    text = f.search
    if text and f.search_index:
        # FTS5 trigram phrase = the exact substring, any case (quotes doubled inside).
        phrase = '"' + text.replace('"', '""') + '"'
        matching = sa.select(_FTS.c.rowid).where(
            sa.literal_column(SQLITE_SEARCH_TABLE).op("MATCH")(phrase)
        )
        # ``holder_id + 0`` hides the column from the planner: it then walks the sort
        # index and probes the match list instead of looking each match up.
        key = cards.c.holder_id + sa.literal_column("0") if dense_search else cards.c.holder_id
        where.append(key.in_(matching))
    elif text:
        where.append(cards.c.search_text.like(like_pattern(text), escape="\\"))
    if f.template_id is not None:
        where.append(cards.c.template_id == f.template_id)
    if f.template_version is not None:
        where.append(cards.c.template_version == f.template_version)
    if f.platform is not None:
        where.append(on_platform(f.platform))
    if f.state is not None:
        where.append(_state_is(f.state, f.now))
    if f.min_stamps is not None:
        where.append(cards.c.stamps >= f.min_stamps)
    if f.max_stamps is not None:
        where.append(cards.c.stamps <= f.max_stamps)
    if f.has_vouchers_ready is not None:
        ready = sa.exists().where(
            vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None)
        )
        where.append(ready if f.has_vouchers_ready else ~ready)
    return where


def _order(key: str, descending: bool) -> list[sa.ColumnElement[Any]]:
    columns: dict[str, sa.ColumnElement[Any]] = {
        "created_at": cards.c.created_at,
        "last_stamp_at": cards.c.last_stamp_at,
        "stamps": cards.c.stamps,
        "serial": cards.c.serial,
        "name": holders.c.name,
    }
    column = columns[key]
    # NULLS LAST only where NULLs exist: on a NOT NULL column it would stop PostgreSQL from
    # walking the index backwards (DESC NULLS LAST is not the index's order), forcing a sort.
    nullable = key in ("last_stamp_at", "name")
    if descending:
        primary = column.desc().nulls_last() if nullable else column.desc()
        tie = cards.c.serial.desc()
    else:
        primary = column.asc().nulls_last() if nullable else column.asc()
        tie = cards.c.serial.asc()
    return [primary] if key == "serial" else [primary, tie]



def _sort_column(key: str) -> sa.ColumnElement[Any]:
    """The column of a sort key (the serial breaks ties)."""
    columns: dict[str, sa.ColumnElement[Any]] = {
        "created_at": cards.c.created_at,
        "last_stamp_at": cards.c.last_stamp_at,
        "stamps": cards.c.stamps,
        "serial": cards.c.serial,
        "name": holders.c.name,
    }
    return columns[key]


#: Sort keys whose column may be NULL (sorted last in both directions).
NULLABLE_SORT_KEYS = ("last_stamp_at", "name")


@dataclass(frozen=True)
class Keyset:
    """The rows after a position of a sorted list, as steps run in order until the page is
    full: each a condition and the order that walks its index. A nullable key's NULLs sort
    last: first the non-NULL rows after the position, then the NULL rows."""

    steps: tuple[tuple[tuple[sa.ColumnElement[bool], ...], tuple[Any, ...]], ...]


def after_position(key: str, descending: bool, value: Any, serial: str) -> Keyset:
    """Keyset of the rows that sort after the row (``value``, ``serial``) in the list's order
    (:func:`_order`). Each step compares as a row value with a plain bound on the key, which
    both databases answer from the (key, serial) index at any depth."""
    column = _sort_column(key)
    by_serial = cards.c.serial.desc() if descending else cards.c.serial.asc()
    tie = cards.c.serial < serial if descending else cards.c.serial > serial
    if key == "serial":
        return Keyset((((tie,), (by_serial,)),))
    nulls = ((column.is_(None),), (by_serial,))
    if value is None:  # inside the NULLs at the end
        return Keyset((((column.is_(None), tie), (by_serial,)),))
    row = sa.tuple_(column, cards.c.serial)
    # Typed literals: the value binds as the column does (SQLite's text timestamps).
    typed = sa.literal(value, column.type)
    position = sa.tuple_(typed, sa.literal(serial, cards.c.serial.type))
    if descending:
        later = (row < position, column <= typed)
        order = (column.desc(), by_serial)
    else:
        later = (row > position, column >= typed)
        order = (column.asc(), by_serial)
    if key in NULLABLE_SORT_KEYS:
        # Without NULLS LAST in the ORDER BY (none pass the bound): the index's own order.
        return Keyset(((later, order), ((*nulls[0],), nulls[1])))
    return Keyset(((later, order),))


def sort_value(row: Mapping[Any, Any], key: str) -> Any:
    """The sort key's value of a page row (what a cursor carries)."""
    return row["name"] if key == "name" else row[key]


def _summary_select(
    where: Sequence[sa.ColumnElement[bool]],
    order: Sequence[sa.ColumnElement[Any]],
    offset: int,
    limit: int,
    now: datetime | None = None,
) -> sa.Select[Any]:
    """One page of the issued-cards list. Platforms and ready vouchers are read afterwards for
    the page's serials: as subqueries here PostgreSQL would run them for every row an OFFSET
    skips too."""
    return (
        select_cards(
            cards.c.serial,
            cards.c.template_id,
            cards.c.template_version,
            cards.c.stamps,
            state_column(now),
            cards.c.created_at,
            cards.c.last_stamp_at,
            holders.c.name,
            holders.c.email,
            holders.c.phone,
            holders.c.birthday,
            templates.c.name.label("template_name"),
            templates.c.stamps_required,
        )
        .where(*where)
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )


def vouchers_ready(conn: Connection, serials: Sequence[str]) -> dict[str, int]:
    """How many unredeemed vouchers each card has (cards with none left out)."""
    if not serials:
        return {}
    query = (
        sa.select(vouchers.c.serial, sa.func.count())
        .where(vouchers.c.serial.in_(serials), vouchers.c.redeemed_at.is_(None))
        .group_by(vouchers.c.serial)
    )
    return {serial: int(n) for serial, n in conn.execute(query)}


_READY = (
    sa.select(sa.func.count())
    .where(vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None))
    .scalar_subquery()
    .label("vouchers_ready")
)
_ON_PLATFORM = tuple(on_platform(p).label(f"on_{p}") for p in PLATFORMS)


@dataclass(frozen=True)
class CardRows:
    """One page of the issued-cards list as rows, with what the rows do not carry."""

    total: int
    rows: Sequence[Mapping[Any, Any]]
    platforms: dict[str, set[str]]
    vouchers_ready: dict[str, int]


def card_page(
    conn: Connection,
    f: CardFilter,
    *,
    sort_key: str,
    descending: bool,
    offset: int,
    limit: int,
    cap: int | None,
    after: Keyset | None = None,
) -> CardRows:
    """One page of the live cards matching ``f``, sorted, with the number matching (counted up
    to ``cap`` past nothing when given: ``cap + 1`` means "more than cap").

    ``after`` (a keyset condition from :func:`after_position`): the page after a position,
    ``limit`` rows with no count (``total`` is -1) at any depth: pass ``limit + 1`` to learn
    whether more follow."""
    if after is not None:
        rows: list[Mapping[Any, Any]] = []
        for condition, walk in after.steps:
            wanted = limit - len(rows)
            if wanted <= 0:
                break
            # Platforms and ready vouchers as correlated subqueries: a keyset page reads only
            # its own rows (no OFFSET rows to skip), so one round trip instead of three.
            query = _summary_select([*_where(f), *condition], walk, 0, wanted, f.now).add_columns(
                _READY, *_ON_PLATFORM
            )
            rows += conn.execute(query).mappings()
        found = {r["serial"]: {p for p in PLATFORMS if r[f"on_{p}"]} for r in rows}
        ready = {r["serial"]: int(r["vouchers_ready"]) for r in rows if r["vouchers_ready"]}
        return CardRows(-1, rows, found, ready)
    where = _where(f)
    order = _order(sort_key, descending)
    count = sa.select(sa.func.count()).select_from(cards).where(*where)
    if cap is not None:
        capped = sa.select(cards.c.serial).where(*where).limit(cap + 1).subquery()
        count = sa.select(sa.func.count()).select_from(capped)
    if f.search and conn.dialect.name == "postgresql":
        # Prepared statements switch to a generic plan after five runs; one plan cannot
        # fit both "ada" (10% of the cards) and a full email (one card): the generic
        # plan for the email scanned the whole table. Plan each search for its text.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    # SQLite + FTS: with many matches, walking the created_at (or serial) index and checking
    # each card against the match list beats looking every match up and sorting them.
    if f.search_index and sort_key in ("created_at", "serial"):
        total = int(conn.scalar(count) or 0)
        if not total:
            return CardRows(0, [], {}, {})
        rows_ever = int(conn.scalar(_CARDS_ROWS_EVER) or 0)
        # Walked rows ~ rows_ever / total * (offset + limit); looked-up rows ~ total
        # (a count that hit its cap: at least that many, walk).
        dense = (cap is not None and total > cap) or total * total >= rows_ever * (offset + limit)
        chosen = _where(f, dense_search=True) if dense else where
        rows = list(
            conn.execute(_summary_select(chosen, order, offset, limit, f.now)).mappings()
        )
    else:
        rows = list(conn.execute(_summary_select(where, order, offset, limit, f.now)).mappings())
        if len(rows) < limit and (rows or not offset):
            total = offset + len(rows)  # the last page: no count needed
        else:
            total = int(conn.scalar(count) or 0)
    serials = [r["serial"] for r in rows]
    return CardRows(total, rows, platforms(conn, serials), vouchers_ready(conn, serials))


def export_rows(conn: Connection, f: CardFilter, *, after: str, limit: int) -> list[Any]:
    """The next ``limit`` cards for the export after serial ``after`` (keyset pagination), with
    ``vouchers_ready``, ``on_<platform>`` flags and ``stamps_required``. One query per batch:
    platforms and ready vouchers as correlated subqueries (each an index lookup)."""
    ready = (
        sa.select(sa.func.count())
        .where(vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None))
        .scalar_subquery()
        .label("vouchers_ready")
    )
    query = (
        select_cards(
            cards.c.serial,
            holders.c.name,
            holders.c.email,
            holders.c.phone,
            holders.c.birthday,
            cards.c.template_id,
            cards.c.template_version,
            state_column(f.now),
            cards.c.stamps,
            templates.c.stamps_required,
            cards.c.rounds_completed,
            ready,
            *(on_platform(p).label(f"on_{p}") for p in PLATFORMS),
            cards.c.created_at,
            cards.c.last_stamp_at,
            cards.c.expires_at,
        )
        .where(*_where(f), cards.c.serial > sa.bindparam("last"))
        .order_by(cards.c.serial)
        .limit(limit)
    )
    return list(conn.execute(query, {"last": after}))
