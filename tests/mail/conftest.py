"""A real SMTP server on loopback (aiosmtpd) that records messages and refuses on demand."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Recorder:
    """The handler: ``refuse_rcpt`` / ``refuse_data`` set a reply (e.g. "451 try later")."""

    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse_rcpt: str | None = None
    refuse_data: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data
        data = bytes(envelope.original_content or envelope.content)
        self.raw.append(data)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        parsed = message_from_bytes(data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    port: int
    recorder: Recorder
    controller: Controller

    def url(self, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"from": "shop@beanthere.example", **query}.items())
        return f"smtp://127.0.0.1:{self.port}/?{q}"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"shop",
        b"p@ss word",
    )
    # handled=False: the server answers a refusal itself (535); the default, handled=True,
    # means the authenticator already replied, and the client would wait for its timeout.
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,  # loopback only: the test checks AUTH itself
    )
    controller.start()
    try:
        yield SmtpServer(port, recorder, controller)
    finally:
        controller.stop()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), PEM files: the STARTTLS/SMTPS server's."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.pem", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TlsSmtp:
    kind: str  # starttls or smtps
    port: int
    recorder: Recorder
    client_context: ssl.SSLContext
    cert: Path  # the server's self-signed certificate (a CA file for clients in other processes)


@pytest.fixture(params=["starttls", "smtps"])
def tls_smtp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsSmtp]:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    recorder = Recorder()
    port = free_port()
    options: dict[str, Any] = {"authenticator": _authenticate}
    if request.param == "starttls":
        options |= {"tls_context": server_context, "require_starttls": True}
    else:
        # TLS from the first byte; aiosmtpd counts only STARTTLS as TLS for AUTH.
        options |= {"ssl_context": server_context, "auth_require_tls": False}
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield TlsSmtp(request.param, port, recorder, client_context, cert)
    finally:
        controller.stop()
