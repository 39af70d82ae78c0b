"""The merchant commands: card (page URL), pass, update-holder, templates migrate, enrol-url,
import."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.cli import main
from passkit_stamps.web.config import WebConfig

SECRET = "00112233445566778899aabbccddeeff"
WEB = ["--public-url", "https://stamps.example.com", "--mount-path", "/wallet"]


@pytest.fixture
def db(tmp_path: Path, templates_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    ok(url, "templates", "publish", str(templates_dir / "coffee"))
    ok(url, "templates", "publish", str(templates_dir / "salon"))
    return url


def run(db: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False, env=env)


def ok(db: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = run(db, *args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


def issue(db: str, *extra: str) -> str:
    out = ok(db, "issue", "coffee", "--name", "Ada", "--email", "ada@x.io", *extra, "--json")
    return str(json.loads(out)["card"]["serial"])


def page_url(serial: str) -> str:
    config = WebConfig(
        public_url="https://stamps.example.com",
        mount_path="/wallet",
        secret_key=bytes.fromhex(SECRET),
    )
    return config.card_page_url(serial)


def test_card_prints_the_page_url_when_configured(db: str) -> None:
    serial = issue(db)
    assert "https://" not in ok(db, "card", serial)  # not configured: no URL
    out = ok(db, "card", serial, *WEB, "--secret-key", SECRET)
    assert page_url(serial) in out
    data = json.loads(ok(db, "card", serial, "--json", *WEB, "--secret-key", SECRET))
    assert data["page_url"] == page_url(serial)
    # The same environment variables as `serve`.
    env = {
        "PASSKIT_STAMPS_PUBLIC_URL": "https://stamps.example.com",
        "PASSKIT_STAMPS_MOUNT_PATH": "/wallet",
        "PASSKIT_STAMPS_SECRET_KEY": SECRET,
    }
    assert page_url(serial) in ok(db, "card", serial, env=env)


def test_card_with_a_bad_secret_key_is_one_line(db: str) -> None:
    serial = issue(db)
    result = run(db, "card", serial, *WEB, "--secret-key", "short")
    assert result.exit_code == 1
    assert "secret-key" in result.output and "Traceback" not in result.output


def test_pass_writes_the_current_signed_pass(db: str, dev_pki: Any, tmp_path: Path) -> None:
    serial = issue(db)
    ok(db, "stamp", serial, "-n", "2")
    out = tmp_path / "card.pkpass"
    signing = [
        "--p12", str(dev_pki.signer_p12), "--p12-password", dev_pki.p12_password,
        "--wwdr", str(dev_pki.wwdr_cert),
    ]  # fmt: skip
    assert "wrote" in ok(db, "pass", serial, "-o", str(out), *signing, *WEB, "--secret-key", SECRET)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    verified = verify_pkpass(out.read_bytes(), ca=dev_pki.root_cert.read_bytes())
    pass_json = verified.pass_json
    assert pass_json["serialNumber"] == serial
    assert pass_json["webServiceURL"] == "https://stamps.example.com/wallet"
    progress = [f for f in pass_json["storeCard"]["secondaryFields"] if f["key"] == "progress"]
    assert progress[0]["value"].startswith("2 / ")
    result = run(db, "pass", "NOPE", "-o", str(out), *signing)
    assert result.exit_code == 1 and "no card NOPE" in result.output


def test_update_holder(db: str) -> None:
    serial = issue(db)
    ok(db, "update-holder", serial, "--phone", "+44 20 7946 0000", "--birthday", "1990-12-10")
    card = json.loads(ok(db, "card", serial, "--json"))["card"]
    assert card["holder"] == {
        "name": "Ada", "email": "ada@x.io", "phone": "+44 20 7946 0000", "birthday": "1990-12-10"
    }  # fmt: skip
    ok(db, "update-holder", serial, "--email", "", "--name", "Ada L.")
    holder = json.loads(ok(db, "card", serial, "--json"))["card"]["holder"]
    assert holder["email"] is None and holder["name"] == "Ada L."
    bad = run(db, "update-holder", serial, "--email", "not-an-address")
    assert bad.exit_code == 1 and "email" in bad.output
    assert run(db, "update-holder", serial, "--birthday", "10.12.1990").exit_code == 2
    assert run(db, "update-holder", serial).exit_code == 2


def test_templates_migrate(db: str, templates_dir: Path, tmp_path: Path) -> None:
    serial = issue(db)
    ok(db, "stamp", serial, "-n", "3")
    folder = tmp_path / "coffee2"
    shutil.copytree(templates_dir / "coffee", folder)
    toml = folder / "template.toml"
    text = toml.read_text().replace("version = 1", "version = 2")
    text = text.replace("stamps_required = 8", "stamps_required = 10").replace("at = 8", "at = 10")
    toml.write_text(text)
    ok(db, "templates", "publish", str(folder))
    assert "moved 1 card(s) of coffee to v2" in ok(
        db, "templates", "migrate", "coffee", "--to-version", "2"
    )
    card = json.loads(ok(db, "card", serial, "--json"))
    assert card["card"]["template_version"] == 2 and card["progress"] == "3/10"
    result = run(db, "templates", "migrate", "coffee", "--to-version", "9")
    assert result.exit_code == 1 and "v9" in result.output


def test_enrol_url_and_qr_posters(db: str, tmp_path: Path) -> None:
    out = ok(db, "enrol-url", "coffee", *WEB, "--secret-key", SECRET)
    assert out.strip().splitlines()[0] == "https://stamps.example.com/wallet/enrol/coffee"
    png, svg = tmp_path / "poster.png", tmp_path / "poster.svg"
    ok(db, "enrol-url", "coffee", *WEB, "--secret-key", SECRET, "--qr", str(png))
    ok(db, "enrol-url", "coffee", *WEB, "--secret-key", SECRET, "--qr", str(svg))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in svg.read_bytes()
    assert run(db, "enrol-url", "nope", *WEB, "--secret-key", SECRET).exit_code == 1
    assert run(db, "enrol-url", "coffee").exit_code == 2  # no public URL / key
    bad = run(
        db, "enrol-url", "coffee", *WEB, "--secret-key", SECRET, "--qr", str(tmp_path / "x.gif")
    )
    assert bad.exit_code == 2


CSV = (
    "Name,E-mail,Phone,Current stamps,Serial\n"
    "Ada Lovelace,ada@example.com,+44 20 7946 0000,3,\n"
    "Grace Hopper,grace@example.com,,0,OLD-000123\n"
    "Bad Stamps,bad@example.com,,99,\n"
    "Bad Mail,not-an-address,,1,\n"
    '"Multi, Line",multi@example.com,,x,\n'
    "Jürgen Müller 🎉,juergen@example.com,,7,\n"
)


def test_import_dry_run_reports_every_bad_row_and_writes_nothing(db: str, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CSV, encoding="utf-8")
    result = run(db, "import", str(path), "--template", "coffee", "--dry-run")
    assert result.exit_code == 1
    out = result.output
    assert "line 4: stamps: 99 is more than the card's 8" in out
    assert "line 5: email" in out
    assert "line 6: stamps: 'x' is not a whole number" in out
    assert "would import 3, already imported 0, bad rows 3" in out
    assert json.loads(ok(db, "cards", "--json"))["total"] == 0


def test_import_is_idempotent_and_journals_an_adjustment(db: str, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CSV, encoding="utf-8")
    first = run(db, "import", str(path), "--template", "coffee")
    assert first.exit_code == 1  # bad rows reported
    assert "imported 3, already imported 0, bad rows 3" in first.output
    again = run(db, "import", str(path), "--template", "coffee")
    assert "imported 0, already imported 3, bad rows 3" in again.output
    cards = json.loads(ok(db, "cards", "--json", "--limit", "50"))
    assert cards["total"] == 3
    grace = json.loads(ok(db, "card", "OLD-000123", "--json"))
    assert grace["card"]["holder"]["name"] == "Grace Hopper"
    [ada] = [c for c in cards["cards"] if c["name"] == "Ada Lovelace"]
    [juergen] = [c for c in cards["cards"] if c["email"] == "juergen@example.com"]
    assert juergen["name"] == "Jürgen Müller 🎉" and juergen["stamps"] == 7
    history = json.loads(ok(db, "history", ada["serial"], "--json"))
    assert [e["type"] for e in history] == ["card_issued", "stamps_adjusted"]
    assert history[1]["stamps"] == 3 and history[1]["actor"] == "import"
    # The fixed file imports only what was missing.
    fixed = CSV.replace(",99,", ",8,").replace("not-an-address", "mail@example.com")
    path.write_text(fixed.replace(",x,", ",2,"), encoding="utf-8")
    result = run(db, "import", str(path), "--template", "coffee", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == {
        "dry_run": False, "imported": 3, "skipped": 3, "bad": 0
    }  # fmt: skip


def test_import_refuses_a_file_without_known_columns(db: str, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("foo,bar\n1,2\n")
    result = run(db, "import", str(path), "--template", "coffee")
    assert result.exit_code == 1 and "line 1" in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in run(db, "import", str(empty), "--template", "coffee").output
    assert run(db, "import", str(path), "--template", "nope").exit_code == 1


def test_import_in_several_batches_with_a_progress_bar(db: str, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    lines = ["name,email,stamps"] + [f"C {i},c{i}@example.com,{i % 9}" for i in range(1_234)]
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main,
        ["import", str(path), "--template", "coffee", "--progress", "--db", db],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "importing" in result.output  # the bar (stderr, mixed in by CliRunner)
    assert "imported 1234, already imported 0, bad rows 0" in result.output
    again = run(db, "import", str(path), "--template", "coffee")
    assert "imported 0, already imported 1234" in again.output
    assert json.loads(ok(db, "cards", "--json"))["total"] == 1_234
    journal = json.loads(ok(db, "journal", "--type", "stamps_adjusted", "--json", "--limit", "5"))
    assert journal["events"] and all(e["actor"] == "import" for e in journal["events"])
