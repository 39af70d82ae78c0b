"""Importing customers from another stamp platform: rows of name, e-mail, phone, current stamps
and an optional existing card number.

Parsing (:func:`read_import_rows`) streams a CSV file and yields each row checked, or an
:class:`~passkit_stamps.errors.ImportRowError` naming its line and column. Importing
(:meth:`ImportOperations.import_customers`) writes one batch per transaction: for each row a
holder, a card (with the given serial, else a new one), ``card_issued`` and, when the row has
stamps, ``stamps_adjusted`` (an adjustment, actor ``import``).

Idempotent: each row has a key stored with the card (the idempotency table, operation
``import``): ``import:<template>:serial:<serial>`` when the row gives a card number, else
``import:<template>:email:<address>`` when it gives an e-mail, else a digest of the row's
name, phone and stamps. A row whose key is stored is skipped, so running the same file again
imports nothing twice, and a file fixed after a failed run imports only what is missing.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from .. import engine
from ..errors import CardInputError, ImportRowError, TemplateNotFoundError
from ..model import CardTemplate, Holder, is_valid_serial
from ..store import imports as store_imports
from ..store import journal as store_journal
from ..store import templates as store_templates
from .core import ServiceCore

#: Header names accepted per column (compared lower-cased, spaces/underscores/dashes removed).
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "customer", "customername", "fullname"),
    "email": ("email", "e-mail", "emailaddress", "mail"),
    "phone": ("phone", "phonenumber", "mobile", "telephone"),
    "stamps": ("stamps", "currentstamps", "punches", "points"),
    "serial": ("serial", "cardnumber", "card", "cardid", "serialnumber"),
}
ACTOR = "import"


@dataclass(frozen=True)
class ImportRow:
    line: int
    holder: Holder
    stamps: int
    serial: str | None

    def key(self, template_id: str) -> str:
        if self.serial is not None:
            return f"import:{template_id}:serial:{self.serial}"
        if self.holder.email is not None:
            return f"import:{template_id}:email:{self.holder.email.lower()}"
        content = json.dumps([self.holder.name, self.holder.phone, self.stamps])
        return f"import:{template_id}:row:{hashlib.sha256(content.encode()).hexdigest()[:32]}"


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0  # already imported (by an earlier run or an earlier row of this one)
    bad: int = 0
    #: Rows refused by the store (a card number already taken), with their line.
    errors: list[str] = field(default_factory=list)


def _normal(header: str) -> str:
    return "".join(c for c in header.strip().lower() if c not in " _-").lstrip("\ufeff")


def read_import_rows(
    lines: Iterable[str], template: CardTemplate
) -> Iterator[ImportRow | ImportRowError]:
    """Parse a CSV stream (the first row is the header); yield each data row checked, or the
    error naming its line. Raises ImportRowError for an unusable header."""
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRowError("line 1: the file is empty (a header row is needed)") from None
    except csv.Error as exc:
        raise ImportRowError(f"line 1: not CSV: {exc}") from None
    where: dict[str, int] = {}
    for index, title in enumerate(header):
        for column, names in COLUMNS.items():
            if _normal(title) in {_normal(n) for n in names} and column not in where:
                where[column] = index
    if "name" not in where and "email" not in where:
        raise ImportRowError(
            "line 1: the header needs a name or an e-mail column "
            f"(known columns: {', '.join(COLUMNS)})"
        )
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield ImportRowError(f"line {reader.line_num}: not CSV: {exc}")
            continue
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue

        def cell(column: str, cells: list[str] = cells) -> str:
            i = where.get(column)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        yield _row(line, cell, template)


def _row(
    line: int, get: Callable[[str], str], template: CardTemplate
) -> ImportRow | ImportRowError:
    stamps_text = get("stamps") or "0"
    if not stamps_text.isascii() or not stamps_text.isdigit() or len(stamps_text) > 6:
        return ImportRowError(f"line {line}: stamps: {stamps_text!r} is not a whole number")
    stamps = int(stamps_text)
    if stamps > template.stamps_required:
        return ImportRowError(
            f"line {line}: stamps: {stamps} is more than the card's {template.stamps_required}"
        )
    serial = get("serial") or None
    if serial is not None and not is_valid_serial(serial):
        return ImportRowError(
            f"line {line}: serial: {serial!r} must be 1 to 64 of A-Z a-z 0-9 . _ -"
        )
    email = get("email") or None
    name = get("name") or None
    if name is None and email is None:
        return ImportRowError(f"line {line}: name: a row needs a name or an e-mail")
    try:
        holder = Holder(name=name, email=email, phone=get("phone") or None)
    except CardInputError as exc:
        problems = getattr(exc, "problems", None) or []
        reason = "; ".join(f"{p.place.rsplit(':', 1)[-1].strip()}: {p.message}" for p in problems)
        return ImportRowError(f"line {line}: {reason or exc}")
    return ImportRow(line, holder, stamps, serial)


class ImportOperations(ServiceCore):
    async def import_customers(
        self, template_id: str, rows: Sequence[ImportRow], *, dry_run: bool = False
    ) -> ImportReport:
        """Import one batch of checked rows in ONE transaction (see the module docs); with
        ``dry_run`` nothing is written and the report says what would happen."""

        def body(conn: Connection) -> ImportReport:
            version = store_templates.latest_version(conn, template_id)
            if version is None:
                raise TemplateNotFoundError(f"no template {template_id!r} was published")
            template = self._template(conn, template_id, version)
            report = ImportReport()
            keys = [r.key(template_id) for r in rows]
            known = store_imports.known_keys(conn, keys)
            taken = store_imports.taken_serials(conn, [r.serial for r in rows if r.serial])
            now = self._now()
            todo: list[tuple[str, ImportRow]] = []
            for key, row in zip(keys, rows, strict=True):
                if key in known:
                    report.skipped += 1
                    continue
                known.add(key)  # a later row of the batch with the same key is a repeat
                if row.serial is not None and row.serial in taken:
                    report.bad += 1
                    report.errors.append(
                        f"line {row.line}: serial: card {row.serial} already exists "
                        "(not from an import of this template)"
                    )
                    continue
                todo.append((key, row))
            if dry_run or not todo:
                report.imported = len(todo)
                return report
            tag = store_journal.next_change_tag(conn)  # new cards: no device waits for it
            saved, items = [], []
            for key, row in todo:
                outcome = engine.issue_card(template, row.holder, now=now, serial=row.serial)
                card, events = outcome.card, list(outcome.events)
                if row.stamps:
                    adjusted = engine.set_stamps(template, card, row.stamps, now=now, code="import")
                    card, events = adjusted.card, events + list(adjusted.events)
                journal = [store_journal.event_row(e, ACTOR) for e in events]
                items.append((row.holder, card, journal))
                saved.append(
                    {
                        "key": key,
                        "operation": "import",
                        "request_digest": hashlib.sha256(key.encode()).hexdigest(),
                        "serial": card.serial,
                        "result": json.dumps({"line": row.line}),
                        "created_at": now,
                    }
                )
            store_imports.insert_imported(conn, items, change_tag=tag, now=now)
            store_imports.save_keys(conn, saved)
            report.imported = len(todo)
            return report

        return await self.store.run_write(body)
