"""CLI commands for cards and templates in a store: issue, stamp, redeem, list, journal, export.

Every command takes ``--db URL`` (default ``sqlite:///passkit-stamps.db``, or the environment
variable ``PASSKIT_STAMPS_DB``) and ``--json`` for machine-readable output; people get aligned
tables. Library errors become one line and a non-zero exit (see ``cli/__init__.py``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from ._options import LazyChoice, card_states, event_types
from ._preview import MAX_EMAIL, MAX_NAME, MAX_PHONE
from ._web import web_config, web_options

if TYPE_CHECKING:  # imported inside the commands: the store and service are large imports
    from ..model import Card
    from ..service import CardDetails, Change, JournalEntry, StampService
    from ..service.cards import CardOperations
    from ..service.core import ServiceCore
    from ..store.store import Store

DEFAULT_DB = "sqlite:///passkit-stamps.db"
T = TypeVar("T")
S = TypeVar("S", bound="ServiceCore")


def _db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(f)
    return click.option(
        "--db",
        envvar="PASSKIT_STAMPS_DB",
        default=DEFAULT_DB,
        show_default=True,
        metavar="URL",
        help="Store URL: sqlite:///file.db or postgresql://user@host:port/db "
        "(env PASSKIT_STAMPS_DB).",
    )(f)


@contextmanager
def _loading() -> Iterator[None]:
    """Import the library with the cyclic garbage collector paused, then freeze what was loaded.

    Importing the store and the service allocates some 55,000 long-lived objects tracked by the
    collector (SQLAlchemy, pydantic, the tables and models) and next to no garbage. Scanning
    them again and again as they piled up, and once more when the interpreter exits, was about a
    third of a stamp's CPU time (bench_cli). Frozen, they are not scanned again; the collector
    runs as usual for everything the command does. Only the first load pauses and freezes: a
    process that runs commands in-process (tests) freezes once, not its garbage at every call.
    """
    first = "passkit_stamps.store.store" not in sys.modules
    enabled = gc.isenabled()
    if first:
        gc.disable()
    try:
        yield
    finally:
        if first:
            gc.freeze()
            if enabled:
                gc.enable()


def _run(db: str, action: Callable[[StampService], Awaitable[T]], *, create: bool = True) -> T:
    """Run ``action`` on the store at ``db``. Reading commands pass ``create=False``: a
    mistyped --db is then an error, not a new empty store."""
    with _loading():
        from ..service.facade import StampService

    return _run_on(StampService, db, action, create=create)


def _run_card(db: str, action: Callable[[CardOperations], Awaitable[T]]) -> T:
    """:func:`_run` for the commands that change one card (issue, stamp, redeem, ...): their
    operations are the service's :class:`~..service.cards.CardOperations`, the same methods
    StampService has, without importing the service's other concerns (start-up time). They
    need a published template or an issued card, so on a missing store they can only fail:
    like the reading commands, they create nothing there."""
    with _loading():
        from ..service.cards import CardOperations

    return _run_on(CardOperations, db, action, create=False)


def _run_on(
    service: Callable[[Store], S], db: str, action: Callable[[S], Awaitable[T]], *, create: bool
) -> T:
    from ..store.store import Store  # loaded with the service

    async def main() -> T:
        store = await Store.open(db, create=create)
        try:
            return await action(service(store))
        finally:
            await store.close()

    return asyncio.run(main())


# -- output ---------------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned under their headers, one space-padded column each."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _card_json(card: Card) -> dict[str, Any]:
    # The Apple authentication token is a credential: never printed.
    return card.model_dump(mode="json", exclude={"authentication_token"})


def _entry_json(e: JournalEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type.value,
        "at": e.at.isoformat(),
        "serial": e.serial,
        "template": f"{e.template_id}@v{e.template_version}",
        "template_name": e.template_name,
        "code": e.code,
        "stamps": e.stamps,
        "required": e.required,
        "reward": e.reward,
        "voucher_code": e.voucher_code,
        "data": e.data,
        "actor": e.actor,
        "holder_name": e.holder_name,
        "holder_email": e.holder_email,
    }


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _echo_change(change: Change, as_json: bool) -> None:
    if as_json:
        _echo_json(
            {
                "card": _card_json(change.card),
                "events": [_entry_json(e) for e in change.events],
                "notified": change.notified,
                "change_tag": change.change_tag,
                "replayed": change.replayed,
            }
        )
        return
    card = change.card
    click.echo(f"card {card.serial}: {card.stamps} stamp(s), {card.state.value}")
    if change.replayed:
        # The events are those of the first request: listing them again would read as new ones.
        click.echo("  replay: this idempotency key was used before; nothing changed")
        return
    for e in change.events:
        extra = f"  {e.reward}" if e.reward else ""
        code = f"  voucher {e.voucher_code}" if e.voucher_code else ""
        click.echo(f"  {e.type.value}  {e.stamps}/{e.required}{extra}{code}")


def _echo_entries(
    entries: Sequence[JournalEntry],
    as_json: bool,
    total: int | None = None,
    next_cursor: str | None = None,
) -> None:
    if as_json:
        body: Any = [_entry_json(e) for e in entries]
        if total is None:
            _echo_json(body)
        else:
            _echo_json({"total": total, "events": body, "next_cursor": next_cursor})
        return
    rows = [
        (
            e.id,
            e.type.value,
            _when(e.at),
            e.serial,
            e.code,
            f"{e.stamps}/{e.required}",
            e.reward,
            e.template_name or e.template_id,
            e.holder_name,
        )
        for e in entries
    ]
    headers = ("ID", "TYPE", "DATE", "CARD", "CODE", "STAMPS", "REWARD", "TEMPLATE", "USER")
    click.echo(_table(headers, rows))
    if total is not None and total >= 0:
        click.echo(f"{len(entries)} of {total} event(s)")
    elif total is not None:  # a cursor page is not counted
        click.echo(f"{len(entries)} event(s)")
    _echo_next(next_cursor)


def _echo_details(details: CardDetails, as_json: bool, page_url: str | None = None) -> None:
    card = details.card
    if as_json:
        _echo_json(
            {
                "card": _card_json(card),
                **({"page_url": page_url} if page_url else {}),
                "template": details.template_key,
                "platforms": sorted(p.value for p in details.platforms),
                "progress": f"{details.progress.stamps}/{details.progress.required}",
                "percent": details.progress.percent,
                "current_reward": details.current_reward,
                "next_reward": details.next_reward,
                "change_tag": details.change_tag,
            }
        )
        return
    p = details.progress
    rows = [
        ("Card", card.serial),
        ("Holder", card.holder.name),
        ("Email", card.holder.email),
        ("Template", details.template_key),
        ("Saved in", ", ".join(sorted(x.value for x in details.platforms)) or "-"),
        ("Created at", _when(card.created_at)),
        ("Last stamp at", _when(card.last_stamp_at)),
        ("Progress", f"{p.stamps} / {p.required} • {p.percent}%"),
        ("Next reward", details.next_reward),
        ("State", card.state.value),
    ]
    for v in card.vouchers:
        status = f"redeemed {_when(v.redeemed_at)}" if v.redeemed_at else "ready"
        rows.append(("Voucher", f"{v.code}  {v.title}  ({status})"))
    if page_url:
        rows.append(("Page", page_url))
    click.echo(_table(("FIELD", "VALUE"), rows))


# -- commands -------------------------------------------------------------------------------------


@click.command("issue")
@click.argument("template_id")
@click.option("--name", required=True, help=f"The customer's name (up to {MAX_NAME} characters).")
@click.option("--email", default=None, help=f"E-mail address (NAME@DOMAIN, up to {MAX_EMAIL}).")
@click.option(
    "--phone",
    default=None,
    help=f"Phone number (digits, spaces and + ( ) . / -, up to {MAX_PHONE}).",
)
@click.option("--version", "version", type=int, default=None, help="Template version (latest).")
@_db_option
def issue(
    template_id: str,
    name: str,
    email: str | None,
    phone: str | None,
    version: int | None,
    db: str,
    as_json: bool,
) -> None:
    """Issue a new card of TEMPLATE_ID to a customer."""
    from ..errors import CardInputError
    from ..model import Holder

    try:
        holder = Holder(name=name, email=email, phone=phone)
    except CardInputError as exc:  # say which option, in one line
        fields = ", ".join(f"--{p.place} ({p.message.lower()})" for p in exc.problems)
        raise click.UsageError(f"invalid {fields}") from None
    change = _run_card(db, lambda s: s.issue_card(template_id, holder, version=version))
    _echo_change(change, as_json)


@click.command("stamp")
@click.argument("serial")
@click.option("--count", "-n", type=int, default=1, show_default=True, help="Stamps to add.")
@click.option("--code", default=None, help="Event code, e.g. the receipt id.")
@click.option("--idempotency-key", default=None, help="Retrying with the same key adds nothing.")
@_db_option
def stamp(
    serial: str, count: int, code: str | None, idempotency_key: str | None, db: str, as_json: bool
) -> None:
    """Add stamps to a card (one visit)."""
    change = _run_card(
        db, lambda s: s.add_stamps(serial, count, code=code, idempotency_key=idempotency_key)
    )
    _echo_change(change, as_json)


# A negative count is an argument with a rule error, not an unknown option "-1".
@click.command("set-stamps", context_settings={"ignore_unknown_options": True})
@click.argument("serial")
@click.argument("n", type=int)
@_db_option
def set_stamps(serial: str, n: int, db: str, as_json: bool) -> None:
    """Set a card's stamp count (an adjustment)."""
    _echo_change(_run_card(db, lambda s: s.set_stamps(serial, n)), as_json)


@click.command("redeem")
@click.argument("serial")
@click.argument("code")
@_db_option
def redeem(serial: str, code: str, db: str, as_json: bool) -> None:
    """Redeem the voucher CODE of a card."""
    _echo_change(_run_card(db, lambda s: s.redeem_voucher(serial, code)), as_json)


@click.command("coupon")
@click.argument("serial")
@click.argument("title")
@click.option("--description", default="", help="What the coupon is for.")
@_db_option
def coupon(serial: str, title: str, description: str, db: str, as_json: bool) -> None:
    """Issue a personal coupon on a card."""
    _echo_change(
        _run_card(db, lambda s: s.issue_coupon(serial, title, description=description)), as_json
    )


@click.command("message")
@click.argument("serial")
@click.argument("text")
@_db_option
def message(serial: str, text: str, db: str, as_json: bool) -> None:
    """Send a personal message to a card's holder."""
    _echo_change(_run_card(db, lambda s: s.send_message(serial, text)), as_json)


@click.command("void")
@click.argument("serial")
@_db_option
def void(serial: str, db: str, as_json: bool) -> None:
    """Void (invalidate) a card."""
    _echo_change(_run_card(db, lambda s: s.void_card(serial)), as_json)


@click.command("delete")
@click.argument("serial")
@_db_option
def delete(serial: str, db: str, as_json: bool) -> None:
    """Delete a card: voided, the holder's data erased, the journal kept."""
    _echo_change(_run_card(db, lambda s: s.delete_card(serial)), as_json)


@click.command("card")
@click.argument("serial")
@_db_option
@web_options
def card(serial: str, db: str, as_json: bool, **web: Any) -> None:
    """Show a card's details, and its page URL (the link for the customer) when the public URL
    and the secret key are given as for `serve`."""
    config = web_config(**web)
    details = _run(db, lambda s: s.get_card(serial), create=False)
    _echo_details(details, as_json, page_url=config.card_page_url(serial) if config else None)


@click.command("cards")
@click.option("--search", "-s", default=None, help="Name, email, phone or card number.")
@click.option("--template", "template_id", default=None, help="Only this template id.")
@click.option("--state", type=LazyChoice(card_states), default=None)
@click.option("--platform", type=click.Choice(["web", "apple", "google"]), default=None)
@click.option("--sort", default="-created_at", show_default=True)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option(
    "--cursor", default=None, help="The next cursor a page printed: that page, fast at any depth."
)
@_db_option
def cards_command(
    search: str | None,
    template_id: str | None,
    state: str | None,
    platform: str | None,
    sort: str,
    limit: int,
    offset: int,
    cursor: str | None,
    db: str,
    as_json: bool,
) -> None:
    """List issued cards."""
    page = _run(
        db,
        lambda s: s.list_cards(
            search=search,
            template_id=template_id,
            state=state,
            platform=platform,
            sort=sort,
            limit=limit,
            offset=offset,
            cursor=cursor,
        ),
        create=False,
    )
    if as_json:
        _echo_json(
            {
                "total": page.total,
                "offset": page.offset,
                "next_cursor": page.next_cursor,
                "cards": [
                    {
                        "serial": c.serial,
                        "name": c.holder.name,
                        "email": c.holder.email,
                        "phone": c.holder.phone,
                        "template": f"{c.template_id}@v{c.template_version}",
                        "stamps": c.stamps,
                        "required": c.required,
                        "state": c.state.value,
                        "platforms": sorted(p.value for p in c.platforms),
                        "vouchers_ready": c.vouchers_ready,
                        "created_at": c.created_at.isoformat(),
                        "last_stamp_at": c.last_stamp_at.isoformat() if c.last_stamp_at else None,
                    }
                    for c in page.items
                ],
            }
        )
        return
    rows = [
        (
            c.serial,
            c.holder.name,
            c.holder.email,
            f"{c.stamps}/{c.required}",
            " ".join(sorted(p.value for p in c.platforms)) or "-",
            f"{c.template_id}@v{c.template_version}",
            c.state.value,
            _when(c.created_at),
        )
        for c in page.items
    ]
    headers = ("ID", "USER", "EMAIL", "PROGRESS", "PLATFORM", "TEMPLATE", "STATE", "CREATED")
    click.echo(_table(headers, rows))
    if page.total < 0:  # a cursor page is not counted
        click.echo(f"{len(page.items)} card(s)")
    else:
        click.echo(f"{len(page.items)} of {page.total} card(s)")
    _echo_next(page.next_cursor)


def _echo_next(next_cursor: str | None) -> None:
    if next_cursor is not None:
        click.echo(f"next page: --cursor {next_cursor}")


@click.command("history")
@click.argument("serial")
@click.option("--limit", type=int, default=None, help="At most this many events (a page).")
@click.option("--cursor", default=None, help="The next cursor a page printed: that page.")
@_db_option
def history(serial: str, limit: int | None, cursor: str | None, db: str, as_json: bool) -> None:
    """Show a card's events, oldest first."""
    if limit is None and cursor is None:
        _echo_entries(_run(db, lambda s: s.card_history(serial), create=False), as_json)
        return
    page = _run(
        db,
        lambda s: s.card_history_page(serial, cursor=cursor, limit=50 if limit is None else limit),
        create=False,
    )
    _echo_entries(page.items, as_json, total=page.total, next_cursor=page.next_cursor)


@click.command("journal")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=LazyChoice(event_types),
    help="Only events of this type (repeatable).",
)
@click.option("--template", "template_id", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option(
    "--cursor", default=None, help="The next cursor a page printed: that page, fast at any depth."
)
@_db_option
def journal(
    types: tuple[str, ...],
    template_id: str | None,
    limit: int,
    offset: int,
    cursor: str | None,
    db: str,
    as_json: bool,
) -> None:
    """Show the journal of card events, newest first."""
    page = _run(
        db,
        lambda s: s.journal(
            types=types or None,
            template_id=template_id,
            limit=limit,
            offset=offset,
            cursor=cursor,
        ),
        create=False,
    )
    _echo_entries(page.items, as_json, total=page.total, next_cursor=page.next_cursor)


@click.command("export-csv")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (default: standard output).",
)
@click.option("--template", "template_id", default=None)
@click.option("--bom", is_flag=True, help="Start with a UTF-8 BOM (Excel then reads umlauts).")
@_db_option
def export_csv(
    output: Path | None, template_id: str | None, bom: bool, db: str, as_json: bool
) -> None:
    """Export the customer data as CSV (streamed: any number of cards).

    The file (-o) holds personal data: it is created readable by its owner only (0600). With
    -o FILE, --json prints the summary (file, cards) as JSON.
    """
    if as_json and output is None:
        raise click.UsageError("--json goes with -o FILE: the CSV itself is written to stdout")

    async def action(service: StampService) -> int:
        count = 0
        handle = _private_file(output) if output else sys.stdout
        try:
            async for chunk in service.export_csv(template_id=template_id, bom=bom):
                handle.write(chunk)
                count += chunk.count("\r\n")
        finally:
            if output:
                handle.close()
        return max(count - 1, 0)

    rows = _run(db, action, create=False)
    if output:
        message = {"file": str(output), "cards": rows}
        click.echo(json.dumps(message) if as_json else f"wrote {rows} card(s) to {output}")


def _private_file(path: Path) -> TextIO:
    """``path`` opened for writing text, created 0600 whatever the umask; an existing file is
    truncated and made 0600 too (it is about to hold personal data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w", encoding="utf-8", newline="")
    except BaseException:
        os.close(fd)
        raise


@click.group("templates")
def templates_group() -> None:
    """Publish and list card templates."""


@templates_group.command("publish")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_db_option
def publish(folder: Path, db: str, as_json: bool) -> None:
    """Publish the template in FOLDER (template.toml and images)."""
    from ..model import CardTemplate

    template = CardTemplate.load(folder)
    result = _run(db, lambda s: s.publish_template(template))
    if as_json:
        _echo_json(
            {
                "template_id": result.template_id,
                "version": result.version,
                "status": result.status,
                "cards_updated": result.cards_updated,
            }
        )
        return
    note = f" ({result.cards_updated} card(s) updated)" if result.status == "design_updated" else ""
    click.echo(f"{result.template_id}@v{result.version}: {result.status}{note}")


@templates_group.command("list")
@_db_option
def list_templates(db: str, as_json: bool) -> None:
    """List published template versions."""
    found = [
        (t.id, t.version, t.name) for t in _run(db, lambda s: s.list_templates(), create=False)
    ]
    if as_json:
        _echo_json([{"id": i, "version": v, "name": n} for i, v, n in found])
        return
    click.echo(_table(("ID", "VERSION", "NAME"), found))


COMMANDS: list[click.Command] = [
    issue,
    stamp,
    set_stamps,
    redeem,
    coupon,
    message,
    void,
    delete,
    card,
    cards_command,
    history,
    journal,
    export_csv,
    templates_group,
]
