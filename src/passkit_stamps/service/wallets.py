"""Where a card is saved (wallets, the web page), Google Wallet objects, and the outbox the push
worker drains."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.engine import Connection

from ..engine import Platform
from ..errors import CardNotFoundError
from ..store import cards as store_cards
from ..store import outbox as store_outbox
from ..store import wallets as store_wallets
from ..store.schema import utc
from .checks import aware, check_page, check_serial, check_text, enum_value
from .core import ServiceCore
from .results import GoogleObject, OutboxEntry

_WALLET_PLATFORMS = frozenset(p.value for p in Platform)


class WalletOperations(ServiceCore):
    async def record_platform(self, serial: str, platform: Platform | str, added: bool) -> bool:
        """Note that the card was saved to (or removed from) a wallet or opened on the web;
        journal ``pass_added`` / ``pass_removed``. Returns whether anything changed."""
        value = Platform(enum_value(Platform, platform, "platform"))
        check_serial(serial)
        now = self._now()

        def body(conn: Connection) -> bool:
            stored = store_cards.load_card(conn, serial, for_update=True)
            if stored is None or (stored.deleted_at is not None and added):
                raise CardNotFoundError(f"no card {serial}")
            return self._set_platform(conn, stored, value, bool(added), now)

        return await self.store.run_write(body)

    async def save_google_object(
        self,
        serial: str,
        object_id: str,
        class_id: str,
        state: str,
        *,
        synced_at: datetime | None = None,
    ) -> None:
        """Remember the card's Google Wallet object (id, class, state, last sync)."""
        check_serial(serial)
        for value, what in ((object_id, "object id"), (class_id, "class id"), (state, "state")):
            check_text(value, what, 255)

        def body(conn: Connection) -> None:
            stored = store_cards.load_card(conn, serial)
            if stored is None:
                raise CardNotFoundError(f"no card {serial}")
            store_wallets.save_google_object(
                conn,
                serial,
                object_id=object_id,
                class_id=class_id,
                state=state,
                last_synced=aware(synced_at) if synced_at else None,
            )

        return await self.store.run_write(body)

    async def google_object(self, serial: str) -> GoogleObject | None:
        row = await self.store.run_read(lambda conn: store_wallets.google_object(conn, serial))
        if row is None:
            return None
        return GoogleObject(
            row.serial, row.object_id, row.class_id, row.state, utc(row.last_synced)
        )

    async def pending_updates(
        self, *, platform: Platform | str | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """The oldest pending pass updates (for the push worker)."""
        _, limit = check_page(0, limit)
        wanted = None if platform is None else enum_value(Platform, platform, "platform")
        rows = await self.store.run_read(lambda conn: store_outbox.pending(conn, wanted, limit))
        return [
            OutboxEntry(
                id=r["id"],
                serial=r["serial"],
                platform=Platform(r["platform"]),
                reason=r["reason"],
                silent=bool(r["silent"]),
                change_tag=r["change_tag"],
                created_at=utc(r["created_at"]) or r["created_at"],
                attempts=r["attempts"],
            )
            for r in rows
            if r["platform"] in _WALLET_PLATFORMS  # e-mail rows are the e-mail sender's
        ]

    async def complete_updates(self, ids: Iterable[int]) -> int:
        """Remove delivered updates from the outbox; how many were removed."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0
        return await self.store.run_write(lambda conn: store_outbox.complete(conn, wanted))
