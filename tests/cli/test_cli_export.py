"""export-csv: every text cell neutralised, an optional UTF-8 BOM, files 0600 (issue 12: 11, 12)."""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.cli import main


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def db(tmp_path: Path, templates_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run("templates", "publish", templates_dir / "coffee", "--db", url).exit_code == 0
    return url


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def issue(db: str, *options: str) -> None:
    result = run("issue", "coffee", *options, "--db", db)
    assert result.exit_code == 0, result.output


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_phone_number_is_neutralised_like_every_text_cell(db: str) -> None:
    issue(db, "--name", "=HYPERLINK(1)", "--email", "+a@b.example", "--phone", "-1+1")
    issue(db, "--name", "Jürgen Müller", "--phone", "+49 30 1234")
    result = run("export-csv", "--db", db)
    assert result.exit_code == 0, result.output
    by_name = {row["name"]: row for row in rows(result.stdout)}
    hostile = by_name["'=HYPERLINK(1)"]
    assert hostile["email"] == "'+a@b.example"
    assert hostile["phone"] == "'-1+1"
    assert by_name["Jürgen Müller"]["phone"] == "'+49 30 1234"
    for row in rows(result.stdout):
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_bom_on_request_only(db: str, tmp_path: Path) -> None:
    issue(db, "--name", "Jürgen Müller")
    plain, with_bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    assert run("export-csv", "-o", plain, "--db", db).exit_code == 0
    assert run("export-csv", "--bom", "-o", with_bom, "--db", db).exit_code == 0
    assert plain.read_bytes().startswith(b"serial,")
    data = with_bom.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfserial,")
    assert "Jürgen Müller" in data.decode("utf-8-sig")
    assert data.count(b"\xef\xbb\xbf") == 1


@pytest.mark.usefixtures("open_umask")
def test_export_files_are_private_whatever_the_umask(db: str, tmp_path: Path) -> None:
    issue(db, "--name", "Ada")
    fresh = tmp_path / "fresh.csv"
    assert run("export-csv", "-o", fresh, "--db", db).exit_code == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    existing = tmp_path / "existing.csv"
    existing.write_text("old")
    existing.chmod(0o644)
    assert run("export-csv", "-o", existing, "--db", db).exit_code == 0
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert existing.read_text(encoding="utf-8").startswith("serial,")
