"""Interoperability: the APNs client against independent HTTP/2 servers from Debian packages.

nginx (http2 + TLS + ``ssl_verify_client on`` with the development PKI's CA) plays APNs on
127.0.0.1, with a config in a temp dir: 200 and an ``apns-id`` for /3/device/*, 410 Unregistered
for one token, and its own ``http2_max_concurrent_streams`` and ``keepalive_requests`` (nginx
sends GOAWAY after that many requests on a connection). nghttpd (nghttp2-server) is a second,
simpler peer. When a server is not installed the tests are SKIPPED with a loud reason;
``.ci/run`` installs both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from passkit_stamps.apple.apns import APNsClient, DeadToken, Delivered
from passkit_stamps.errors import APNsError
from passkit_stamps.testing import ServerIdentity

from .conftest import TOKEN, RawH2Connect

DEAD = "de" * 32
DEAD_SINCE_MS = 1_700_000_000_000
MAX_STREAMS = 16  # nginx's http2_max_concurrent_streams here: the client must stay under it
REQUESTS_PER_CONNECTION = 100  # nginx's keepalive_requests: then GOAWAY, the client reconnects


def _find(program: str) -> str | None:
    return shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)),
        None,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass(frozen=True)
class Peer:
    """An independent HTTP/2 server standing in for APNs."""

    host: str
    port: int
    ca_pem: bytes  # what clients must trust for the server certificate
    log: Path


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type application/json;
    # nginx's request id (32 hex digits) shaped as the UUID APNs sends in apns-id.
    map $request_id $apns_id {{
        "~^(?<a>.{{8}})(?<b>.{{4}})(?<c>.{{4}})(?<d>.{{4}})(?<e>.{{12}})$" "$a-$b-$c-$d-$e";
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key.pem;
        ssl_client_certificate {dir}/client-ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        http2_max_concurrent_streams {max_streams};
        keepalive_requests {requests};
        location = /3/device/{dead} {{
            add_header apns-id $apns_id always;
            return 410 '{{"reason":"Unregistered","timestamp":{dead_since}}}';
        }}
        location /3/device/ {{
            add_header apns-id $apns_id always;
            return 200 '{{}}';
        }}
        location / {{
            add_header apns-id $apns_id always;
            return 404 '{{"reason":"BadPath"}}';
        }}
    }}
}}
"""


@pytest.fixture
def nginx_apns(dev_pki, tmp_path: Path) -> Iterator[Peer]:  # type: ignore[no-untyped-def]
    """nginx on 127.0.0.1 answering like APNs, requiring a client certificate of the dev PKI."""
    nginx = _find("nginx")
    if nginx is None:
        pytest.skip(
            "SKIPPED LOUDLY: nginx is not installed, so the APNs client is not tested against an "
            "independent HTTP/2 server (Debian: apt-get install nginx-light; .ci/run does it)"
        )
    identity = ServerIdentity.development()
    (tmp_path / "server.pem").write_bytes(identity.certificate_pem)
    key = tmp_path / "server.key.pem"
    key.write_bytes(identity.key_pem)
    key.chmod(0o600)
    # Root + WWDR: nginx (OpenSSL) wants the whole chain up to a self-signed root.
    (tmp_path / "client-ca.pem").write_bytes(
        dev_pki.root_cert.read_bytes() + dev_pki.wwdr_cert.read_bytes()
    )
    port = _free_port()
    (tmp_path / "nginx.conf").write_text(
        NGINX_CONF.format(
            dir=tmp_path,
            port=port,
            dead=DEAD,
            dead_since=DEAD_SINCE_MS,
            max_streams=MAX_STREAMS,
            requests=REQUESTS_PER_CONNECTION,
        )
    )
    log = tmp_path / "error.log"
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process, log)
        yield Peer("127.0.0.1", port, identity.ca_pem, log)
    finally:
        _stop(process)


@pytest.fixture
def nghttpd_apns(tmp_path: Path) -> Iterator[Peer]:
    """nghttpd (nghttp2's server) on 127.0.0.1, answering any POST with 200 (echo upload)."""
    nghttpd = _find("nghttpd")
    if nghttpd is None:
        pytest.skip(
            "SKIPPED LOUDLY: nghttpd is not installed, so the APNs client is not tested against "
            "nghttp2's HTTP/2 server (Debian: apt-get install nghttp2-server; .ci/run does it)"
        )
    identity = ServerIdentity.development()
    (tmp_path / "server.pem").write_bytes(identity.certificate_pem)
    key = tmp_path / "server.key.pem"
    key.write_bytes(identity.key_pem)
    key.chmod(0o600)
    (tmp_path / "htdocs").mkdir()
    port = _free_port()
    log = tmp_path / "nghttpd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                nghttpd,
                "--address=127.0.0.1",
                f"--htdocs={tmp_path / 'htdocs'}",
                "--echo-upload",
                f"--max-concurrent-streams={MAX_STREAMS}",
                str(port),
                str(key),
                str(tmp_path / "server.pem"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process, log)
        yield Peer("127.0.0.1", port, identity.ca_pem, log)
    finally:
        _stop(process)


# -- the nginx fixture itself, checked with a raw h2 client ---------------------------------


async def test_nginx_fixture_answers_like_apns(
    nginx_apns: Peer,
    raw_h2: RawH2Connect,
    dev_pki,  # type: ignore[no-untyped-def]
) -> None:
    client = await raw_h2(
        nginx_apns.host,
        nginx_apns.port,
        ca_pem=nginx_apns.ca_pem,
        cert=dev_pki.signer_cert,
        key=dev_pki.signer_key,
    )
    assert client.alpn == "h2"
    ok = await client.push(TOKEN)
    assert ok.status == 200 and len(ok.headers["apns-id"]) == 36
    dead = await client.push(DEAD)
    assert dead.status == 410
    assert json.loads(dead.body) == {"reason": "Unregistered", "timestamp": DEAD_SINCE_MS}
    assert client.server_max_concurrent_streams == MAX_STREAMS


async def test_nginx_requires_the_client_certificate(
    nginx_apns: Peer, raw_h2: RawH2Connect
) -> None:
    client = await raw_h2(nginx_apns.host, nginx_apns.port, ca_pem=nginx_apns.ca_pem)
    response = await client.push(TOKEN)
    assert response.status == 400  # nginx: "No required SSL certificate was sent"


# -- the APNs client against nginx -----------------------------------------------------------


@pytest.fixture
async def nginx_client(
    nginx_apns: Peer,
    dev_pki,  # type: ignore[no-untyped-def]
) -> AsyncIterator[APNsClient]:
    async with APNsClient(
        dev_pki.credentials(),
        host=nginx_apns.host,
        port=nginx_apns.port,
        ca=nginx_apns.ca_pem,
        backoff_base=0.01,
    ) as client:
        yield client


async def test_client_pushes_through_nginx(nginx_client: APNsClient, nginx_apns: Peer) -> None:
    delivered = await nginx_client.push(TOKEN)
    assert isinstance(delivered, Delivered)
    assert delivered.apns_id is not None and len(delivered.apns_id) == 36
    assert f"POST /3/device/{TOKEN} HTTP/2.0" in (nginx_apns.log.parent / "access.log").read_text()


async def test_client_reads_nginx_410_as_a_dead_token(nginx_client: APNsClient) -> None:
    dead = await nginx_client.push(DEAD)
    assert isinstance(dead, DeadToken)
    assert (dead.status, dead.reason) == (410, "Unregistered")
    assert dead.timestamp is not None
    assert int(dead.timestamp.timestamp() * 1000) == DEAD_SINCE_MS


async def test_client_streams_through_nginx_limits_and_goaways(
    nginx_client: APNsClient, nginx_apns: Peer
) -> None:
    """More pushes than nginx allows per connection, many more than its stream limit."""
    tokens = [f"{i:064x}" for i in range(3 * REQUESTS_PER_CONNECTION + 7)] + [DEAD]
    results = [r async for r in nginx_client.push_many(tokens)]
    assert sorted(r.token for r in results) == sorted(tokens)
    delivered = [r for r in results if isinstance(r, Delivered)]
    assert len(delivered) == len(tokens) - 1
    assert [r.token for r in results if isinstance(r, DeadToken)] == [DEAD]
    access = (nginx_apns.log.parent / "access.log").read_text().splitlines()
    assert len(access) >= len(tokens)  # a push lost to a GOAWAY is resent, never dropped


async def test_client_without_the_right_certificate_is_refused_by_nginx(
    nginx_apns: Peer, tmp_path: Path
) -> None:
    from passkit_stamps.runtime.devpki import make_dev_pki

    stranger = make_dev_pki(tmp_path / "other-pki")  # another root: nginx does not trust it
    async with APNsClient(
        stranger.credentials(), host=nginx_apns.host, port=nginx_apns.port, ca=nginx_apns.ca_pem
    ) as client:
        try:
            result = await asyncio.wait_for(client.push(TOKEN), 30)
        except APNsError:
            return  # refused at the TLS level: a configuration error
    # nginx answers a certificate it cannot verify with an HTML 400, not a TLS alert: the client
    # must not take it for a delivery, and keeps nginx's answer verbatim.
    assert not isinstance(result, Delivered)
    assert (result.status, "The SSL certificate error" in result.reason) == (400, True), result


# -- the APNs client against nghttpd ---------------------------------------------------------


async def test_client_pushes_through_nghttpd(nghttpd_apns: Peer, dev_pki) -> None:  # type: ignore[no-untyped-def]
    tokens = [f"{i:064x}" for i in range(50)]
    async with APNsClient(
        dev_pki.credentials(),
        host=nghttpd_apns.host,
        port=nghttpd_apns.port,
        ca=nghttpd_apns.ca_pem,
    ) as client:
        results = [r async for r in client.push_many(tokens)]
    assert all(isinstance(r, Delivered) for r in results), results[:3]
    assert sorted(r.token for r in results) == tokens
