"""The issued-cards list (search, filters, sort, pages) and the customer export.

Inputs arrive checked (the service validates them and names the rule); here they become SQL.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from .cards import PLATFORMS, on_platform, platforms
from .schema import SQLITE_SEARCH_TABLE, card_platforms, cards, holders, templates, vouchers

#: The keys the list can be sorted by (``-key``: descending).
SORT_KEYS = ("created_at", "last_stamp_at", "stamps", "serial", "name")

#: SQLite's FTS5 search table (see store.schema); its rowid is the card's holder_id.
_FTS = sa.table(SQLITE_SEARCH_TABLE, sa.column("rowid", sa.Integer))

#: cards ⋈ holders ⋈ templates for the list and the export. The template by LEFT JOIN (every
#: card has one: the same rows) because SQLite never reads a LEFT JOIN from its right side:
#: otherwise, when it believes ``template_id = ?`` selective (no statistics for an index), it
#: starts from the few templates and reads every card of each through a (template_id, key)
#: index, then sorts them all, for a page of 50.
_LIST_JOIN = cards.join(holders, holders.c.id == cards.c.holder_id).outerjoin(
    templates,
    sa.and_(
        templates.c.id == cards.c.template_id,
        templates.c.version == cards.c.template_version,
    ),
)


def _select_cards(*columns: Any) -> sa.Select[Any]:
    return sa.select(*columns).select_from(_LIST_JOIN)


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


def _column(name: str, hide: bool) -> sa.ColumnElement[Any]:
    """A column of ``cards``; ``hide``: as SQLite's ``+cards.name``, the same value that no
    index serves (SQLite's documented way to keep the planner from starting there)."""
    column: sa.ColumnElement[Any] = cards.c[name]
    if hide:
        return sa.literal_column(f"+cards.{name}", column.type)
    return column


def _due(now: datetime, hide: bool = False) -> sa.ColumnElement[bool]:
    """Stored as active or completed, but its expiry time has come at ``now``."""
    expires_at = _column("expires_at", hide)
    return sa.and_(
        _column("state", hide).in_(_EXPIRING),
        expires_at.is_not(None),
        expires_at <= now,
    )


def state_column(now: datetime | None) -> sa.ColumnElement[Any]:
    """The card's state as a read at ``now`` shows it, labelled ``state``."""
    if now is None:
        return cards.c.state
    return sa.case((_due(now), sa.literal("expired")), else_=cards.c.state).label("state")


def _inactive(table: Any = cards) -> sa.ColumnElement[bool]:
    """``state <> 'active'`` with the constant written out: with ``deleted_at IS NULL``, the
    condition of step 9's partial indexes (store.schema.INACTIVE_WHERE), which SQLite uses only
    for a query whose WHERE carries the same terms."""
    column: sa.ColumnElement[Any] = table.c.state
    return column != sa.literal_column("'active'")


def _stored_state_is(
    state: str, hide: bool = False, constant: bool = False
) -> sa.ColumnElement[bool]:
    """The stored state is ``state`` (for one not active, with :func:`_inactive` too, unless
    hidden: a walk must not start from those indexes). ``constant`` (PostgreSQL): the state
    written out instead, and no :func:`_inactive`: the planner proves a partial index's
    condition from the constant itself, and would take the two terms for independent (a
    tenth of the state's cards expected)."""
    column = _column("state", hide)
    if constant:
        return column == sa.literal_column("'" + state.replace("'", "''") + "'")
    if state == "active" or hide:
        return column == state
    return sa.and_(column == state, _inactive())


def _state_is(
    state: str, now: datetime | None, hide: bool = False, constant: bool = False
) -> sa.ColumnElement[bool]:
    """``state_column(now) == state``, written so the state index still serves it."""
    column = _column("state", hide)
    if now is None or state not in ("expired", *_EXPIRING):
        return _stored_state_is(state, hide, constant)
    if state == "expired":
        return sa.or_(column == "expired", _due(now, hide))
    expires_at = _column("expires_at", hide)
    return sa.and_(
        _stored_state_is(state, hide, constant), sa.or_(expires_at.is_(None), expires_at > now)
    )


def uses_search_index(has_search_index: bool, text: str | None) -> bool:
    """Whether a search for this text runs on SQLite's FTS5 trigram index (3 characters or
    more: a trigram index cannot answer shorter texts, which scan instead)."""
    return bool(text) and has_search_index and len(text or "") >= 3


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` escaped (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(
    f: CardFilter,
    *,
    walk: bool = False,
    lookup: bool = False,
    state: bool = True,
    hide: bool = False,
) -> list[sa.ColumnElement[bool]]:
    """The conditions of ``f`` on live cards.

    ``walk``: for a page that walks a sort index and checks each card it reads: the search text
    by LIKE on the card's own row, not through SQLite's FTS5 match list (built whole before the
    first row). ``lookup``: for a page that looks a sparse filter's matches up: platforms and
    ready vouchers as lists of serials the database can start from. ``state=False`` leaves the
    state out (:func:`_state_branches`). ``hide`` (SQLite): no index of ``cards`` may serve the
    conditions, so the query starts from another table (the names' index, the FTS5 matches)."""
    where: list[sa.ColumnElement[bool]] = [cards.c.deleted_at.is_(None)]
    text = f.search
    if text and f.search_index and not walk:
        where.append(cards.c.holder_id.in_(_fts_matches(text)))
        if _fts_text(text) != text:
            where.append(cards.c.search_text.like(like_pattern(text), escape="\\"))
    elif text and _fts_text(text) != text:
        # An address: PostgreSQL's trigram index asked for the part that sets a card apart
        # (see _fts_text: the same cost there), the whole text checked on the row (written so
        # that no index serves it).
        where.append(cards.c.search_text.like(like_pattern(_fts_text(text)), escape="\\"))
        unindexed = cards.c.search_text.concat(sa.literal_column("''"))
        where.append(unindexed.like(like_pattern(text), escape="\\"))
    elif text:
        where.append(cards.c.search_text.like(like_pattern(text), escape="\\"))
    if f.template_id is not None:
        where.append(_column("template_id", hide) == f.template_id)
    if f.template_version is not None:
        where.append(_column("template_version", hide) == f.template_version)
    if f.platform is not None and lookup:
        saved = sa.select(card_platforms.c.serial).where(card_platforms.c.platform == f.platform)
        where.append(cards.c.serial.in_(saved))
    elif f.platform is not None:
        where.append(on_platform(f.platform))
    if state and f.state is not None:
        where.append(_state_is(f.state, f.now, hide))
    if f.min_stamps is not None:
        where.append(_column("stamps", hide) >= f.min_stamps)
    if f.max_stamps is not None:
        where.append(_column("stamps", hide) <= f.max_stamps)
    if f.has_vouchers_ready and lookup:
        ready_serials = sa.select(vouchers.c.serial).where(vouchers.c.redeemed_at.is_(None))
        where.append(cards.c.serial.in_(ready_serials))
    elif f.has_vouchers_ready is not None:
        ready = sa.exists().where(
            vouchers.c.serial == cards.c.serial, vouchers.c.redeemed_at.is_(None)
        )
        where.append(ready if f.has_vouchers_ready else ~ready)
    return where


def _fts_phrase(text: str) -> str:
    """An FTS5 trigram phrase: the exact substring, any case (quotes doubled inside)."""
    return '"' + text.replace('"', '""') + '"'


def _fts_text(text: str) -> str:
    """What SQLite's FTS5 index is asked for a search text: the text itself, or for an e-mail
    address the longest run of letters and digits before its ``@`` (3 or more). An address's
    trigrams after the ``@`` (``exa``, ``com``, ...) occur in nearly every card, and matching a
    phrase reads each of its trigrams' whole lists: the part before the ``@`` is what sets one
    card apart. Every card containing the text contains that run; the text itself is then
    checked on each candidate's row (LIKE, as a walking page does)."""
    local, at, _domain = text.partition("@")
    if not at:
        return text
    best = max(re.findall(r"[^\W_]+", local), key=len, default="")
    return best if len(best) >= 3 else text


def _fts_match(text: str) -> sa.ColumnElement[bool]:
    return sa.literal_column(SQLITE_SEARCH_TABLE).op("MATCH")(_fts_phrase(_fts_text(text)))


def _fts_matches(text: str) -> sa.Select[Any]:
    """The holder ids (= cards) whose search text contains ``text``'s FTS5 part
    (:func:`_fts_text`; the whole text, unless the caller checks it on the card's row)."""
    return sa.select(_FTS.c.rowid).where(_fts_match(text))


@dataclass(frozen=True)
class _Branch:
    """One alternative of the state filter: its conditions, and whether its cards are looked
    up (a small set from another index) rather than read in the list's order."""

    where: tuple[sa.ColumnElement[bool], ...]
    looked_up: bool = False


def _due_serials(dialect: str, now: datetime) -> sa.ColumnElement[bool]:
    """The cards whose expiry time has come at ``now`` but that are still stored as active or
    completed (the sweep writes them soon: few), from the expiry index. SQLite is told the
    index: without statistics it would take ``state IN (...)`` for selective and read every
    active card instead."""
    if dialect == "sqlite":
        # By rowid: the index holds it (no card read to find the serial, no look-up of the
        # serial's index afterwards).
        found: Any = sa.text(
            "SELECT rowid FROM cards INDEXED BY ix_cards_expiring "
            "WHERE state IN ('active', 'completed') AND expires_at <= :due_at"
        ).bindparams(sa.bindparam("due_at", now, type_=cards.c.expires_at.type))
        rowid = sa.column("rowid", sa.Integer)
        return sa.literal_column("cards.rowid", sa.Integer).in_(found.columns(rowid))
    return cards.c.serial.in_(sa.select(cards.c.serial).where(_due(now)))


def _state_branches(
    f: CardFilter, dialect: str, hide: bool = False, constant: bool = False
) -> list[_Branch]:
    """The state filter as disjoint alternatives, each a range of a live-cards index: a card
    reads as expired when stored so, or when its expiry time has come before the sweep wrote it
    (a small set, looked up and sorted)."""
    if f.state is None:
        return [_Branch(())]
    if f.state == "expired" and f.now is not None:
        return [
            _Branch((_stored_state_is("expired", hide, constant),)),
            _Branch((_due_serials(dialect, f.now),), looked_up=True),
        ]
    return [_Branch((_state_is(f.state, f.now, hide, constant),))]


def _holder_in_state(state: str) -> sa.ColumnElement[bool]:
    """The holder (of the outer query) has a live card stored in ``state`` (not active): one
    probe of step 9's (state, holder_id) index, answered from the index alone."""
    probe = cards.alias("probe")
    return sa.exists().where(
        probe.c.holder_id == holders.c.id,
        probe.c.state == state,
        _inactive(probe),
        probe.c.deleted_at.is_(None),
    )


def _sort_column(key: str) -> sa.Column[Any]:
    """The column of a sort key."""
    columns: dict[str, sa.Column[Any]] = {
        "created_at": cards.c.created_at,
        "last_stamp_at": cards.c.last_stamp_at,
        "stamps": cards.c.stamps,
        "serial": cards.c.serial,
        "name": holders.c.name,
    }
    return columns[key]


def _tie(key: str) -> sa.Column[Any]:
    """What breaks ties of a sort key: the serial, or for names the holder's id (one holder
    per card), so that the index on (name, id) orders the whole list, NULL names included."""
    return holders.c.id if key == "name" else cards.c.serial


#: Sort keys whose column may be NULL (sorted last in both directions).
NULLABLE_SORT_KEYS = ("last_stamp_at", "name")


def _order(key: str, descending: bool) -> list[sa.ColumnElement[Any]]:
    """The list's order, for offset pages (keyset pages walk it in steps: :func:`_steps`)."""
    column = _sort_column(key)
    # NULLS LAST only where NULLs exist: on a NOT NULL column it would stop PostgreSQL from
    # walking the index backwards (DESC NULLS LAST is not the index's order), forcing a sort.
    nullable = key in NULLABLE_SORT_KEYS
    if descending:
        primary = column.desc().nulls_last() if nullable else column.desc()
        tie = _tie(key).desc()
    else:
        primary = column.asc().nulls_last() if nullable else column.asc()
        tie = _tie(key).asc()
    return [primary] if key == "serial" else [primary, tie]


@dataclass(frozen=True)
class Keyset:
    """Where a keyset page starts in the list sorted by ``key``: after the row (``value``,
    ``serial``), or at the start of the list (``serial`` None)."""

    key: str
    descending: bool
    value: Any = None
    serial: str | None = None


def after_position(key: str, descending: bool, value: Any, serial: str) -> Keyset:
    """The rows that sort after the row (``value``, ``serial``) in the list's order."""
    return Keyset(key, descending, value, serial)


def from_start(key: str, descending: bool) -> Keyset:
    """The whole list, from its first row."""
    return Keyset(key, descending)


@dataclass(frozen=True)
class _Step:
    """Part of the list after a position, in order: conditions, ORDER BY, and the names of the
    ordering columns (to merge the state's alternatives)."""

    where: tuple[sa.ColumnElement[bool], ...]
    order: tuple[sa.ColumnElement[Any], ...]
    names: tuple[tuple[str, bool], ...]


def _unindexed(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """The same values, hidden from the planner (no index on it is used): a page that looks a
    sparse filter's matches up and sorts them must not walk the sort index instead."""
    if dialect == "sqlite":
        # SQLite's unary + is the documented way; it changes no value.
        return sa.literal_column(f"+{column.table.name}.{column.name}", column.type)
    if isinstance(column.type, sa.String):
        return column.concat(sa.literal_column("''"))
    if isinstance(column.type, (sa.Integer, sa.BigInteger)):
        return column + sa.literal_column("0")
    return column + sa.literal_column("interval '0 s'")


def _steps(ks: Keyset, dialect: str, *, looked_up: bool) -> list[_Step]:
    """The list after the position as steps run in order until the page is full. Each step
    bounds the key as a row value with a plain bound, which both databases answer as one range
    of the (key, tie) index at any depth. A nullable key's NULLs sort last in both directions:
    first the non-NULL rows after the position, then the NULL rows by the tie-breaker."""
    column: sa.ColumnElement[Any] = _sort_column(ks.key)
    tie: sa.ColumnElement[Any] = _tie(ks.key)
    tie_name = "holder_id" if ks.key == "name" else "serial"
    if looked_up:
        column, tie = _unindexed(_sort_column(ks.key), dialect), _unindexed(_tie(ks.key), dialect)
    desc = ks.descending
    by_tie = tie.desc() if desc else tie.asc()
    by_key = column.desc() if desc else column.asc()

    def later(a: Any, b: Any) -> sa.ColumnElement[bool]:
        return a < b if desc else a > b  # type: ignore[no-any-return]

    if ks.key == "serial":
        start = () if ks.serial is None else (later(tie, sa.literal(ks.serial, tie.type)),)
        return [_Step(start, (by_tie,), (("serial", desc),))]
    nullable = ks.key in NULLABLE_SORT_KEYS
    nulls = _Step((column.is_(None),), (by_tie,), ((tie_name, desc),))
    names = ((ks.key, desc), (tie_name, desc))
    if ks.serial is None:
        first = _Step((column.is_not(None),) if nullable else (), (by_key, by_tie), names)
        return [first, nulls] if nullable else [first]
    if ks.key == "name":
        # The cursor names the card; its holder's id is the tie-breaker (one index lookup).
        position_tie: Any = (
            sa.select(cards.c.holder_id).where(cards.c.serial == ks.serial).scalar_subquery()
        )
    else:
        position_tie = sa.literal(ks.serial, cards.c.serial.type)
    if ks.value is None:  # inside the NULLs at the end
        where = [column.is_(None), later(tie, position_tie)]
        if ks.key == "name":
            # The same bound on the cards' side of the join: PostgreSQL may merge-join the
            # holders with the cards' holder index, and would read that index from its start.
            card_tie = cards.c.holder_id
            where.append(
                later(_unindexed(card_tie, dialect) if looked_up else card_tie, position_tie)
            )
        return [_Step(tuple(where), (by_tie,), nulls.names)]
    # Typed literals: the value binds as the column does (SQLite's text timestamps).
    typed = sa.literal(ks.value, _sort_column(ks.key).type)
    bound = column <= typed if desc else column >= typed
    if ks.key == "name":
        # Not a row value: its tie-breaker is a subquery, and PostgreSQL then guesses the
        # range holds a few hundred rows (instead of reading the histogram) and sorts it.
        after = sa.or_(later(column, typed), later(tie, position_tie))
    else:
        after = later(sa.tuple_(column, tie), sa.tuple_(typed, position_tie))
    rest = _Step((after, bound), (by_key, by_tie), names)
    return [rest, nulls] if nullable else [rest]


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
    """One page of the issued-cards list. (Offset pages read platforms and ready vouchers
    afterwards for the page's serials: as subqueries here PostgreSQL would run them for every
    row an OFFSET skips too.)"""
    return (
        _select_cards(
            cards.c.serial,
            cards.c.holder_id,
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


#: A filter matching fewer live cards than this is "sparse": its pages look the matches up
#: and sort them (at most this many rows) instead of walking a sort index past the cards that
#: do not match (about page size x cards / matches rows). The balance: a card read on a walk
#: of the cards' own index costs a few times less than a match looked up (SQLite: a card row
#: checked by LIKE, 0.5 us, against an FTS5 match found, fetched and sorted, 5 us), so at a
#: million cards and pages of 50 both ways stay within a few milliseconds; the count stops at
#: this many.
SPARSE_MATCHES = 4000
#: The same for pages sorted by name, whose walk reads the names' index and looks each card
#: up (several times a card row's cost): balanced at more matches.
SPARSE_NAME_MATCHES = 10_000


def _only_state_and_template(f: CardFilter) -> bool:
    """Whether ``f`` filters by nothing but a state and a template."""
    others = (
        f.search,
        f.template_version,
        f.platform,
        f.min_stamps,
        f.max_stamps,
        f.has_vouchers_ready,
    )
    return not any(x is not None and x != "" for x in others)


def _index_ordered(f: CardFilter, sort_key: str) -> bool:
    """Whether every page of ``f`` in this order is a range of one index: no filter, only a
    state and a template in the default order (step 8's live-cards indexes), only a state
    other than active in the orders of step 9's indexes (stamps, last stamp, serial), or only
    a template by stamps or last stamp (step 10's)."""
    if not _only_state_and_template(f):
        return False
    filtered = f.state is not None or f.template_id is not None
    if sort_key == "created_at" or not filtered:
        return True
    if f.state is None:
        return sort_key in ("stamps", "last_stamp_at")
    return f.template_id is None and f.state != "active" and sort_key != "name"


def _probes_holders(f: CardFilter, sort_key: str) -> bool:
    """Whether a page by name walks the names' index and probes each holder in step 9's
    (state, holder_id) index: only a state other than active (a few names in a hundred match,
    each probe an index lookup: no card read until one matches)."""
    return (
        sort_key == "name"
        and _only_state_and_template(f)
        and f.template_id is None
        and f.state not in (None, "active")
    )


def count_matches(conn: Connection, f: CardFilter, *, limit: int | None) -> int:
    """How many live cards match ``f``, counted up to ``limit`` (None: all)."""
    query: sa.Select[Any] = sa.select(sa.literal_column("1"))
    hide = conn.dialect.name == "sqlite"
    if f.search and f.search_index:
        # From the FTS5 match list, read lazily (a limit stops it early), each match checked
        # against its card; not ``holder_id IN (matches)``, which builds the whole list first.
        rest = dataclasses.replace(f, search=None)
        query = query.select_from(_FTS.join(cards, cards.c.holder_id == _FTS.c.rowid)).where(
            _fts_match(f.search), *_where(rest, walk=True, hide=hide)
        )
        if _fts_text(f.search) != f.search:
            query = query.where(cards.c.search_text.like(like_pattern(f.search), escape="\\"))
    elif f.platform is not None and hide:
        # From the platform's index: a platform few cards are saved in counts those cards
        # instead of checking every card.
        rest = dataclasses.replace(f, platform=None)
        query = query.select_from(
            card_platforms.join(cards, cards.c.serial == card_platforms.c.serial)
        ).where(card_platforms.c.platform == f.platform, *_where(rest, walk=True, hide=hide))
    else:
        query = query.select_from(cards).where(*_where(f, walk=True))
    if limit is not None:
        query = query.limit(limit)
    return int(conn.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0)


#: PostgreSQL, for the rest of the transaction (a read: the page is its last statement):
#: index paths joined by nested loops.
_NESTED_LOOPS = sa.text(
    "SELECT set_config('enable_seqscan', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)


#: PostgreSQL, for the rest of the transaction: plans that read in the index's order preferred.
#: No parallel workers: they would walk the names three at a time, each past its own matches.
_NO_SORT = sa.text(
    "SELECT set_config('enable_sort', 'off', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)


def keyset_rows(conn: Connection, f: CardFilter, ks: Keyset, limit: int) -> list[Mapping[Any, Any]]:
    """Up to ``limit`` rows of the list after the position, with ``vouchers_ready`` and
    ``on_<platform>`` (correlated subqueries: a keyset page reads only its own rows).

    Each step is one index range of at most ``limit`` rows when the filter is served by an
    index in this order (:func:`_index_ordered`). Otherwise a sparse filter (fewer matches than
    :data:`SPARSE_MATCHES`) is looked up and sorted, a dense one walks the sort index checking
    each card: SQLite counts the matches up to that many (it has no statistics unless someone
    analyzed the store); PostgreSQL chooses from its statistics, except for pages by name,
    where it prices the walk (the names' index, a card looked up for each) far below its cost
    and would walk past tens of thousands of names for a rare template: its estimate of the
    matches decides instead."""
    dialect = conn.dialect.name
    ordered = _index_ordered(f, ks.key)
    probing = _probes_holders(f, ks.key)
    looked_up = False
    if not ordered and not probing and (dialect == "sqlite" or ks.key == "name"):
        looked_up = _sparse(conn, f, ks.key == "name")
    if not ordered and dialect == "postgresql" and ks.key == "name":
        # The way is chosen: index paths joined by nested loops, not a hash of every holder.
        conn.execute(_NESTED_LOOPS)
    if probing and dialect == "postgresql":
        # The walk of the names: otherwise PostgreSQL, which underestimates the state's cards,
        # starts from them (every one joined with its holder) and sorts.
        conn.execute(_NO_SORT)
    if f.search and dialect == "postgresql":
        # Prepared statements switch to a generic plan after five runs; one plan cannot fit
        # both "ada" (10% of the cards) and a full email (one card). Plan each for its text.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    if dialect == "postgresql" and looked_up:
        # The matches first, whole (few), then their holders by id, sorted.
        matching = (
            sa.select(cards.c.serial)
            .where(*_where(f, lookup=True))
            .cte("matching")
            .prefix_with("MATERIALIZED")
        )
        common: list[sa.ColumnElement[bool]] = [cards.c.serial.in_(sa.select(matching.c.serial))]
        branches = [_Branch(())]
    else:
        # SQLite walking with a dense filter: its planner, without statistics, takes
        # ``state = ?`` for selective and would read every such card and sort them.
        hide = dialect == "sqlite" and not ordered and not looked_up
        common = _where(f, walk=not looked_up, lookup=looked_up, state=False, hide=hide)
        branches = _state_branches(f, dialect, hide, constant=probing and dialect != "sqlite")
        if probing and f.state is not None and dialect == "sqlite":
            # The names' index walked, each holder probed before its card is read (the
            # card's own state hidden from SQLite: the walk must start from the names).
            # PostgreSQL's join probes the (state, holder_id) index itself (sorts priced out).
            probe = _holder_in_state(f.state)
            branches = [
                b if b.looked_up else dataclasses.replace(b, where=(*b.where, probe))
                for b in branches
            ]
    # A looked-up branch of a walking page: no card index but the one of its set (SQLite).
    hidden = _where(f, lookup=True, state=False, hide=dialect == "sqlite")
    walk_steps = _steps(ks, dialect, looked_up=looked_up)
    lookup_steps = _steps(ks, dialect, looked_up=True)
    rows: list[Mapping[Any, Any]] = []
    for i, step in enumerate(walk_steps):
        wanted = limit - len(rows)
        if wanted <= 0:
            break
        parts = []
        for branch in branches:
            own = lookup_steps[i] if branch.looked_up else step
            where = [*(hidden if branch.looked_up and not looked_up else common), *branch.where]
            if branch.looked_up or looked_up:
                parts.append(_looked_up_page(where, own, ks.key == "name", wanted, f.now))
            else:
                parts.append(
                    _summary_select([*where, *own.where], own.order, 0, wanted, f.now).add_columns(
                        _READY, *_ON_PLATFORM
                    )
                )
        if len(parts) == 1:
            query = parts[0]
        else:
            # Each alternative at most ``wanted`` rows, merged by the database (its collation
            # decides the order, as in every other page).
            merged = sa.union_all(*(sa.select(p.subquery()) for p in parts)).subquery()
            order = [merged.c[n].desc() if d else merged.c[n].asc() for n, d in step.names]
            query = sa.select(merged).order_by(*order).limit(wanted)
        rows += conn.execute(query).mappings()
    return rows


def _looked_up_page(
    where: Sequence[sa.ColumnElement[bool]],
    step: _Step,
    by_name: bool,
    limit: int,
    now: datetime | None,
) -> sa.Select[Any]:
    """A step of a page that looks its matches up: the serials of the page first (the matches
    sorted by their own columns, at most ``limit`` kept), then only those rows joined with their
    holder, template, platforms and vouchers. In one query the databases would join every
    match and (SQLite) compute each row's subqueries before sorting them."""
    source: Any = cards.join(holders, holders.c.id == cards.c.holder_id) if by_name else cards
    chosen = (
        sa.select(cards.c.serial)
        .select_from(source)
        .where(*where, *step.where)
        .order_by(*step.order)
        .limit(limit)
        .correlate(None)
    )
    return _summary_select([cards.c.serial.in_(chosen)], step.order, 0, limit, now).add_columns(
        _READY, *_ON_PLATFORM
    )


#: Recent decisions sparse or dense, per store and filter: the pages of one list come one
#: after the other, and a filter's share of the cards does not change in a minute. A stale one
#: costs time, never a wrong row (both ways read the same rows).
_DECIDED: dict[tuple[Any, ...], tuple[float, bool]] = {}
_DECIDED_FOR_S = 60.0


def _sparse(conn: Connection, f: CardFilter, by_name: bool) -> bool:
    """Whether fewer live cards than the threshold match ``f``: SQLite counts them up to it
    (it has no statistics unless someone analyzed the store), PostgreSQL estimates them."""
    sparse = SPARSE_NAME_MATCHES if by_name else SPARSE_MATCHES
    key = (id(conn.engine), str(conn.engine.url), dataclasses.replace(f, now=None), sparse)
    now = time.monotonic()
    found = _DECIDED.get(key)
    if found is not None and now - found[0] < _DECIDED_FOR_S:
        return found[1]
    if conn.dialect.name == "sqlite":
        decided = count_matches(conn, f, limit=sparse) < sparse
    else:
        decided = _estimated_matches(conn, f) < sparse
    if len(_DECIDED) > 500:
        _DECIDED.clear()
    _DECIDED[key] = (now, decided)
    return decided


class _Explain(Executable, ClauseElement):
    """PostgreSQL's ``EXPLAIN (FORMAT JSON)`` of a query: its plan, not its rows."""

    inherit_cache = False

    def __init__(self, query: sa.Select[Any]) -> None:
        self.query = query


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.query, **kw))


def _estimated_matches(conn: Connection, f: CardFilter) -> float:
    """PostgreSQL's estimate of the live cards matching ``f``, from its statistics (one plan,
    no rows read)."""
    query: sa.Select[Any] = (
        sa.select(sa.literal_column("1")).select_from(cards).where(*_where(f, walk=True))
    )
    found: Any = conn.execute(_Explain(query)).scalar()
    plan = json.loads(found) if isinstance(found, str) else found
    return float(plan[0]["Plan"]["Plan Rows"])


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
    to ``cap`` when given: ``cap + 1`` means "more than cap").

    ``after`` (a keyset from :func:`after_position`): the page after a position, ``limit`` rows
    with no count (``total`` is -1) at any depth: pass ``limit + 1`` to learn whether more
    follow. The first page (offset 0) is read the same way, from the start of the list; deeper
    offset pages read and skip the rows before them."""
    if after is not None or offset == 0:
        rows = keyset_rows(conn, f, after or from_start(sort_key, descending), limit)
        found = {r["serial"]: {p for p in PLATFORMS if r[f"on_{p}"]} for r in rows}
        ready = {r["serial"]: int(r["vouchers_ready"]) for r in rows if r["vouchers_ready"]}
        if after is not None:
            total = -1
        elif len(rows) < limit:
            total = len(rows)  # the last page: no count needed
        else:
            total = count_matches(conn, f, limit=None if cap is None else cap + 1)
        return CardRows(total, rows, found, ready)
    where = _where(f)
    order = _order(sort_key, descending)
    if f.search and conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    rows = list(conn.execute(_summary_select(where, order, offset, limit, f.now)).mappings())
    if len(rows) < limit and rows:
        total = offset + len(rows)  # the last page: no count needed
    else:
        total = count_matches(conn, f, limit=None if cap is None else cap + 1)
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
        _select_cards(
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
