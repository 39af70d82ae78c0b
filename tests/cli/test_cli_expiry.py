"""Issue 12 item 2 through the command line: a card past its expiry time shows as expired in
``card``, ``cards`` (and ``--state expired``/``active``) and ``export-csv`` before any stamp was
refused (nothing has written the state)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from passkit_stamps.cli import main
from passkit_stamps.model import CardTemplate
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


async def _seed(db: str, templates: Path) -> tuple[str, str]:
    """A coffee card stamped two years ago (it expired 365 days after that stamp) and one
    stamped now."""
    store = await Store.open(db)
    try:
        long_ago = StampService(store, clock=lambda: datetime.now(UTC) - timedelta(days=730))
        await long_ago.publish_template(CardTemplate.load(templates / "coffee"))
        old = (await long_ago.issue_card("coffee")).card.serial
        await long_ago.add_stamps(old, 1)
        today = StampService(store)
        new = (await today.issue_card("coffee")).card.serial
        await today.add_stamps(new, 1)
        return old, new
    finally:
        await store.close()


def test_expired_cards_read_as_expired_on_the_command_line(
    tmp_path: Path, templates_dir: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    old, new = asyncio.run(_seed(db, templates_dir))
    card = run("card", old, "--db", db)
    assert card.exit_code == 0, card.output
    assert "expired" in card.output
    assert "active" not in card.output
    expired = run("cards", "--state", "expired", "--db", db)
    assert expired.exit_code == 0, expired.output
    assert old in expired.output and new not in expired.output
    active = run("cards", "--state", "active", "--db", db)
    assert new in active.output and old not in active.output
    export = run("export-csv", "--db", db)
    assert export.exit_code == 0, export.output
    states = {r["serial"]: r["state"] for r in csv.DictReader(io.StringIO(export.output))}
    assert states == {old: "expired", new: "active"}
