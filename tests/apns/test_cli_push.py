"""`passkit-stamps push` against the fake APNs running in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from passkit_stamps.cli import main

TOPIC = "pass.com.example.stamps"


def _start(*args: str) -> tuple[subprocess.Popen[str], int, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "passkit_stamps.testing.fake_apns", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    port, ca = 0, None
    while port == 0 or ca is None:
        parts = proc.stdout.readline().split()
        assert parts, "the fake APNs did not start"
        if parts[0] == "LISTENING":
            port = int(parts[2])
        elif parts[0] == "CA":
            ca = Path(parts[1])
    return proc, port, ca


@pytest.fixture
def cert_server(dev_pki: Any) -> Iterator[tuple[int, Path]]:
    proc, port, ca = _start("--client-ca", str(dev_pki.wwdr_cert))
    yield port, ca
    proc.terminate()
    proc.wait(10)


def _signing(dev_pki: Any) -> list[str]:
    return [
        "--cert",
        str(dev_pki.signer_cert),
        "--key",
        str(dev_pki.signer_key),
        "--wwdr",
        str(dev_pki.wwdr_cert),
    ]


def test_push_with_the_certificate_prints_one_line_per_token(
    cert_server: tuple[int, Path], dev_pki: Any
) -> None:
    port, ca = cert_server
    tokens = ["ab" * 32, "cd" * 32]
    result = CliRunner().invoke(
        main,
        [
            "push",
            *tokens,
            "--pass-type-id",
            TOPIC,
            *_signing(dev_pki),
            "--apns-host",
            f"localhost:{port}",
            "--ca",
            str(ca),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert sorted(line.split()[0] for line in lines) == sorted(tokens)
    assert all(line.split()[1] == "delivered" for line in lines)


def test_push_with_a_token_key(apns_key: Any, tmp_path: Path) -> None:
    public = tmp_path / "key.pub.pem"
    public.write_bytes(apns_key.public_pem)
    proc, port, ca = _start("--jwt-key", f"{apns_key.key_id}={public}")
    try:
        result = CliRunner().invoke(
            main,
            [
                "push",
                "ef" * 32,
                "--pass-type-id",
                TOPIC,
                "--apns-key",
                str(apns_key.p8_path),
                "--apns-key-id",
                apns_key.key_id,
                "--team-id",
                apns_key.team_id,
                "--apns-host",
                f"127.0.0.1:{port}",
                "--ca",
                str(ca),
            ],
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.exit_code == 0, result.output
    assert result.output.split()[:2] == ["ef" * 32, "delivered"]


def test_refused_certificate_is_one_line_and_exit_1(dev_pki: Any, tmp_path: Path) -> None:
    from passkit_stamps.runtime.devpki import make_root, pem_certificate

    other, _ = make_root(common_name="another CA")
    ca_file = tmp_path / "other.pem"
    ca_file.write_bytes(pem_certificate(other))
    proc, port, ca = _start("--client-ca", str(ca_file))
    try:
        result = CliRunner().invoke(
            main,
            [
                "push",
                "ab" * 32,
                "--pass-type-id",
                TOPIC,
                *_signing(dev_pki),
                "--apns-host",
                f"localhost:{port}",
                "--ca",
                str(ca),
            ],
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.exit_code == 1
    assert "Error:" in result.output and "certificate" in result.output
    assert "Traceback" not in result.output


def test_usage_errors(dev_pki: Any, apns_key: Any) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["push", "ab" * 32, "--pass-type-id", TOPIC])
    assert result.exit_code == 2 and "authentication" in result.output
    result = runner.invoke(
        main,
        ["push", "nothex", "--pass-type-id", TOPIC, *_signing(dev_pki)],
    )
    assert result.exit_code == 2 and "push token" in result.output
    result = runner.invoke(
        main,
        ["push", "ab" * 32, "--pass-type-id", "pass.com.other", *_signing(dev_pki)],
    )
    assert result.exit_code == 2 and "pass.com.example.stamps" in result.output
    result = runner.invoke(
        main,
        ["push", "ab" * 32, "--pass-type-id", TOPIC, "--apns-key", str(apns_key.p8_path)],
    )
    assert result.exit_code == 2 and "--apns-key-id" in result.output
    result = runner.invoke(
        main,
        ["push", "ab" * 32, "--pass-type-id", TOPIC, *_signing(dev_pki), "--apns-host", "h:x"],
    )
    assert result.exit_code == 2 and "HOST:PORT" in result.output
