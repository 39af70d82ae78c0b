"""The google-class, google-object and google-link commands."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from schema import assert_valid
from walletfixtures import ISSUER, TEMPLATES

from passkit_stamps.cli import main

COMMON = ["--issuer-id", ISSUER, "--image-base-url", "https://img.example/cards"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", ["coffee", "salon"])
def test_google_class_prints_valid_json(name: str) -> None:
    code, out, _ = run(
        "google-class",
        str(TEMPLATES / name),
        *COMMON,
        "--callback-url",
        "https://stamps.example/cb",
    )
    assert code == 0
    cls = json.loads(out)
    assert cls["id"] == f"{ISSUER}.{name}"
    assert cls["callbackOptions"]["url"] == "https://stamps.example/cb"
    assert_valid(cls, "LoyaltyClass")


def test_google_object_prints_valid_json() -> None:
    code, out, _ = run(
        "google-object",
        str(TEMPLATES / "salon"),
        *COMMON,
        "--serial",
        "113772",
        "--stamps",
        "4",
        "--language",
        "de",
        "--holder-name",
        "Ada",
        "--state",
        "voided",
    )
    assert code == 0
    obj = json.loads(out)
    assert obj["loyaltyPoints"]["balance"] == {"string": "4/10"}
    assert obj["state"] == "INACTIVE" and obj["accountName"] == "Ada"
    assert_valid(obj, "LoyaltyObject")


def test_google_link(tmp_path: Path, sa_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    code, out, err = run(
        "google-link",
        str(TEMPLATES / "coffee"),
        *COMMON,
        "--serial",
        "42",
        "--stamps",
        "3",
        "--service-account",
        str(sa_file),
        "--origin",
        "https://beanthere.example.com",
    )
    assert code == 0
    url = out.strip()
    assert url.startswith("https://pay.google.com/gp/v/save/") and len(url) <= 1800
    claims = jwt.decode(
        url.rsplit("/", 1)[1], rsa_key.public_key(), algorithms=["RS256"], audience="google"
    )
    assert claims["origins"] == ["https://beanthere.example.com"]
    assert claims["payload"]["loyaltyObjects"][0]["id"] == f"{ISSUER}.42"
    skinny = (
        "id" in claims["payload"]["loyaltyObjects"][0]
        and len(claims["payload"]["loyaltyObjects"][0]) == 2
    )
    assert ("insert object" in err) is skinny


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "google-class",
                "TEMPLATE",
                "--issuer-id",
                "abc",
                "--image-base-url",
                "https://i.example",
            ],
            "invalid Google issuer id",
        ),
        (
            [
                "google-class",
                "TEMPLATE",
                "--issuer-id",
                "1",
                "--image-base-url",
                "http://i.example",
            ],
            "https:// URL",
        ),
        (["google-class", "MISSING", *COMMON], "does not exist"),
        (
            ["google-object", "TEMPLATE", *COMMON, "--serial", "1", "--stamps", "99"],
            "must be 0 to 8",
        ),
        (["google-object", "TEMPLATE", *COMMON, "--serial", "a b"], "serial"),
        (
            ["google-object", "TEMPLATE", *COMMON, "--serial", "1", "--language", "fr"],
            "not a language",
        ),
        (
            ["google-link", "TEMPLATE", *COMMON, "--serial", "1", "--service-account", "nope.json"],
            "not found",
        ),
        (
            [
                "google-link",
                "TEMPLATE",
                *COMMON,
                "--serial",
                "1",
                "--service-account",
                "KEY",
                "--origin",
                "not-an-origin",
            ],
            "invalid origin",
        ),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    args: list[str], message: str, sa_file: Path, tmp_path: Path
) -> None:
    replaced = [
        str(TEMPLATES / "coffee")
        if a == "TEMPLATE"
        else str(tmp_path / "missing")
        if a == "MISSING"
        else str(sa_file)
        if a == "KEY"
        else a
        for a in args
    ]
    code, _, err = run(*replaced)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], err


def test_bad_template_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "template.toml").write_text("id = 'x'\n")
    code, _, err = run("google-class", str(tmp_path), *COMMON)
    assert code == 1
    assert err.count("\n") == 1 and "invalid card template" in err
