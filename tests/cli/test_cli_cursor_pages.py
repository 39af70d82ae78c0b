"""Cursor pages on the command line (issue 11): --cursor with the printed next cursor walks
cards, the journal and a card's history; a forged cursor is one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from passkit_stamps.cli import main


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)


def ok(db: str, *args: str) -> str:
    result = run(db, *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_cursor_pages(tmp_path: Path, templates_dir: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    ok(db, "templates", "publish", str(templates_dir / "coffee"))
    serials = [
        json.loads(ok(db, "issue", "coffee", "--name", f"N{i}", "--json"))["card"]["serial"]
        for i in range(5)
    ]
    for serial in serials[:2]:
        ok(db, "stamp", serial)

    walked: list[str] = []
    page = json.loads(ok(db, "cards", "--limit", "2", "--json"))
    walked += [c["serial"] for c in page["cards"]]
    while page["next_cursor"]:
        page = json.loads(
            ok(db, "cards", "--limit", "2", "--cursor", page["next_cursor"], "--json")
        )
        assert page["total"] == -1
        walked += [c["serial"] for c in page["cards"]]
    assert sorted(walked) == sorted(serials)

    text = ok(db, "cards", "--limit", "2")
    assert "next page: --cursor " in text
    cursor = text.rsplit("--cursor ", 1)[1].strip()
    assert "card(s)" in ok(db, "cards", "--limit", "2", "--cursor", cursor)

    events = json.loads(ok(db, "journal", "--limit", "3", "--json"))
    ids = [e["id"] for e in events["events"]]
    while events["next_cursor"]:
        events = json.loads(
            ok(db, "journal", "--limit", "3", "--cursor", events["next_cursor"], "--json")
        )
        ids += [e["id"] for e in events["events"]]
    assert (
        len(ids)
        == len(set(ids))
        == len(json.loads(ok(db, "journal", "--limit", "500", "--json"))["events"])
    )

    history = json.loads(ok(db, "history", serials[0], "--limit", "1", "--json"))
    assert len(history["events"]) == 1 and history["next_cursor"]

    forged = run(db, "cards", "--cursor", "not-a-cursor")
    assert forged.exit_code == 1
    assert "cursor" in forged.output and "Traceback" not in forged.output
