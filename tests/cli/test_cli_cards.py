"""The card commands: CliRunner for each, and one real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.cli import main


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)


def ok(db: str, *args: str) -> str:
    result = run(db, *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_card_from_issue_to_export(db: str, templates_dir: Path, tmp_path: Path) -> None:
    assert "coffee@v1: created" in ok(db, "templates", "publish", str(templates_dir / "coffee"))
    assert "unchanged" in ok(db, "templates", "publish", str(templates_dir / "coffee"))
    assert json.loads(ok(db, "templates", "list", "--json")) == [
        {"id": "coffee", "version": 1, "name": "Free Coffee"}
    ]
    issued = json.loads(ok(db, "issue", "coffee", "--name", "Ada", "--email", "a@x.io", "--json"))
    serial = issued["card"]["serial"]
    assert "authentication_token" not in issued["card"]
    assert issued["events"][0]["type"] == "card_issued"

    out = ok(db, "stamp", serial, "--count", "3", "--code", "R-1")
    assert f"card {serial}: 3 stamp(s)" in out
    ok(db, "stamp", serial, "-n", "3")
    full = json.loads(ok(db, "stamp", serial, "-n", "2", "--json"))
    voucher = full["events"][-1]["voucher_code"]
    assert [e["type"] for e in full["events"]] == ["stamp_added", "goal_reached", "voucher_issued"]
    assert "redeemed" not in ok(db, "card", serial)
    ok(db, "redeem", serial, voucher)
    assert "redeemed" in ok(db, "card", serial)
    ok(db, "set-stamps", serial, "2")
    ok(db, "coupon", serial, "Birthday cake", "--description", "Happy birthday")
    ok(db, "message", serial, "Thanks for visiting")

    table = ok(db, "cards", "--search", "ada")
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["ID", "USER", "EMAIL", "PROGRESS"]
    assert row.split()[:4] == [serial, "Ada", "a@x.io", "2/8"]
    assert header.index("PROGRESS") == row.index("2/8")  # aligned columns
    listed = json.loads(ok(db, "cards", "--template", "coffee", "--json"))
    assert listed["total"] == 1 and listed["cards"][0]["serial"] == serial
    assert json.loads(ok(db, "cards", "--search", "nobody", "--json"))["total"] == 0

    history = json.loads(ok(db, "history", serial, "--json"))
    assert [e["type"] for e in history][:2] == ["card_issued", "stamp_added"]
    assert history[1]["code"] == "R-1"
    journal = json.loads(ok(db, "journal", "--type", "stamp_added", "--json"))
    assert journal["total"] == 3
    assert "stamp_added" in ok(db, "journal")

    target = tmp_path / "customers.csv"
    assert "wrote 1 card(s)" in ok(db, "export-csv", "-o", str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [(r["serial"], r["name"], r["stamps"]) for r in rows] == [(serial, "Ada", "2")]
    assert ok(db, "export-csv").startswith("serial,name,email")

    ok(db, "void", serial)
    assert "voided" in ok(db, "card", serial)
    ok(db, "delete", serial)
    assert json.loads(ok(db, "cards", "--json"))["total"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stamp", "NOPE"), "no card NOPE"),
        (("issue", "tea", "--name", "X"), "no template 'tea'"),
        (("history", "NOPE"), "no card NOPE"),
        (("journal", "--limit", "0"), "limit must be"),
    ],
)
def test_errors_are_one_line(
    db: str, templates_dir: Path, args: tuple[str, ...], message: str
) -> None:
    # The store exists (reading commands refuse a missing one; see tests/store/test_store_files)
    ok(db, "templates", "publish", str(templates_dir / "coffee"))
    result = run(db, *args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_refusals_from_the_rules(db: str, templates_dir: Path) -> None:
    ok(db, "templates", "publish", str(templates_dir / "coffee"))
    serial = json.loads(ok(db, "issue", "coffee", "--name", "B", "--json"))["card"]["serial"]
    result = run(db, "stamp", serial, "-n", "9")
    assert result.exit_code == 1 and "at most 3 stamp(s) per visit" in result.output
    bad = run(db, "issue", "coffee", "--name", "C", "--email", "not-an-email")
    assert bad.exit_code == 2 and "invalid --email" in bad.output
    broken = run(db, "templates", "publish", str(templates_dir))  # no template.toml there
    assert broken.exit_code == 1 and "template.toml" in broken.output


def test_database_from_the_environment_in_a_real_process(
    tmp_path: Path, templates_dir: Path
) -> None:
    env = {**os.environ, "PASSKIT_STAMPS_DB": f"sqlite:///{tmp_path / 'env.db'}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "passkit_stamps", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("templates", "publish", str(templates_dir / "salon")).returncode == 0
    issued = cli("issue", "salon", "--name", "Dora", "--json")
    assert issued.returncode == 0, issued.stderr
    serial = json.loads(issued.stdout)["card"]["serial"]
    assert (tmp_path / "env.db").exists()
    failed = cli("redeem", serial, "WRONGCODE")
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and "no voucher" in failed.stderr
    assert "Traceback" not in failed.stderr
