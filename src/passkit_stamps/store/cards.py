"""Cards, their holders, vouchers and platforms: the SQL of reading and writing one card.

Every function here (as in every module of this package) takes an open synchronous connection
and the caller owns the transaction, so a service operation composes several of them into one
atomic unit run by ``Store.run_write``. This package is the one way into the database.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import Card, CardState, Holder, Voucher
from . import changes, codec
from .schema import card_platforms, cards, holders, templates, utc, vouchers

# -- cards ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCard:
    """A card as stored, with what the model does not carry."""

    card: Card
    holder_id: int
    change_tag: int
    updated_at: datetime
    deleted_at: datetime | None
    #: Where the card is saved and its template's content digest (read by :func:`load_card`).
    platforms: frozenset[str] | None = None
    template_digest: str | None = None
    #: Whether the card's last change was notified (a silent one's pass has no changeMessage),
    #: and the id of the message on the card (Google's addMessage).
    notified: bool = False
    message_id: str | None = None
    #: When the card's last notified change was made (its ``updated_at``); None when none was
    #: since the column exists. Silent changes after it leave it alone.
    notified_at: datetime | None = None


PLATFORMS = ("web", "apple", "google")
_CARD_COLUMNS = (*cards.c, holders.c.name, holders.c.email, holders.c.phone, holders.c.birthday)
_VOUCHER_KEYS = ("code", "kind", "title", "description", "issued_at", "redeemed_at", "reward_at")


#: cards ⋈ holders ⋈ templates (the card's own version): the join every card listing reads.
CARD_HOLDER_TEMPLATE = cards.join(holders, holders.c.id == cards.c.holder_id).join(
    templates,
    sa.and_(
        templates.c.id == cards.c.template_id,
        templates.c.version == cards.c.template_version,
    ),
)


def select_cards(*columns: Any) -> sa.Select[Any]:
    """``SELECT columns FROM cards ⋈ holders ⋈ templates`` (see :data:`CARD_HOLDER_TEMPLATE`)."""
    return sa.select(*columns).select_from(CARD_HOLDER_TEMPLATE)


def on_platform(platform: str) -> sa.Exists:
    """Whether the card (of the outer query) is saved on ``platform``."""
    return sa.exists().where(
        card_platforms.c.serial == cards.c.serial, card_platforms.c.platform == platform
    )


def _card_select() -> sa.Select[Any]:
    return sa.select(*_CARD_COLUMNS).join(holders, holders.c.id == cards.c.holder_id)


def _load_card_query() -> sa.Select[Any]:
    flags = [on_platform(p).label(f"on_{p}") for p in PLATFORMS]
    return (
        sa.select(
            *_CARD_COLUMNS,
            templates.c.content_digest.label("template_digest"),
            *flags,
            *(vouchers.c[k].label(f"v_{k}") for k in _VOUCHER_KEYS),
        )
        .select_from(CARD_HOLDER_TEMPLATE.outerjoin(vouchers, vouchers.c.serial == cards.c.serial))
        .where(cards.c.serial == sa.bindparam("serial"))
        .order_by(vouchers.c.position)
    )


# Built once: constructing this statement per call cost more than running it on SQLite.
_LOAD_CARD = _load_card_query()
_LOAD_CARD_FOR_UPDATE = _LOAD_CARD.with_for_update(of=cards)


def load_card(conn: Connection, serial: str, *, for_update: bool = False) -> StoredCard | None:
    """The card with this serial (deleted ones included), its vouchers, platforms and template
    digest in ONE query (each statement is a round trip), locking the card row when
    ``for_update`` (PostgreSQL: other writers of this card wait until this transaction ends)."""
    locking = for_update and conn.dialect.name == "postgresql"
    query = _LOAD_CARD_FOR_UPDATE if locking else _LOAD_CARD
    rows = list(conn.execute(query, {"serial": serial}).mappings())
    if not rows:
        return None
    found = tuple(
        codec.decode_voucher({k: r[f"v_{k}"] for k in _VOUCHER_KEYS})
        for r in rows
        if r["v_code"] is not None
    )
    return dataclasses.replace(
        _stored(rows[0], found),
        platforms=frozenset(p for p in PLATFORMS if rows[0][f"on_{p}"]),
        template_digest=rows[0]["template_digest"],
    )


def _stored(row: Mapping[Any, Any], card_vouchers: tuple[Voucher, ...]) -> StoredCard:
    updated_at = utc(row["updated_at"])
    assert updated_at is not None
    return StoredCard(
        card=codec.decode_card(row, card_vouchers),
        holder_id=row["holder_id"],
        change_tag=row["change_tag"],
        updated_at=updated_at,
        deleted_at=utc(row["deleted_at"]),
        notified=bool(row["notified"]),
        message_id=row["message_id"],
        notified_at=utc(row["notified_at"]),
    )


def load_cards(conn: Connection, serials: Sequence[str]) -> list[StoredCard]:
    """Several cards with their vouchers, in the order of ``serials`` (missing ones skipped)."""
    if not serials:
        return []
    rows = (conn.execute(_card_select().where(cards.c.serial.in_(serials)))).mappings()
    by_serial = {row["serial"]: row for row in rows}
    found = load_vouchers(conn, list(by_serial))
    return [_stored(by_serial[s], found.get(s, ())) for s in serials if s in by_serial]


def load_vouchers(conn: Connection, serials: Sequence[str]) -> dict[str, tuple[Voucher, ...]]:
    if not serials:
        return {}
    query = (
        sa.select(vouchers)
        .where(vouchers.c.serial.in_(serials))
        .order_by(vouchers.c.serial, vouchers.c.position)
    )
    grouped: dict[str, list[Voucher]] = defaultdict(list)
    for row in (conn.execute(query)).mappings():
        grouped[row["serial"]].append(codec.decode_voucher(row))
    return {serial: tuple(found) for serial, found in grouped.items()}


def insert_holder(conn: Connection, holder: Holder, now: datetime) -> int:
    result = conn.execute(
        holders.insert().values(**holder_values(holder), created_at=now).returning(holders.c.id)
    )
    return int(result.scalar_one())


def update_holder(conn: Connection, holder_id: int, holder: Holder) -> None:
    conn.execute(holders.update().where(holders.c.id == holder_id).values(**holder_values(holder)))


def holder_values(holder: Holder) -> dict[str, Any]:
    return {
        "name": holder.name,
        "email": holder.email,
        "phone": holder.phone,
        "birthday": holder.birthday,
    }


def insert_card(
    conn: Connection, card: Card, holder_id: int, *, change_tag: int, now: datetime
) -> None:
    row = codec.card_row(card, holder_id)
    conn.execute(cards.insert().values(**row, change_tag=change_tag, updated_at=now))
    write_vouchers(conn, card.serial, (), card.vouchers)


def update_card(
    conn: Connection,
    old: Card,
    new: Card,
    holder_id: int,
    *,
    change_tag: int | None = None,
    now: datetime,
    previous: datetime,
    deleted_at: datetime | None = None,
    notified: bool = False,
) -> int:
    """Write the card's new version and return its change tag: ``change_tag``, or when None
    this transaction's (:mod:`.changes`; on PostgreSQL made by the UPDATE itself, so it costs
    no round trip of its own). Its ``updated_at`` (Last-Modified) is ``now`` or, when the clock
    has not moved past ``previous`` (the stored ``updated_at``, read under the card's lock) by a
    step, one step after it (:func:`.changes.next_change_time`)."""
    row = codec.card_row(new, holder_id)
    before = codec.card_row(old, holder_id)
    # Only the columns whose values changed: SQLite rewrites an index's entry whenever one of
    # its columns (or of its WHERE) is in the SET clause, even to the same value, so a stamp
    # (stamps, last stamp) leaves the indexes of state, template, creation and expiry alone.
    # The serial and holder never change; the search text only with the holder (leaving it out
    # of SET also spares the search trigger).
    values: dict[str, Any] = {
        key: value for key, value in row.items() if key not in _NEVER_SET and value != before[key]
    }
    if new.holder != old.holder:
        values["search_text"] = row["search_text"]
    values["b_serial"] = row["serial"]
    changed_at = changes.next_change_time(previous, now)
    values.update(updated_at=changed_at, notified=notified)
    if notified:
        # The notified change's own time: a device holding an older Last-Modified gets its
        # changeMessage even after silent changes (web service, docs/push.md).
        values["notified_at"] = changed_at
    if deleted_at is not None:
        values["deleted_at"] = deleted_at
    # The SET clause comes from the parameter names; SQLAlchemy caches the compiled form per
    # name set, so no statement is built per call.
    if change_tag is None and conn.dialect.name == "postgresql":
        tag = int(conn.execute(_UPDATE_CARD_TAGGED, values).scalar_one())
    else:
        tag = changes.next_change_tag(conn) if change_tag is None else change_tag
        conn.execute(_UPDATE_CARD, {**values, "change_tag": tag})
    write_vouchers(conn, new.serial, old.vouchers, new.vouchers)
    return tag


#: Columns update_card never sets from the row (the serial is the key; the search text is set
#: when the holder changed).
_NEVER_SET = frozenset({"serial", "holder_id", "search_text"})
_UPDATE_CARD = cards.update().where(cards.c.serial == sa.bindparam("b_serial"))
_UPDATE_CARD_TAGGED = _UPDATE_CARD.values(change_tag=changes.PG_TAG).returning(cards.c.change_tag)
_UPDATE_VOUCHER = vouchers.update().where(
    vouchers.c.serial == sa.bindparam("b_serial"), vouchers.c.code == sa.bindparam("b_code")
)


def write_vouchers(
    conn: Connection, serial: str, old: Sequence[Voucher], new: Sequence[Voucher]
) -> None:
    """Insert the vouchers new on the card and update the ones that changed."""
    before = {v.code: v for v in old}
    inserts = [codec.voucher_row(serial, i, v) for i, v in enumerate(new) if v.code not in before]
    if inserts:
        conn.execute(vouchers.insert(), inserts)
    changed = [
        {
            "b_serial": serial,
            "b_code": v.code,
            "redeemed_at": v.redeemed_at,
            "title": v.title,
            "description": v.description,
        }
        for v in new
        if v.code in before and before[v.code] != v
    ]
    if changed:
        conn.execute(_UPDATE_VOUCHER, changed)


def delete_vouchers(conn: Connection, serial: str) -> None:
    conn.execute(vouchers.delete().where(vouchers.c.serial == serial))


# -- platforms ------------------------------------------------------------------------------------


def platforms(conn: Connection, serials: Sequence[str]) -> dict[str, set[str]]:
    """Where each card is saved."""
    if not serials:
        return {}
    query = sa.select(card_platforms.c.serial, card_platforms.c.platform).where(
        card_platforms.c.serial.in_(serials)
    )
    found: dict[str, set[str]] = defaultdict(set)
    for serial, platform in conn.execute(query):
        found[serial].add(platform)
    return found


def set_platform(conn: Connection, serial: str, platform: str, added: bool, now: datetime) -> bool:
    """Add or remove one platform of a card; whether anything changed."""
    if added:
        exists = conn.scalar(
            sa.select(sa.literal(1)).where(
                card_platforms.c.serial == serial, card_platforms.c.platform == platform
            )
        )
        if exists:
            return False
        conn.execute(card_platforms.insert().values(serial=serial, platform=platform, added_at=now))
        return True
    result = conn.execute(
        card_platforms.delete().where(
            card_platforms.c.serial == serial, card_platforms.c.platform == platform
        )
    )
    return bool(result.rowcount)


# -- many cards at once (template design updates, migrations) ----------------------------------


def template_cards_where(template_id: str, version: int) -> tuple[sa.ColumnElement[bool], ...]:
    """The live cards of one template version."""
    return (
        cards.c.template_id == template_id,
        cards.c.template_version == version,
        cards.c.deleted_at.is_(None),
    )


def lock_template_cards(conn: Connection, template_id: str, version: int) -> list[str]:
    """The serials of the live cards of one template version, locked on PostgreSQL."""
    locked = sa.select(cards.c.serial).where(*template_cards_where(template_id, version))
    if conn.dialect.name == "postgresql":
        locked = locked.with_for_update()
    return list(conn.scalars(locked).all())


def touch_template_cards(
    conn: Connection, template_id: str, version: int, *, change_tag: int, now: datetime
) -> None:
    """Move the change tag of every live card of one template version; their one new
    ``updated_at`` is after every one of theirs (the cards are locked by the caller)."""
    where = template_cards_where(template_id, version)
    changed_at = changes.next_template_change_time(conn, where, now)
    conn.execute(cards.update().where(*where).values(change_tag=change_tag, updated_at=changed_at))


def lock_cards_to_migrate(
    conn: Connection, template_id: str, to_version: int, from_version: int | None
) -> list[str]:
    """Serials of the active and completed cards of ``template_id`` not on ``to_version`` (only
    those on ``from_version`` when given), by serial, locked on PostgreSQL."""
    where = [
        cards.c.template_id == template_id,
        cards.c.template_version != to_version,
        cards.c.deleted_at.is_(None),
        cards.c.state.in_([CardState.ACTIVE.value, CardState.COMPLETED.value]),
    ]
    if from_version is not None:
        where.append(cards.c.template_version == from_version)
    query = sa.select(cards.c.serial).where(*where).order_by(cards.c.serial)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(conn.scalars(query).all())


def chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
