"""Reading cards: the details panel, the customer's card page, the issued-cards list (search,
filters, sort, pages), a card's history and the journal."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from ..engine import EventType, Platform, card_at
from ..errors import CardInputError, CardNotFoundError
from ..model import CardState, localized, progress
from ..store import cards as store_cards
from ..store import codec
from ..store import journal as store_journal
from ..store import search as store_search
from ..store.schema import utc
from . import cursors
from .checks import aware, check_page, check_serial, enum_value, search_text
from .core import ServiceCore, entry
from .results import CardDetails, CardSummary, JournalEntry, Page

SORT_KEYS = store_search.SORT_KEYS


class CardReads(ServiceCore):
    async def get_card(self, serial: str) -> CardDetails:
        """The card details panel. Raises CardNotFoundError (unknown or deleted)."""
        check_serial(serial)

        def body(conn: Connection) -> CardDetails:
            stored = store_cards.load_card(conn, serial)
            if stored is None or stored.deleted_at is not None:
                raise CardNotFoundError(f"no card {serial}")
            return self._details(conn, stored)

        return await self.store.run_read(body)

    async def card_page(self, serial: str, *, token: str | None = None) -> CardDetails:
        """The card as its customer sees it (the web page). With ``token``, the card's
        authentication token must match (compared in constant time); a mismatch is reported as
        CardNotFoundError so a guess learns nothing."""
        details = await self.get_card(serial)
        if token is not None and not hmac.compare_digest(
            token.encode(), details.card.authentication_token.encode()
        ):
            raise CardNotFoundError(f"no card {serial}")
        return details

    def _details(self, conn: Connection, stored: store_cards.StoredCard) -> CardDetails:
        # The state at the time of the read: past its expiry time the card reads as expired
        # before anything writes it.
        card = card_at(stored.card, self._now())
        # load_card read the template digest and platforms with the card: no more round trips.
        template = self._template(
            conn, card.template_id, card.template_version, stored.template_digest
        )
        if stored.platforms is not None:
            saved = set(stored.platforms)
        else:
            saved = store_cards.platforms(conn, [card.serial]).get(card.serial, set())
        lang = card.language if card.language in template.texts else template.default_language
        p = progress(template, card)

        def title(step: Any) -> str | None:
            return localized(step.title, lang, template.default_language) if step else None

        return CardDetails(
            card=card,
            template=template,
            platforms=frozenset(Platform(x) for x in saved),
            progress=p,
            current_reward=title(p.current_reward),
            next_reward=title(p.next_reward),
            change_tag=stored.change_tag,
            updated_at=stored.updated_at,
        )

    async def list_cards(
        self,
        *,
        search: str | None = None,
        template_id: str | None = None,
        template_version: int | None = None,
        platform: Platform | str | None = None,
        state: CardState | str | None = None,
        min_stamps: int | None = None,
        max_stamps: int | None = None,
        has_vouchers_ready: bool | None = None,
        sort: str = "-created_at",
        offset: int = 0,
        limit: int = 50,
        count_limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[CardSummary]:
        """The issued cards: search (card number, name, email or phone; a substring, any case),
        filters, sorted by ``sort`` (one of created_at, last_stamp_at, stamps, serial, name;
        ``-`` for descending), one page of ``limit`` (<= 500) from ``offset``, with the total.

        ``count_limit`` (e.g. 1000 for a search box): count at most that many cards past
        ``offset`` (``Page.total_exact`` False when more match, ``total`` then a lower bound).
        Counting every match of an unselective search is most of its time.

        ``cursor``: a page's ``next_cursor``: the next page by keyset (the same filters and
        sort; as fast at any depth, not counted: ``total`` is -1; ``offset`` must be 0). Every
        page that has more after it carries ``next_cursor``. A cursor that is not one of ours,
        or was made for another sort, is a CardInputError naming ``cursor``."""
        offset, limit = check_page(offset, limit)
        if cursor is not None and offset:
            raise CardInputError("cursor and offset cannot be combined: a cursor is a position")
        _check_count_limit(count_limit)
        f = self._card_filter(
            search=search,
            template_id=template_id,
            template_version=template_version,
            platform=platform,
            state=state,
            min_stamps=min_stamps,
            max_stamps=max_stamps,
            has_vouchers_ready=has_vouchers_ready,
        )
        sort_key, descending = _sort(sort)
        after = None
        if cursor is not None:
            value, last = cursors.read_card_cursor(cursor, sort_key, descending)
            after = store_search.after_position(sort_key, descending, value, last)
        # Count at most past the page: total stays exact for every page it reaches.
        cap = None if count_limit is None or after is not None else offset + max(count_limit, limit)

        def body(conn: Connection) -> store_search.CardRows:
            return store_search.card_page(
                conn,
                f,
                sort_key=sort_key,
                descending=descending,
                offset=offset,
                # A keyset page reads one row more: whether another page follows.
                limit=limit + 1 if after is not None else limit,
                cap=cap,
                after=after,
            )

        found = await self.store.run_read(body)
        rows = list(found.rows)
        total = found.total
        if after is not None:
            more = len(rows) > limit
            rows = rows[:limit]
            exact = True
        else:
            exact = cap is None or total <= cap
            total = total if exact or cap is None else cap
            more = offset + len(rows) < total or not exact
        next_cursor = None
        if more and rows:
            last_row = rows[-1]
            value = store_search.sort_value(last_row, sort_key)
            if isinstance(value, datetime):
                value = utc(value)
            next_cursor = cursors.card_cursor(sort_key, descending, value, last_row["serial"])
        items = tuple(
            CardSummary(
                serial=r["serial"],
                holder=codec.decode_holder(r),
                template_id=r["template_id"],
                template_version=r["template_version"],
                template_name=r["template_name"],
                stamps=r["stamps"],
                required=r["stamps_required"],
                state=CardState(r["state"]),
                platforms=frozenset(Platform(x) for x in found.platforms.get(r["serial"], set())),
                created_at=utc(r["created_at"]) or r["created_at"],
                last_stamp_at=utc(r["last_stamp_at"]),
                vouchers_ready=found.vouchers_ready.get(r["serial"], 0),
            )
            for r in rows
        )
        return Page(items, total, offset, limit, total_exact=exact, next_cursor=next_cursor)

    def _card_filter(
        self,
        *,
        search: str | None,
        template_id: str | None,
        template_version: int | None = None,
        platform: Platform | str | None = None,
        state: CardState | str | None = None,
        min_stamps: int | None = None,
        max_stamps: int | None = None,
        has_vouchers_ready: bool | None = None,
    ) -> store_search.CardFilter:
        """The checked filter (each bad value a CardInputError naming it)."""
        text = search_text(search)
        platform_value = None if platform is None else enum_value(Platform, platform, "platform")
        state_value = None if state is None else enum_value(CardState, state, "state")
        for bound in (min_stamps, max_stamps):
            if bound is None:
                continue
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                raise CardInputError(f"stamp bounds must be whole numbers >= 0, got {bound!r}")
        return store_search.CardFilter(
            search=text,
            search_index=store_search.uses_search_index(self.store.has_search_index, text),
            template_id=template_id,
            template_version=template_version,
            platform=platform_value,
            state=state_value,
            min_stamps=min_stamps,
            max_stamps=max_stamps,
            has_vouchers_ready=has_vouchers_ready,
            now=self._now(),
        )

    async def card_history(self, serial: str) -> list[JournalEntry]:
        """The card's events, oldest first (also for a deleted card: the journal is kept).
        Raises CardNotFoundError when no card ever had this serial."""
        check_serial(serial)

        def body(conn: Connection) -> list[JournalEntry]:
            if store_cards.load_card(conn, serial) is None:
                raise CardNotFoundError(f"no card {serial}")
            return [entry(r) for r in store_journal.card_events(conn, serial)]

        return await self.store.run_read(body)

    async def card_history_page(
        self, serial: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[JournalEntry]:
        """One page of the card's events, oldest first, by keyset (``next_cursor`` while more
        follow). Raises CardNotFoundError when no card ever had this serial."""
        check_serial(serial)
        exists = await self.store.run_read(lambda conn: store_cards.load_card(conn, serial))
        if exists is None:
            raise CardNotFoundError(f"no card {serial}")
        return await self.journal(serial=serial, newest_first=False, cursor=cursor, limit=limit)

    async def journal(
        self,
        *,
        types: Iterable[EventType | str] | EventType | str | None = None,
        template_id: str | None = None,
        serial: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
        cursor: str | None = None,
        count_limit: int | None = None,
    ) -> Page[JournalEntry]:
        """Every event ("Card Events"), filtered by type(s), template, card and time range
        (``since <= at < until``), newest first by default, paginated with the total.

        ``cursor``: a page's ``next_cursor``: the next page by keyset on the journal's sequence
        id (as fast at any depth; not counted: ``total`` is -1). ``count_limit``: count at most
        that many events past ``offset`` (``Page.total_exact`` False when more match): counting
        a journal of millions of events is most of a first page's time."""
        offset, limit = check_page(offset, limit)
        _check_count_limit(count_limit)
        cap = (
            None if count_limit is None or cursor is not None else offset + max(count_limit, limit)
        )
        if not isinstance(newest_first, bool):
            raise CardInputError("newest_first must be True or False")
        after_id = None
        if cursor is not None:
            if offset:
                raise CardInputError("cursor and offset cannot be combined: a cursor is a position")
            after_id = cursors.read_journal_cursor(cursor, newest_first)
        wanted: list[str] | None = None
        if types is not None:
            listed = [types] if isinstance(types, str) else list(types)
            wanted = [enum_value(EventType, t, "event type") for t in listed]
        for bound, name in ((since, "since"), (until, "until")):
            if bound is not None and not isinstance(bound, datetime):
                raise CardInputError(f"{name} must be a datetime, got {type(bound).__name__}")

        def body(conn: Connection) -> Page[JournalEntry]:
            total, rows = store_journal.journal_page(
                conn,
                types=wanted,
                template_id=template_id,
                serial=serial,
                since=None if since is None else aware(since),
                until=None if until is None else aware(until),
                offset=offset,
                limit=limit if after_id is None else limit + 1,
                newest_first=newest_first,
                after_id=after_id,
                count_limit=cap,
            )
            exact = True
            if after_id is not None:
                more = len(rows) > limit
                rows = rows[:limit]
            else:
                exact = cap is None or total <= cap
                total = total if exact or cap is None else cap
                more = offset + len(rows) < total or not exact
            next_cursor = None
            if more and rows:
                next_cursor = cursors.journal_cursor(newest_first, int(rows[-1]["id"]))
            return Page(
                tuple(entry(r) for r in rows),
                total,
                offset,
                limit,
                total_exact=exact,
                next_cursor=next_cursor,
            )

        return await self.store.run_read(body)


def _check_count_limit(count_limit: object) -> None:
    if count_limit is not None and (
        not isinstance(count_limit, int) or isinstance(count_limit, bool) or count_limit < 1
    ):
        raise CardInputError(f"count_limit must be a whole number >= 1, got {count_limit!r}")


def _sort(sort: object) -> tuple[str, bool]:
    """(key, descending) of a sort argument such as ``-created_at``."""
    if not isinstance(sort, str):
        raise CardInputError(f"sort must be a text, got {type(sort).__name__}")
    key = sort.removeprefix("-")
    if key not in SORT_KEYS:
        raise CardInputError(f"cannot sort by {sort!r}: use one of {', '.join(SORT_KEYS)}")
    return key, sort.startswith("-")
