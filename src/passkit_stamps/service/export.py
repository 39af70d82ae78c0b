"""The customer export: CSV in batches (keyset pagination), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from ..errors import CardInputError
from ..model import CardState
from ..store import search as store_search
from ..store.cards import PLATFORMS
from ..store.schema import utc
from .reads import CardReads


class ExportOperations(CardReads):
    async def export_csv(
        self,
        *,
        template_id: str | None = None,
        state: CardState | str | None = None,
        batch_size: int = 1000,
        bom: bool = False,
    ) -> AsyncIterator[str]:
        """The customer data as CSV text, one chunk per batch of cards (keyset pagination by
        serial, so memory stays flat for any number of cards). Every text cell that a
        spreadsheet would run as a formula is prefixed with ``'``. ``bom`` starts the text with a
        UTF-8 byte order mark, which Excel needs to read it as UTF-8 (umlauts)."""
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise CardInputError(f"batch_size must be 1 to 10000, got {batch_size!r}")
        f = self._card_filter(search=None, template_id=template_id, state=state)
        header = [
            "serial",
            "name",
            "email",
            "phone",
            "birthday",
            "template_id",
            "template_version",
            "state",
            "stamps",
            "required",
            "rounds_completed",
            "vouchers_ready",
            "platforms",
            "created_at",
            "last_stamp_at",
            "expires_at",
        ]
        yield ("\ufeff" if bom else "") + _csv_rows([header])

        def batch(conn: Connection, last: str) -> tuple[str, str | None]:
            """The CSV text of the next batch after ``last`` and its last serial (None: done).
            Formatting runs here too, off the event loop."""
            rows = store_search.export_rows(conn, f, after=last, limit=batch_size)
            if not rows:
                return "", None
            text = _csv_rows(
                [
                    r.serial,
                    r.name or "",
                    r.email or "",
                    r.phone or "",
                    r.birthday.isoformat() if r.birthday else "",
                    r.template_id,
                    r.template_version,
                    r.state,
                    r.stamps,
                    r.stamps_required,
                    r.rounds_completed,
                    r.vouchers_ready,
                    " ".join(sorted(p for p in PLATFORMS if getattr(r, f"on_{p}"))),
                    _iso(r.created_at),
                    _iso(r.last_stamp_at),
                    _iso(r.expires_at),
                ]
                for r in rows
            )
            return text, rows[-1].serial

        last: str | None = ""
        while last is not None:
            text, last = await self.store.run_read(functools.partial(batch, last=last))
            if text:
                yield text


def _iso(value: datetime | None) -> str:
    found = utc(value)
    return found.isoformat() if found else ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_rows(rows: Iterable[Sequence[Any]]) -> str:
    """CSV lines; every text cell is neutralised here, so no column can be forgotten (the phone
    column was: ``+49 …`` and ``-1+1`` are formulas to a spreadsheet)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows([_csv_safe(cell) for cell in row] for row in rows)
    return buf.getvalue()
