"""Defects a new user met on the command line (issue 12, items 10 and 16), each reproduced."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.cli import main
from passkit_stamps.model import Holder
from passkit_stamps.runtime.devpki import DevPKI


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def db(tmp_path: Path, templates_dir: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run("templates", "publish", templates_dir / "coffee", "--db", url).exit_code == 0
    return url


def issue(db: str) -> str:
    result = run("issue", "coffee", "--name", "Ada", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["card"]["serial"])


def test_a_replayed_stamp_says_so_and_lists_no_new_events(db: str) -> None:
    serial = issue(db)
    first = run("stamp", serial, "--idempotency-key", "receipt-1", "--db", db)
    assert first.exit_code == 0, first.output
    assert "stamp_added" in first.stdout and "replay" not in first.stdout
    again = run("stamp", serial, "--idempotency-key", "receipt-1", "--db", db)
    assert again.exit_code == 0, again.output
    assert again.stdout != first.stdout
    assert "replay" in again.stdout and "nothing changed" in again.stdout
    assert "stamp_added" not in again.stdout
    card = json.loads(run("card", serial, "--db", db, "--json").stdout)
    assert card["card"]["stamps"] == 1


def test_export_csv_json_needs_an_output_file(db: str, tmp_path: Path) -> None:
    refused = run("export-csv", "--json", "--db", db)
    assert refused.exit_code == 2
    assert "--json goes with -o FILE" in refused.output
    out = tmp_path / "cards.csv"
    written = run("export-csv", "--json", "-o", out, "--db", db)
    assert written.exit_code == 0, written.output
    assert json.loads(written.stdout) == {"file": str(out), "cards": 0}


def test_samples_help_names_the_real_root_ca() -> None:
    result = run("samples", "--help")
    text = " ".join(result.stdout.split())
    assert "certs.example/dev/root-ca.pem" in text
    assert not re.search(r"(?<![./\w])certs/root-ca\.pem", text)


def test_verify_checks_each_pass_of_a_pkpasses_bundle(templates_dir: Path, tmp_path: Path) -> None:
    certs, out = tmp_path / "certs", tmp_path / "out"
    made = run("samples", "--templates", templates_dir, "--out", out, "--certs", certs)
    assert made.exit_code == 0, made.output
    bundle = out / "coffee" / "coffee.pkpasses"
    result = run("verify", bundle, "--ca", certs / "root-ca.pem")
    assert result.exit_code == 0, result.output
    valid = [line for line in result.stdout.splitlines() if line.startswith("VALID ")]
    assert len(valid) == 4 and "INVALID" not in result.stdout
    assert all(line.startswith(f"VALID {bundle}:coffee-") for line in valid)


def test_verify_of_a_bundle_with_a_broken_pass_fails(templates_dir: Path, tmp_path: Path) -> None:
    certs, out = tmp_path / "certs", tmp_path / "out"
    assert (
        run("samples", "--templates", templates_dir, "--out", out, "--certs", certs).exit_code == 0
    )
    bundle = tmp_path / "mixed.pkpasses"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("good.pkpass", (out / "coffee" / "coffee-new.pkpass").read_bytes())
        archive.writestr("bad.pkpass", b"not a zip")
    result = run("verify", bundle)
    assert result.exit_code == 1
    assert f"VALID {bundle}:good.pkpass" in result.stdout
    assert f"INVALID {bundle}:bad.pkpass" in result.stdout


def test_a_negative_stamp_count_gets_the_rule_not_an_unknown_option(db: str) -> None:
    serial = issue(db)
    result = run("set-stamps", serial, "-1", "--db", db)
    assert result.exit_code == 1
    assert "No such option" not in result.output
    assert "must be 0 to 8, got -1" in result.output


def test_a_missing_p12_password_names_the_option(
    templates_dir: Path, dev_pki: DevPKI, tmp_path: Path
) -> None:
    result = run(
        "build", templates_dir / "coffee", "--serial", "1", "--stamps", "1",
        "--p12", dev_pki.signer_p12, "--wwdr", dev_pki.wwdr_cert, "-o", tmp_path / "x.pkpass",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--p12-password" in result.stderr and "password=" not in result.stderr


def test_out_of_range_stamps_exit_alike_in_build_and_google_object(
    templates_dir: Path, dev_pki: DevPKI, tmp_path: Path
) -> None:
    build = run(
        "build", templates_dir / "coffee", "--serial", "1", "--stamps", "9",
        "--p12", dev_pki.signer_p12, "--p12-password", dev_pki.p12_password,
        "--wwdr", dev_pki.wwdr_cert, "-o", tmp_path / "x.pkpass",
    )  # fmt: skip
    google = run(
        "google-object", templates_dir / "coffee", "--issuer-id", "3388000000012345678",
        "--image-base-url", "https://img.example/cards", "--serial", "1", "--stamps", "99",
    )  # fmt: skip
    assert build.exit_code == google.exit_code == 1
    assert "--stamps must be 0 to 8" in build.stderr
    assert "--stamps must be 0 to 8" in google.stderr


@pytest.mark.parametrize(
    ("command", "option", "field"),
    [
        ("issue", "--name", "name"),
        ("issue", "--email", "email"),
        ("issue", "--phone", "phone"),
        ("build", "--holder-name", "name"),
        ("google-object", "--holder-name", "name"),
    ],
)
def test_help_states_the_holder_limits(command: str, option: str, field: str) -> None:
    limit = next(
        m.max_length for m in Holder.model_fields[field].metadata if hasattr(m, "max_length")
    )
    text = " ".join(run(command, "--help").stdout.split())
    described = text[text.index(option) :][:160]
    assert str(limit) in described


def manifest_bomb(entries: int) -> bytes:
    """A small zip whose manifest lists ``entries`` files the archive does not hold."""
    pass_json = b'{"formatVersion": 1}'
    manifest = {f"missing-{i:07d}.png": "0" * 40 for i in range(entries)}
    manifest["pass.json"] = hashlib.sha1(pass_json).hexdigest()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pass.json", pass_json)
        archive.writestr("manifest.json", json.dumps(manifest))
    return buffer.getvalue()


def test_verify_output_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pkpass"
    path.write_bytes(manifest_bomb(20_000))
    result = run("verify", path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) <= 52, len(lines)
    assert lines[0] == f"INVALID {path} (over 50 reasons):"
    assert "more" in lines[-1]
