"""`passkit-stamps build` and `passkit-stamps samples`."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.cli import main
from passkit_stamps.runtime.devpki import DevPKI


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def p12_args(pki: DevPKI, password: str | None = None) -> list[str | Path]:
    return [
        "--p12",
        pki.signer_p12,
        "--p12-password",
        password or pki.p12_password,
        "--wwdr",
        pki.wwdr_cert,
    ]


def pass_json(data: bytes) -> dict[str, object]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        value: dict[str, object] = json.loads(archive.read("pass.json"))
    return value


def test_build_with_p12(templates_dir: Path, dev_pki: DevPKI, tmp_path: Path) -> None:
    out = tmp_path / "passes" / "ada.pkpass"
    result = run(
        "build", templates_dir / "coffee", "--serial", "113772", "--stamps", "3",
        "--holder-name", "Ada", *p12_args(dev_pki), "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout
    verified = verify_pkpass(out.read_bytes(), ca=dev_pki.root_cert.read_bytes())
    assert verified.serial_number == "113772"
    data = verified.pass_json
    assert "webServiceURL" not in data
    fields = data["storeCard"]["secondaryFields"] + data["storeCard"]["auxiliaryFields"]
    values = {f["key"]: f["value"] for f in fields}
    assert values["progress"] == "3 / 8" and values["holder"] == "Ada"


def test_build_with_pem_and_web_service(
    templates_dir: Path, dev_pki: DevPKI, tmp_path: Path
) -> None:
    out = tmp_path / "salon.pkpass"
    result = run(
        "build", templates_dir / "salon", "--serial", "S-1", "--stamps", "10",
        "--cert", dev_pki.signer_cert, "--key", dev_pki.signer_key, "--wwdr", dev_pki.wwdr_cert,
        "--web-service-url", "http://127.0.0.1:8000/passes", "--allow-http",
        "--auth-token", "a-token-of-twenty-chars", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = pass_json(out.read_bytes())
    assert data["webServiceURL"] == "http://127.0.0.1:8000/passes"
    assert data["authenticationToken"] == "a-token-of-twenty-chars"


def test_build_makes_a_random_token(templates_dir: Path, dev_pki: DevPKI, tmp_path: Path) -> None:
    tokens = set()
    for name in ("a", "b"):
        out = tmp_path / f"{name}.pkpass"
        result = run(
            "build", templates_dir / "coffee", "--serial", "1", "--stamps", "0",
            "--web-service-url", "https://passes.example.com/apple", *p12_args(dev_pki), "-o", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        token = pass_json(out.read_bytes())["authenticationToken"]
        assert isinstance(token, str) and len(token) >= 16
        tokens.add(token)
    assert len(tokens) == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"--p12": "missing.p12"}, "does not exist"),
        ({"--p12-password": "wrong"}, "password is wrong"),
        ({"--wwdr": "missing-wwdr.pem"}, "does not exist"),
        ({"--stamps": "9"}, "--stamps must be 0 to 8"),
        ({"--stamps": "-1"}, "--stamps must be 0 to 8"),
        ({"--serial": "no spaces"}, "--serial"),
        ({"--web-service-url": "https://passes.example.com/v1"}, "appends"),
        ({"--web-service-url": "http://passes.example.com/"}, "plain http"),
        ({"--web-service-url": "https://p.example.com/", "--auth-token": "short"}, "16"),
        ({"template": "no-such-template"}, "does not exist"),
    ],
)
def test_build_bad_input_is_one_line(
    templates_dir: Path, dev_pki: DevPKI, tmp_path: Path, change: dict[str, str], reason: str
) -> None:
    options = {
        "--serial": "113772",
        "--stamps": "3",
        "--p12": str(dev_pki.signer_p12),
        "--p12-password": dev_pki.p12_password,
        "--wwdr": str(dev_pki.wwdr_cert),
    }
    template = str(templates_dir / "coffee")
    for key, value in change.items():
        if key == "template":
            template = str(tmp_path / value)
        elif value.startswith("missing"):
            options[key] = str(tmp_path / value)
        else:
            options[key] = value
    out = tmp_path / "out.pkpass"
    args = ["build", template, *(x for kv in options.items() for x in kv), "-o", str(out)]
    result = run(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and reason in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--cert", "c.pem"], "signing needs --p12 FILE, or both --cert FILE and --key FILE"),
        (["--p12", "x.p12", "--cert", "c.pem"], "either --p12 or --cert/--key"),
        (["--p12", "x.p12", "--key-password", "pw"], "--key-password goes with --key"),
        (["--p12", "x.p12", "--auth-token", "0123456789abcdefgh"], "--auth-token is used only"),
    ],
)
def test_build_option_combinations(
    templates_dir: Path, tmp_path: Path, extra: list[str], reason: str
) -> None:
    result = run(
        "build", templates_dir / "coffee", "--serial", "1", "--stamps", "1",
        "--wwdr", "w.pem", *extra, "-o", tmp_path / "x.pkpass",
    )  # fmt: skip
    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and reason in last
    assert "Traceback" not in result.output


def test_samples_on_a_fresh_checkout(templates_dir: Path, tmp_path: Path) -> None:
    certs, out = tmp_path / "certs" / "dev", tmp_path / "out"
    result = run("samples", "--templates", templates_dir, "--out", out, "--certs", certs)
    assert result.exit_code == 0, result.output
    root = (certs / "root-ca.pem").read_bytes()
    header = result.stdout.splitlines()[0].split()
    assert header == ["file", "template", "stamps", "size"]
    for template, required in (("coffee", 8), ("salon", 10)):
        passes = sorted((out / template).glob("*.pkpass"))
        assert [p.name for p in passes] == [
            f"{template}-{name}.pkpass" for name in ("complete", "new", "progress", "voided")
        ]
        seen = {}
        for path in passes:
            assert str(path) in result.stdout
            seen[path.stem] = verify_pkpass(path.read_bytes(), ca=root).pass_json
        assert seen[f"{template}-voided"]["voided"] is True
        progress = {
            name: next(f["value"] for f in data["storeCard"]["secondaryFields"])
            for name, data in seen.items()
        }
        assert progress[f"{template}-new"].startswith("0 ")
        assert progress[f"{template}-complete"].endswith(f" {required}")
        with zipfile.ZipFile(out / template / f"{template}.pkpasses") as bundle:
            assert sorted(bundle.namelist()) == [p.name for p in passes]
    # A second run reuses the development PKI.
    again = run("samples", "--templates", templates_dir, "--out", out, "--certs", certs)
    assert again.exit_code == 0
    assert (certs / "root-ca.pem").read_bytes() == root


def test_samples_without_templates_is_one_line(tmp_path: Path) -> None:
    result = run("samples", "--templates", tmp_path / "nothing", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: templates folder {tmp_path / 'nothing'} does not exist"
    (tmp_path / "empty").mkdir()
    result = run("samples", "--templates", tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "no templates" in result.stderr
