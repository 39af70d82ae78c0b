"""``passkit-stamps serve`` refuses a request head (request line and headers) over 16 KiB: a
100 MB header was read for 11 s before. Run against the real command in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.runtime.headlimit import MAX_REQUEST_HEAD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_port(dev_pki: DevPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = dict(os.environ, PASSKIT_STAMPS_P12_PASSWORD=dev_pki.p12_password)
    command = [
        sys.executable, "-m", "passkit_stamps", "serve",
        "--db", f"sqlite:///{workdir / 'serve.db'}",
        "--public-url", f"http://127.0.0.1:{port}", "--allow-http",
        "--p12", str(dev_pki.signer_p12), "--wwdr", str(dev_pki.wwdr_cert),
        "--secret-key", "ab" * 32, "--port", str(port),
    ]  # fmt: skip
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, Path(workdir / "serve.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("serve did not start: " + Path(workdir / "serve.log").read_text())
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _send_head(port: int, head_start: bytes, filler: int) -> tuple[bytes, int]:
    """Send ``head_start`` and up to ``filler`` more header bytes (never the blank line that
    ends the head); stop as soon as the server answers or closes. The answer and bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head_start)
        sent += len(head_start)
        chunk = b"a" * 65536
        sock.settimeout(0.05)
        answer = b""
        while sent < filler:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except OSError:  # reset or broken pipe: the server closed the connection
                break
            try:
                answer = sock.recv(4096)
                if answer:
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        sock.settimeout(5)
        try:
            while not answer.endswith(b"\n") or b"\r\n\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return answer, sent


def test_a_100_mb_header_is_refused_after_a_few_kilobytes(serve_port: int) -> None:
    started = time.monotonic()
    answer, sent = _send_head(
        serve_port, b"GET /v1/log HTTP/1.1\r\nHost: x\r\nX-Big: ", 100 * 1024 * 1024
    )
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent < 4 * 1024 * 1024  # refused early, not after reading 100 MB
    assert time.monotonic() - started < 5


def test_a_huge_request_line_is_refused(serve_port: int) -> None:
    answer, sent = _send_head(serve_port, b"GET /" + b"a" * 100, 20 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431") or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert sent < 4 * 1024 * 1024


def test_normal_requests_and_large_bodies_still_pass(serve_port: int) -> None:
    body = b'{"logs": ["' + b"b" * 60_000 + b'"]}'
    head = (
        b"POST /v1/log HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Fill: " + b"c" * (MAX_REQUEST_HEAD - 200) + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", serve_port), timeout=5) as sock:
        sock.sendall(head + body)  # head and body in one write: only the head counts
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
