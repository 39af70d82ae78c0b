"""``passkit-stamps broadcast`` and ``campaigns`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.cli import main


@pytest.fixture
def db(tmp_path: Path, templates_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    ok(url, "templates", "publish", str(templates_dir / "coffee"))
    for name in ("Ada", "Bo", "Cy"):
        ok(url, "issue", "coffee", "--name", name)
    return url


def run(db: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db], input=input, catch_exceptions=False)


def ok(db: str, *args: str, input: str | None = None) -> str:
    result = run(db, *args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def test_dry_run_prints_the_reach_and_the_warning_and_sends_nothing(db: str) -> None:
    out = ok(db, "broadcast", "--message", "Spring menu", "--dry-run")
    assert "Cards reached:   3" in out and "Google objects:  0" in out
    assert "excessive use" in out.lower() and "3 times per card per 24 hours" in out
    assert json.loads(ok(db, "campaigns", "--json")) == []
    reach = json.loads(ok(db, "broadcast", "-m", "x", "--search", "bo", "--dry-run", "--json"))
    assert reach["cards"] == 1 and "warning" in reach


def test_broadcast_asks_unless_yes_and_reports(db: str) -> None:
    refused = run(db, "broadcast", "--message", "Spring menu", input="n\n")
    assert refused.exit_code == 1 and "Send to 3 card(s)?" in refused.output
    assert json.loads(ok(db, "campaigns", "--json")) == []
    sent = json.loads(ok(db, "broadcast", "--message", "Spring menu", "--yes", "--json"))
    assert sent["state"] == "sent" and sent["cards"] == 3
    report = ok(db, "broadcast", "--report", str(sent["id"]))
    assert f"Campaign {sent['id']} (sent)" in report and "Message: Spring menu" in report
    assert "Spring menu" in ok(db, "campaigns")
    history = json.loads(ok(db, "journal", "--json"))
    assert [e["type"] for e in history["events"]].count("campaign_sent") == 3
    asked = ok(db, "broadcast", "--message", "Again", input="y\n")
    assert "Cards: 3" in asked


def test_usage_and_refusals(db: str) -> None:
    assert run(db, "broadcast").exit_code == 2
    assert run(db, "broadcast", "-m", "x", "--report", "1").exit_code == 2
    missing = run(db, "broadcast", "--report", "99")
    assert missing.exit_code == 1 and "no campaign 99" in missing.output
    empty = run(db, "broadcast", "--message", " ", "--yes")
    assert empty.exit_code == 1 and "message must be 1 to 1000" in empty.output
