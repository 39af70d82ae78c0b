"""The SQL the service runs, one small function per question or change.

Every function takes an open (synchronous) connection and the caller owns the transaction, so a
service operation composes several of them into one atomic unit run by ``Store.run_write``.
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

from ..model import Card, Holder, Voucher
from . import codec
from .schema import (
    card_platforms,
    cards,
    counters,
    events,
    holders,
    idempotency,
    images,
    notifications,
    outbox,
    templates,
    utc,
    vouchers,
)

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


PLATFORMS = ("web", "apple", "google")
_CARD_COLUMNS = (*cards.c, holders.c.name, holders.c.email, holders.c.phone, holders.c.birthday)
_VOUCHER_KEYS = ("code", "kind", "title", "description", "issued_at", "redeemed_at", "reward_at")


def _card_select() -> sa.Select[Any]:
    return sa.select(*_CARD_COLUMNS).join(holders, holders.c.id == cards.c.holder_id)


def _load_card_query() -> sa.Select[Any]:
    flags = [
        sa.exists()
        .where(card_platforms.c.serial == cards.c.serial, card_platforms.c.platform == p)
        .label(f"on_{p}")
        for p in PLATFORMS
    ]
    return (
        sa.select(
            *_CARD_COLUMNS,
            templates.c.content_digest.label("template_digest"),
            *flags,
            *(vouchers.c[k].label(f"v_{k}") for k in _VOUCHER_KEYS),
        )
        .join(holders, holders.c.id == cards.c.holder_id)
        .join(
            templates,
            sa.and_(
                templates.c.id == cards.c.template_id,
                templates.c.version == cards.c.template_version,
            ),
        )
        .outerjoin(vouchers, vouchers.c.serial == cards.c.serial)
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
    change_tag: int,
    now: datetime,
    deleted_at: datetime | None = None,
) -> None:
    values = codec.card_row(new, holder_id)
    values["b_serial"] = values.pop("serial")
    del values["holder_id"]  # never changes
    if new.holder == old.holder:
        # Unchanged: leaving it out of SET spares its index entries and the search trigger.
        del values["search_text"]
    values.update(change_tag=change_tag, updated_at=now)
    if deleted_at is not None:
        values["deleted_at"] = deleted_at
    # The SET clause comes from the parameter names; SQLAlchemy caches the compiled form per
    # name set, so no statement is built per call.
    conn.execute(_UPDATE_CARD, values)
    write_vouchers(conn, new.serial, old.vouchers, new.vouchers)


_UPDATE_CARD = cards.update().where(cards.c.serial == sa.bindparam("b_serial"))
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


def touch_card(conn: Connection, serial: str, *, change_tag: int, now: datetime) -> None:
    """Move a card's change tag without changing its data (the pass content changed)."""
    conn.execute(
        cards.update().where(cards.c.serial == serial).values(change_tag=change_tag, updated_at=now)
    )


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


# -- templates ------------------------------------------------------------------------------------


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


# -- change tag, journal, outbox, budget --------------------------------------------------


def next_change_tag(conn: Connection) -> int:
    """The next pass change tag. Take it LAST in a transaction: on PostgreSQL the counter row
    stays locked until commit, which orders commits by tag (and a late lock holds it briefly)."""
    return int(conn.execute(_NEXT_CHANGE_TAG).scalar_one())


_NEXT_CHANGE_TAG = (
    counters.update()
    .where(counters.c.name == "change_tag")
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)


def current_change_tag(conn: Connection) -> int:
    value = conn.scalar(sa.select(counters.c.value).where(counters.c.name == "change_tag"))
    return int(value or 0)


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Append journal rows; their sequence ids in order."""
    if not rows:
        return []
    return [int(i) for i in conn.execute(_INSERT_EVENTS, list(rows)).scalars()]


_INSERT_EVENTS = events.insert().returning(events.c.id, sort_by_parameter_order=True)


def insert_outbox(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(outbox.insert(), list(rows))


def notifications_since(conn: Connection, serial: str, since: datetime) -> int:
    count = conn.scalar(
        sa.select(sa.func.count())
        .select_from(notifications)
        .where(notifications.c.serial == serial, notifications.c.at > since)
    )
    return int(count or 0)


def spend_notification(conn: Connection, serial: str, now: datetime, reason: str) -> None:
    conn.execute(notifications.insert().values(serial=serial, at=now, reason=reason))


# -- idempotency ----------------------------------------------------------------------------------


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


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` escaped (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
