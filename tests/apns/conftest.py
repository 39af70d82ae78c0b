"""Fixtures shared by the APNs tests (client and fake).

- ``fake_apns``: a running :class:`FakeAPNs` with no authentication (accepts every valid push).
- ``dev_pki`` (from tests/conftest.py): the development PKI; its Pass Type ID certificate is the
  client certificate, ``dev_pki.wwdr_cert`` the CA to require (``client_ca_pem``).
- ``apns_key``: an ES256 provider-token key: ``.private_pem`` (what a .p8 holds), ``.public_pem``,
  ``.key_id``, ``.team_id``, ``.p8_path``; ``.token(iat=...)`` mints a JWT.
- ``raw_h2``: ``await raw_h2(host, port, ca_pem=..., cert=..., key=...)`` -> :class:`RawH2Client`,
  a minimal independent HTTP/2 client (h2 + asyncio streams) to drive servers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from passkit_stamps.testing import FakeAPNs

TOKEN = "ab" * 32  # a well-formed device token (32 bytes in hex)
TOPIC = "pass.com.example.stamps"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    stream_id: int
    reset: int | None = None  # RST_STREAM error code when the server reset the stream

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class _Pending:
    future: asyncio.Future[Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class RawH2Client:
    """A small HTTP/2 client over TLS: concurrent requests, GOAWAY and settings visible."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.pending: dict[int, _Pending] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.settings_received = asyncio.Event()
        self.close_error: BaseException | None = None
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())
        self._task = asyncio.create_task(self._read())

    @property
    def alpn(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.selected_alpn_protocol() if ssl_object else None

    @property
    def server_max_concurrent_streams(self) -> int:
        return self.conn.remote_settings.max_concurrent_streams

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                out = self.conn.data_to_send()
                if out:
                    self.writer.write(out)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as exc:
            # h2's state machine refuses every frame after a GOAWAY: the rest are lost here.
            self.close_error = exc
        finally:
            self.closed.set()
            for pending in self.pending.values():
                if not pending.future.done():
                    pending.future.set_exception(ConnectionError("connection closed"))
                    pending.future.exception()  # no "never retrieved" noise when unawaited

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
        elif isinstance(event, h2.events.ResponseReceived):
            pending = self.pending[event.stream_id]
            for name, value in event.headers:
                pending.headers[str(name)] = str(value)
            pending.status = int(pending.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.pending[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._finish(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            self._finish(event.stream_id, int(event.error_code))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def _finish(self, stream_id: int, reset: int | None) -> None:
        pending = self.pending.pop(stream_id, None)
        if pending is not None and not pending.future.done():
            response = Response(
                pending.status, pending.headers, bytes(pending.body), stream_id, reset
            )
            pending.future.set_result(response)

    def start(
        self,
        path: str,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes = b"{}",
        method: str = "POST",
    ) -> asyncio.Future[Response]:
        """Send one request now; the future resolves with its response."""
        stream_id = self.conn.get_next_available_stream_id()
        extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        request = [
            (":method", method),
            (":scheme", "https"),
            (":path", path),
            (":authority", "localhost"),
            *extra,
        ]
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = _Pending(future)
        self.conn.send_headers(stream_id, request, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.writer.write(self.conn.data_to_send())
        return future

    async def request(
        self,
        path: str,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes = b"{}",
        method: str = "POST",
        timeout: float = 5.0,
    ) -> Response:
        return await asyncio.wait_for(self.start(path, headers, body, method), timeout)

    async def push(self, token: str = TOKEN, topic: str | None = TOPIC, **headers: str) -> Response:
        """A Wallet pass update push: POST /3/device/<token>, apns-topic, body {}."""
        fields = {k.replace("_", "-"): v for k, v in headers.items()}
        if topic is not None:
            fields["apns-topic"] = topic
        return await self.request(f"/3/device/{token}", fields)

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def client_context(
    ca_pem: bytes, cert: Path | None = None, key: Path | None = None, alpn: bool = True
) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if alpn:
        context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


async def connect_raw_h2(
    host: str,
    port: int,
    *,
    ca_pem: bytes,
    cert: Path | None = None,
    key: Path | None = None,
    server_hostname: str = "localhost",
) -> RawH2Client:
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=client_context(ca_pem, cert, key),
        server_hostname=server_hostname,
        limit=1 << 20,
    )
    return RawH2Client(reader, writer)


RawH2Connect = Callable[..., Awaitable[RawH2Client]]


@pytest.fixture
async def raw_h2() -> AsyncIterator[RawH2Connect]:
    """Connects raw HTTP/2 clients; closes them all at the end of the test."""
    clients: list[RawH2Client] = []

    async def connect(host: str, port: int, **kwargs: Any) -> RawH2Client:
        client = await connect_raw_h2(host, port, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
async def fake_apns() -> AsyncIterator[FakeAPNs]:
    """A running fake APNs without authentication (every valid push answered 200)."""
    async with FakeAPNs() as apns:
        yield apns


@dataclass(frozen=True)
class ProviderKey:
    """An APNs auth key (.p8) as Apple issues them: P-256, with a key id and a team id."""

    private_key: ec.EllipticCurvePrivateKey
    key_id: str
    team_id: str
    p8_path: Path

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self, iat: float | None = None, *, key_id: str | None = None, iss: str | None = None
    ) -> str:
        claims = {
            "iss": self.team_id if iss is None else iss,
            "iat": int(time.time() if iat is None else iat),
        }
        return jwt.encode(
            claims, self.private_key, algorithm="ES256", headers={"kid": key_id or self.key_id}
        )


@pytest.fixture(scope="session")
def apns_key(tmp_path_factory: pytest.TempPathFactory) -> ProviderKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path_factory.mktemp("apnskey") / "AuthKey_ABC123DEFG.p8"
    provider = ProviderKey(key, "ABC123DEFG", "EXAMPLE123", path)
    path.write_bytes(provider.private_pem)
    path.chmod(0o600)
    return provider
