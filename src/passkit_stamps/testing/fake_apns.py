"""A fake Apple Push Notification service: HTTP/2 over TLS on loopback, built on ``h2`` and asyncio.

It answers ``POST /3/device/<token>`` the way APNs does (status, ``apns-id`` header, JSON
``{"reason": ...}`` bodies), checks client certificates or provider tokens (ES256 JWT) like APNs,
records every push, and can be scripted: per-token replies (410 with a timestamp, any 400/403
reason, 429, 500/503, a delay, a dropped connection), ``GOAWAY`` after N streams or on demand, a
chosen ``SETTINGS_MAX_CONCURRENT_STREAMS``, an abrupt socket close. See docs/testing.md.

Run it alone (for benchmarks, or to point a client in another process at it)::

    python -m passkit_stamps.testing.fake_apns --port 0 --quiet

It prints ``LISTENING <host> <port>`` and ``CA <path of the CA to trust>``, serves until SIGTERM
or SIGINT, then prints ``PUSHES <n> DELIVERED <n> CONNECTIONS <n> CPU_SECONDS <s>`` (CPU
used while serving).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hpack
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from ..errors import PasskitStampsError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "REASONS",
    "FakeAPNs",
    "FakeAPNsError",
    "PushReply",
    "RecordedPush",
    "ServerIdentity",
]

#: Every reason of Apple's table ("Handling notification responses from APNs") with its status.
REASONS: Mapping[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}

#: The largest payload APNs accepts for a regular (non-VoIP) notification.
MAX_PAYLOAD_BYTES = 4096

# The reason a scripted reply gets when only a status is given and it has one obvious reason.
_DEFAULT_REASON = {
    410: "Unregistered",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
    404: "BadPath",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
}
_PUSH_TYPES = frozenset(
    b"alert background location voip complication fileprovider mdm liveactivity pushtotalk "
    b"widgets controls".split()
)
_PRIORITIES = frozenset((b"1", b"5", b"10"))
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_TOKEN = re.compile(rb"(?:[0-9a-fA-F]{2}){32,100}")  # APNs device tokens: 32+ bytes in hex
_TOPIC = re.compile(rb"[A-Za-z0-9][A-Za-z0-9.\-_]*")
_TOKEN_MAX_AGE = 3600.0  # APNs refuses provider tokens older than one hour
_TOKEN_MIN_RENEWAL = 1200.0  # ... and a new token sooner than 20 minutes after the last one
_TOKEN_FUTURE_SKEW = 300.0  # the fake's choice: an iat further in the future is invalid
_PATH_PREFIX = b"/3/device/"
_SEND_HEADERS = h2.stream.StreamInputs.SEND_HEADERS
_SEND_END_STREAM = h2.stream.StreamInputs.SEND_END_STREAM
# The fast 200 path uses h2's stream state machine directly; other h2 versions get the slow path.
_FAST_ANSWERS = hasattr(h2.stream, "H2StreamStateMachine") and hasattr(
    h2.stream.H2StreamStateMachine, "process_input"
)
_OK = (b":status", b"200")
_COMPACT = (",", ":")  # APNs sends compact JSON
# HPACK: indexed field 8 (":status: 200"), then a literal without indexing, new name "apns-id".
_OK_BLOCK_HEAD = b"\x88\x00\x07apns-id"
# A whole HEADERS frame (END_STREAM | END_HEADERS) answering 200, but for stream id and apns-id.
_OK_FRAME_HEAD = (len(_OK_BLOCK_HEAD) + 1 + 36).to_bytes(3, "big") + b"\x01\x05"
_OK_BLOCK = _OK_BLOCK_HEAD + b"\x24"  # then the 36 characters of the apns-id


class FakeAPNsError(PasskitStampsError, ValueError):
    """The fake APNs was configured or scripted wrongly (the message names the argument)."""


@dataclass(frozen=True, slots=True)
class PushReply:
    """How the fake answers a push: a status and APNs reason, after ``delay`` seconds.

    ``times=None`` answers every later push so; ``times=n`` only the next n pushes. A 410 carries
    ``timestamp_ms`` (default: the time of the push). ``drop=True`` closes the TCP connection
    abruptly instead of answering; ``goaway=True`` answers, then sends GOAWAY with
    ``{"reason": ...}`` as debug data and closes the connection once its streams are answered,
    as APNs does after some errors. Reasons outside Apple's table are sent verbatim.
    """

    status: int = 200
    reason: str | None = None
    timestamp_ms: int | None = None
    delay: float = 0.0
    times: int | None = None
    drop: bool = False
    goaway: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise FakeAPNsError(f"PushReply.status must be 200-599, not {self.status}")
        if self.status == 200 and self.reason is not None:
            raise FakeAPNsError("PushReply.reason must be None for status 200")
        if self.status != 200 and self.reason is None:
            default = _DEFAULT_REASON.get(self.status)
            if default is None:
                raise FakeAPNsError(
                    f"PushReply.reason is required for status {self.status} "
                    f"(one of {sorted(r for r, s in REASONS.items() if s == self.status)})"
                )
            object.__setattr__(self, "reason", default)
        expected = REASONS.get(self.reason or "", self.status)
        if expected != self.status:
            raise FakeAPNsError(
                f"PushReply.reason {self.reason!r} goes with status {expected}, not {self.status}"
            )
        if self.timestamp_ms is not None and self.status != 410:
            raise FakeAPNsError("PushReply.timestamp_ms is only sent with status 410")
        if not self.delay >= 0:
            raise FakeAPNsError(f"PushReply.delay must be >= 0 seconds, not {self.delay}")
        if self.times is not None and self.times < 1:
            raise FakeAPNsError(f"PushReply.times must be None (always) or >= 1, not {self.times}")


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """One request the fake received and what it answered.

    ``headers`` holds the regular (non-pseudo) request headers, names lower case; ``apns_id`` is
    the id the fake answered with (the request's, or a new UUID). Requests refused by the fake's
    own checks (bad path, token, header, credentials) are recorded too, with their status/reason.
    """

    token: str
    topic: str | None
    headers: dict[str, str]
    body: bytes
    connection_id: int
    stream_id: int
    apns_id: str
    status: int = 200
    reason: str | None = None


@dataclass(frozen=True)
class ServerIdentity:
    """The fake's TLS identity: its certificate and key, and the CA a client must trust."""

    ca_pem: bytes
    certificate_pem: bytes
    key_pem: bytes

    @staticmethod
    def development() -> ServerIdentity:
        """A CA and a localhost/127.0.0.1/::1 certificate from the dev PKI (one per process)."""
        return _development_identity()


@cache
def _development_identity() -> ServerIdentity:
    # The RSA root costs ~0.1 s, so every FakeAPNs of a process shares one identity.
    from ..runtime.devpki import make_root, make_tls_server_certificate, pem_certificate, pem_key

    ca_cert, ca_key = make_root(common_name="passkit_stamps fake APNs CA (development only)")
    cert, key = make_tls_server_certificate(ca_cert, ca_key)
    return ServerIdentity(pem_certificate(ca_cert), pem_certificate(cert), pem_key(key))


class _Request:
    __slots__ = ("body", "headers")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = b""


class _ResponseEncoder(hpack.Encoder):
    """HPACK for the fake's answers; a 200 is built by hand, the rest by hpack.

    A 200 is ``:status: 200`` (static table entry 8) and ``apns-id`` as a literal without
    indexing (raw, not Huffman): the same bytes hpack could send, but no Huffman coding and no
    dynamic table churn for an id used once. It is most of the fake's answers under load.
    """

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        # h2 hands over copies (HeaderTuple), so match by value.
        if len(headers) == 2 and headers[0] == _OK and headers[1][0] == b"apns-id":
            apns_id: bytes = headers[1][1]
            return _OK_BLOCK_HEAD + bytes((len(apns_id),)) + apns_id
        return super().encode(headers, huffman)


class _ServerH2Connection(h2.connection.H2Connection):
    """h2's server side without its O(open streams) scan on every HEADERS frame.

    h2 counts open streams by walking all of them (and drops closed ones on the way) for each
    new stream: with hundreds of requests in one read that is quadratic. Below the limit, the
    number of known streams is an upper bound and enough; near it, h2 counts (and cleans up).
    """

    @property
    def open_inbound_streams(self) -> int:
        known = len(self.streams)
        if known < min(self.local_settings.max_concurrent_streams, 1024):
            return known
        return super().open_inbound_streams


class _Connection(asyncio.Protocol):
    """One client connection: h2 state machine, fed from the socket, answered in batches."""

    def __init__(self, server: FakeAPNs) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn = _ServerH2Connection(config=server._h2_config)
        self.conn.encoder = _ResponseEncoder()
        self.requests: dict[int, _Request] = {}
        self.out: list[bytes] = []  # pre-built frames, written with h2's at the end of a read
        self.unanswered = 0  # streams received and not answered yet (for peak_concurrent_streams)
        self.connection_id = 0
        self.streams_received = 0
        self.cert_topic: str | None = None
        self.has_cert = False
        self.tokens: dict[bytes, tuple[str | None, float]] = {}  # JWT -> (refusal, iat)
        self.last_token_iat: float | None = None
        self.goaway_sent = False  # sent, or decided (draining): no new streams from now on
        self.last_stream_id = 0
        self.pending_goaway: tuple[int, bytes] | None = None  # sent once the streams are answered
        self.late: set[asyncio.TimerHandle] = set()
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        server.connections_opened += 1
        self.connection_id = server.connections_opened
        server._connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.has_cert = True
            uid = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
                NameOID.USER_ID
            )
            if uid:
                self.cert_topic = str(uid[0].value)  # a Pass Type ID certificate's one topic
        conn = self.conn
        conn.initiate_connection()
        # Announced in a second SETTINGS frame: h2 enforces it once the client has acknowledged it,
        # so a client that opened streams before reading our settings is not punished.
        conn.update_settings(
            {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams}
        )
        conn.increment_flow_control_window(server._connection_window_bonus)
        self.transport.write(conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        for handle in self.late:
            handle.cancel()
        self.late.clear()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error code (e.g. too many concurrent streams).
            self.server.protocol_errors.append(f"connection {self.connection_id}: {exc}")
            self._flush()
            self._close()
            return
        requests = self.requests
        server = self.server
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request_received(event)  # type: ignore[arg-type]
            elif kind is h2.events.DataReceived:
                sid = event.stream_id  # type: ignore[attr-defined]
                request = requests.get(sid)
                if request is not None:
                    request.body += event.data  # type: ignore[attr-defined]
                conn.acknowledge_received_data(event.flow_controlled_length, sid)  # type: ignore[attr-defined]
            elif kind is h2.events.StreamEnded:
                request = requests.pop(event.stream_id, None)  # type: ignore[attr-defined]
                if request is not None:
                    server._answer(self, event.stream_id, request)  # type: ignore[attr-defined]
                    if self.closed:
                        return
            elif kind is h2.events.StreamReset:
                if requests.pop(event.stream_id, None) is not None:  # type: ignore[attr-defined]
                    self.unanswered -= 1
            elif kind is h2.events.ConnectionTerminated:
                # The client said GOAWAY: finish what is in flight, then close.
                self.goaway_sent = True
                self.last_stream_id = conn.highest_inbound_stream_id
        self._flush()
        if self.goaway_sent:
            self._close_if_done()

    # -- internals ------------------------------------------------------------------------------

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.goaway_sent and sid > self.last_stream_id:
            # Opened after our GOAWAY: not processed, safe for the client to retry elsewhere.
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self.requests[sid] = _Request(event.headers)
        server = self.server
        self.unanswered += 1
        if self.unanswered > server.peak_concurrent_streams:
            server.peak_concurrent_streams = self.unanswered
        self.streams_received += 1
        after = server._goaway_after
        if after is not None and not self.goaway_sent and self.streams_received >= after[0]:
            self.goaway(after[1], after[2], last_stream_id=sid, drain=True)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if self.out:
            data += b"".join(self.out)
            self.out.clear()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def respond(self, stream_id: int, status: int, apns_id: bytes, body: bytes) -> None:
        conn = self.conn
        self.unanswered -= 1
        try:
            if status == 200:
                stream = conn.streams.get(stream_id) if _FAST_ANSWERS else None
                if stream is not None and len(apns_id) == 36:
                    # The hot path: h2's stream state moves as send_headers() would move it,
                    # the frame is pre-built bytes (send_headers costs more than the request).
                    machine = stream.state_machine
                    machine.process_input(_SEND_HEADERS)
                    machine.process_input(_SEND_END_STREAM)
                    self.out.append(
                        _OK_FRAME_HEAD + stream_id.to_bytes(4, "big") + _OK_BLOCK + apns_id
                    )
                    return
                conn.send_headers(stream_id, [_OK, (b"apns-id", apns_id)], end_stream=True)
            else:
                conn.send_headers(
                    stream_id,
                    [
                        (b":status", str(status).encode()),
                        (b"apns-id", apns_id),
                        (b"content-type", b"application/json; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                conn.send_data(stream_id, body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client reset the stream (or the connection) meanwhile

    def respond_later(
        self,
        delay: float,
        stream_id: int,
        status: int,
        apns_id: bytes,
        body: bytes,
        goaway: bytes | None,
    ) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.late.discard(handle)
            if self.closed:
                return
            self.respond(stream_id, status, apns_id, body)
            if goaway is not None:
                self.goaway(0, goaway, drain=True)
            self._flush()
            if self.goaway_sent:
                self._close_if_done()

        handle = loop.call_later(delay, fire)
        self.late.add(handle)

    def goaway(
        self,
        error_code: int,
        debug: bytes,
        *,
        last_stream_id: int | None = None,
        drain: bool = False,
    ) -> None:
        """GOAWAY, graceful: streams up to the last id are answered, later ones refused.

        ``drain=False`` sends the frame now, before the answers still due (RFC 9113 allows it);
        ``drain=True`` sends it once those are answered. Either way the connection closes then.
        """
        if self.goaway_sent or self.closed or self.transport is None:
            return
        last = self.conn.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self.goaway_sent = True
        self.last_stream_id = last
        for sid in [s for s in self.requests if s > last]:
            del self.requests[sid]
            self.unanswered -= 1
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        self.pending_goaway = (error_code, debug)
        if not drain:
            self._send_goaway()
        self._close_if_done()

    def _send_goaway(self) -> None:
        if self.pending_goaway is None or self.transport is None or self.closed:
            return
        error_code, debug = self.pending_goaway
        self.pending_goaway = None
        self._flush()  # frames queued before stay before the GOAWAY
        # Written by hand: h2's close_connection() would forbid answering the streams <= last.
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = error_code
        frame.additional_data = debug
        self.transport.write(frame.serialize())
        self.server.goaways_sent += 1

    def _close_if_done(self) -> None:
        if self.unanswered <= 0 and not self.late:
            self._flush()
            self._send_goaway()
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class FakeAPNs:
    """A fake APNs on loopback (``async with FakeAPNs() as apns: ...``); see the module docstring.

    ``client_ca_pem``: require a TLS client certificate issued by this CA (PEM; may hold several
    certificates; an intermediate such as the development WWDR is accepted as a trust anchor).
    ``jwt_public_keys``: key id -> PEM public key (P-256): without a client certificate, every
    request needs ``authorization: bearer <ES256 JWT>`` with that ``kid``, ``iss`` = ``team_id``
    (when given) and an ``iat`` under an hour old, as APNs checks. With both, either suffices.
    ``topics``: the allowed ``apns-topic`` values (default: the client certificate's pass type
    id, or anything). ``clock``: seconds since the epoch for the token checks (tests inject one).
    """

    def __init__(
        self,
        *,
        client_ca_pem: bytes | None = None,
        jwt_public_keys: Mapping[str, bytes] | None = None,
        team_id: str | None = None,
        topics: Collection[str] | None = None,
        max_concurrent_streams: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        identity: ServerIdentity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= max_concurrent_streams <= 2**31 - 1:
            raise FakeAPNsError(
                f"max_concurrent_streams must be 1..2**31-1, not {max_concurrent_streams}"
            )
        self.client_ca_pem = client_ca_pem
        self.team_id = team_id
        self.topics = frozenset(topics) if topics is not None else None
        self.max_concurrent_streams = max_concurrent_streams
        self.host = host
        self.port = port
        self.record = record
        self.identity = identity
        self.clock = clock
        self._jwt_keys = _load_jwt_keys(jwt_public_keys) if jwt_public_keys is not None else None

        self.pushes: list[RecordedPush] = []
        self.push_count = 0
        self.delivered_count = 0
        self.connections_opened = 0
        self.peak_concurrent_streams = 0
        self.goaways_sent = 0
        self.protocol_errors: list[str] = []
        self.serving_cpu_start = 0.0  # process CPU time when the standalone fake began serving

        self._id_prefix = str(uuid.uuid4())[:24].encode()  # "xxxxxxxx-xxxx-4xxx-xxxx-"
        self._ids = 0
        self._replies: dict[str, list[list[Any]]] = {}  # token -> [[PushReply, remaining]]
        self._default: list[list[Any]] = []
        self._goaway_after: tuple[int, int, bytes] | None = None
        self._connections: set[_Connection] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._server: asyncio.Server | None = None
        self._dir: Path | None = None
        self._connection_window_bonus = 16 * 1024 * 1024  # fewer WINDOW_UPDATEs under load
        self._h2_config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # The fake checks what APNs checks itself; skipping h2's generic header checks
            # keeps it well ahead of any client in a benchmark.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.ca_pem = b""
        self.ca_file = Path()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (done by ``async with``)."""
        identity = self.identity or ServerIdentity.development()
        self._dir = Path(tempfile.mkdtemp(prefix="fake-apns-"))
        cert_file = self._dir / "server.pem"
        key_file = self._dir / "server.key.pem"
        cert_file.write_bytes(identity.certificate_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.key_pem)
        self.ca_pem = identity.ca_pem
        self.ca_file = self._dir / "ca.pem"
        self.ca_file.write_bytes(identity.ca_pem)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        key_file.unlink()  # loaded: the key need not stay on disk
        context.set_alpn_protocols(["h2"])
        if self.client_ca_pem is not None:
            try:
                context.load_verify_locations(cadata=self.client_ca_pem.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                raise FakeAPNsError(f"client_ca_pem is not a PEM certificate: {exc}") from exc
            context.verify_mode = (
                ssl.CERT_OPTIONAL if self._jwt_keys is not None else ssl.CERT_REQUIRED
            )
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=context, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection (done by ``async with``)."""
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> FakeAPNs:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- scripting ------------------------------------------------------------------------------

    def reply(self, token: str, reply: PushReply) -> None:
        """Answer pushes to ``token`` with ``reply`` (queued after earlier scripts for it)."""
        self._replies.setdefault(token.lower(), []).append([reply, reply.times])

    def reply_default(self, reply: PushReply) -> None:
        """Answer pushes to tokens without a script of their own with ``reply`` (queued)."""
        self._default.append([reply, reply.times])

    def clear_replies(self) -> None:
        """Forget every script: all valid pushes get 200 again."""
        self._replies.clear()
        self._default.clear()

    def goaway_after(self, n_streams: int | None, error_code: int = 0, debug: bytes = b"") -> None:
        """Each connection sends GOAWAY once it has received ``n_streams`` streams (None: never).

        Streams up to that one are answered, later ones refused (RST_STREAM REFUSED_STREAM:
        not processed, safe to retry); then GOAWAY with that stream as last id, then close.
        """
        if n_streams is not None and n_streams < 1:
            raise FakeAPNsError(f"goaway_after: n_streams must be >= 1 or None, not {n_streams}")
        self._goaway_after = None if n_streams is None else (n_streams, error_code, debug)

    async def goaway(self, error_code: int = 0, debug: bytes = b"", *, drain: bool = False) -> None:
        """GOAWAY on every open connection (e.g. ``debug=b'{"reason":"Shutdown"}'``), then close.

        The last stream id is the highest received: those streams are still answered, after the
        GOAWAY frame (as RFC 9113 allows; h2-based clients cannot read frames after a GOAWAY and
        must retry them) or, with ``drain=True``, before it.
        """
        for connection in list(self._connections):
            connection.goaway(error_code, debug, drain=drain)
        await asyncio.sleep(0)

    async def drop_connections(self) -> None:
        """Close every connection abruptly: no GOAWAY, no TLS close_notify."""
        for connection in list(self._connections):
            connection.abort()
        await asyncio.sleep(0)

    async def wait_for_pushes(self, n: int, timeout: float = 5.0) -> list[RecordedPush]:
        """Wait until ``n`` pushes in total were answered; return the recorded ones."""
        if self.push_count < n:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, future)
            self._waiters.append(entry)
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"the fake APNs answered {self.push_count} of {n} pushes in {timeout} s"
                ) from None
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.pushes

    @property
    def delivered(self) -> list[RecordedPush]:
        """The recorded pushes answered 200."""
        return [p for p in self.pushes if p.status == 200]

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    # -- the request path -----------------------------------------------------------------------

    def _answer(self, connection: _Connection, stream_id: int, request: _Request) -> None:
        headers = dict(request.headers)
        token_bytes = b""
        path = headers.get(b":path", b"")
        if path.startswith(_PATH_PREFIX):
            token_bytes = path[len(_PATH_PREFIX) :]
        given_id = headers.get(b"apns-id")
        apns_id = (
            given_id if given_id is not None and _UUID.fullmatch(given_id) else self._new_apns_id()
        )
        topic_bytes = headers.get(b"apns-topic")
        reply: PushReply | None = None
        reason = self._refusal(connection, headers, len(request.headers), request.body)
        if reason is None and (self._replies or self._default):
            reply = self._scripted(token_bytes.decode("ascii", "replace").lower())
            if reply is not None:
                reason = reply.reason
        status = 200 if reason is None else REASONS.get(reason, 0)
        if reply is not None:
            status = reply.status

        self.push_count += 1
        if status == 200:
            self.delivered_count += 1
        if self.record:
            topic = topic_bytes if topic_bytes is not None else None
            self.pushes.append(
                RecordedPush(
                    token=token_bytes.decode("ascii", "replace"),
                    topic=topic.decode("utf-8", "replace") if topic is not None else None,
                    headers={
                        k.decode("ascii", "replace"): v.decode("utf-8", "replace")
                        for k, v in request.headers
                        if not k.startswith(b":")
                    },
                    body=request.body,
                    connection_id=connection.connection_id,
                    stream_id=stream_id,
                    apns_id=apns_id.decode("ascii"),
                    status=status,
                    reason=reason,
                )
            )
        if self._waiters:
            self._wake_waiters()

        if status == 200:
            body = b""
        elif status == 410:
            timestamp = reply.timestamp_ms if reply is not None else None
            if timestamp is None:
                timestamp = int(self.clock() * 1000)
            body = json.dumps(
                {"reason": reason, "timestamp": timestamp}, separators=_COMPACT
            ).encode()
        else:
            body = json.dumps({"reason": reason}, separators=_COMPACT).encode()
        if reply is None:
            connection.respond(stream_id, status, apns_id, body)
            return
        if reply.drop:
            connection.abort()
            return
        goaway_debug = (
            json.dumps({"reason": reason or "Shutdown"}).encode() if reply.goaway else None
        )
        if reply.delay > 0:
            connection.respond_later(reply.delay, stream_id, status, apns_id, body, goaway_debug)
            return
        connection.respond(stream_id, status, apns_id, body)
        if goaway_debug is not None:
            connection.goaway(0, goaway_debug, drain=True)

    def _new_apns_id(self) -> bytes:
        # A random UUID prefix per server and a counter: unique, and far cheaper than uuid4().
        self._ids += 1
        return b"%s%012x" % (self._id_prefix, self._ids)

    def _scripted(self, token: str) -> PushReply | None:
        queue = self._replies.get(token) or self._default
        if not queue:
            return None
        entry = queue[0]
        reply: PushReply = entry[0]
        if entry[1] is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                queue.pop(0)
        return reply

    def _refusal(
        self, connection: _Connection, headers: dict[bytes, bytes], count: int, body: bytes
    ) -> str | None:
        """The APNs reason this request is refused for, or None (checks in APNs' order)."""
        if headers.get(b":method") != b"POST":
            return "MethodNotAllowed"
        path = headers.get(b":path", b"")
        if not path.startswith(_PATH_PREFIX):
            return "BadPath"
        if len(headers) != count:
            return "DuplicateHeaders"
        if not connection.has_cert and self._jwt_keys is not None:
            refusal = self._token_refusal(connection, headers.get(b"authorization"))
            if refusal is not None:
                return refusal
        token = path[len(_PATH_PREFIX) :]
        if not token:
            return "MissingDeviceToken"
        if not _HEX_TOKEN.fullmatch(token):
            return "BadDeviceToken"
        topic = headers.get(b"apns-topic")
        if topic is None:
            if connection.cert_topic is None:
                return "MissingTopic"  # only a certificate with one topic implies it
        elif not _TOPIC.fullmatch(topic):
            return "BadTopic"
        else:
            allowed = self.topics
            if allowed is None and connection.cert_topic is not None:
                allowed = frozenset((connection.cert_topic,))
            if allowed is not None and topic.decode() not in allowed:
                return "TopicDisallowed"
        push_type = headers.get(b"apns-push-type")
        if push_type is not None and push_type not in _PUSH_TYPES:
            return "InvalidPushType"
        priority = headers.get(b"apns-priority")
        if priority is not None and priority not in _PRIORITIES:
            return "BadPriority"
        expiration = headers.get(b"apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return "BadExpirationDate"
        apns_id = headers.get(b"apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            return "BadMessageId"
        collapse_id = headers.get(b"apns-collapse-id")
        if collapse_id is not None and len(collapse_id) > 64:
            return "BadCollapseId"
        if not body:
            return "PayloadEmpty"
        if len(body) > MAX_PAYLOAD_BYTES:
            return "PayloadTooLarge"
        return None

    def _token_refusal(self, connection: _Connection, authorization: bytes | None) -> str | None:
        if authorization is None:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return "InvalidProviderToken"
        known = connection.tokens.get(token)
        if known is None:
            known = self._verify_token(token)
            if known[0] is None:
                iat = known[1]
                last = connection.last_token_iat
                if last is not None and abs(iat - last) < _TOKEN_MIN_RENEWAL:
                    known = ("TooManyProviderTokenUpdates", iat)
                else:
                    connection.last_token_iat = iat
            if len(connection.tokens) > 64:
                connection.tokens.clear()
            connection.tokens[token] = known
        refusal, iat = known
        if refusal is not None:
            return refusal
        if self.clock() - iat > _TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        return None

    def _verify_token(self, token: bytes) -> tuple[str | None, float]:
        assert self._jwt_keys is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "InvalidProviderToken", 0.0
        key = self._jwt_keys.get(str(header.get("kid")))
        if header.get("alg") != "ES256" or key is None:
            return "InvalidProviderToken", 0.0
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken", 0.0
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return "InvalidProviderToken", 0.0
        if self.team_id is not None and claims.get("iss") != self.team_id:
            return "InvalidProviderToken", float(iat)
        if iat - self.clock() > _TOKEN_FUTURE_SKEW:
            return "InvalidProviderToken", float(iat)
        return None, float(iat)

    def _wake_waiters(self) -> None:
        count = self.push_count
        for n, future in self._waiters:
            if count >= n and not future.done():
                future.set_result(None)


def _load_jwt_keys(keys: Mapping[str, bytes]) -> dict[str, ec.EllipticCurvePublicKey]:
    loaded: dict[str, ec.EllipticCurvePublicKey] = {}
    for key_id, pem in keys.items():
        try:
            key = load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise FakeAPNsError(f"jwt_public_keys[{key_id!r}] is not a PEM public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise FakeAPNsError(f"jwt_public_keys[{key_id!r}] must be a P-256 key (ES256)")
        loaded[key_id] = key
    return loaded


# -- standalone process ---------------------------------------------------------------------------


class _QuietLog:
    """hpack's module logger minus its ~25 debug calls per request (see speed_up_hpack)."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def _huffman_byte_table() -> list[tuple[int, bytes, bool] | None]:
    """hpack's Huffman state machine, one byte per step instead of one nibble.

    Entry ``state * 256 + byte``: (next state, the 0-2 symbols emitted, whether a code ends
    there), or None where hpack's table says the input is invalid.
    """
    from hpack.huffman_table import (
        HUFFMAN_COMPLETE,
        HUFFMAN_EMIT_SYMBOL,
        HUFFMAN_FAIL,
        HUFFMAN_TABLE,
    )

    table: list[tuple[int, bytes, bool] | None] = [None] * (len(HUFFMAN_TABLE) // 16 * 256)
    for state in range(len(HUFFMAN_TABLE) // 16):
        for byte in range(256):
            middle, flags1, symbol1 = HUFFMAN_TABLE[state * 16 + (byte >> 4)]
            if flags1 & HUFFMAN_FAIL:
                continue
            end, flags2, symbol2 = HUFFMAN_TABLE[middle * 16 + (byte & 0x0F)]
            if flags2 & HUFFMAN_FAIL:
                continue
            emitted = bytes(
                [symbol1] * bool(flags1 & HUFFMAN_EMIT_SYMBOL)
                + [symbol2] * bool(flags2 & HUFFMAN_EMIT_SYMBOL)
            )
            table[state * 256 + byte] = (end, emitted, bool(flags2 & HUFFMAN_COMPLETE))
    return table


def decode_huffman(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
    """hpack.huffman_table.decode_huffman, same results and errors, about twice as fast."""
    if not huffman_string:
        return b""
    table = _HUFFMAN_BYTES
    if not table:
        table.extend(_huffman_byte_table())  # 64 Ki entries, built once, on first use
    state = 0
    complete = False
    out = bytearray()
    for byte in bytes(huffman_string):
        entry = table[(state << 8) | byte]
        if entry is None:
            raise hpack.HPACKDecodingError("Invalid Huffman string")
        state, emitted, complete = entry
        out += emitted
    if not complete:
        raise hpack.HPACKDecodingError("Incomplete Huffman string")
    return bytes(out)


_HUFFMAN_BYTES: list[tuple[int, bytes, bool] | None] = []


def speed_up_hpack() -> None:
    """Make hpack's decoder cheaper for this whole process: byte-wise Huffman, no debug logs.

    The standalone fake does this (nothing else runs in its process); decoding request headers
    is the largest part of its work per push. Not done on import: it changes hpack globally.
    """
    import hpack.hpack

    hpack.hpack.decode_huffman = decode_huffman  # type: ignore[attr-defined]
    if not isinstance(hpack.hpack.log, _QuietLog):
        hpack.hpack.log = _QuietLog(hpack.hpack.log)  # type: ignore[assignment]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m passkit_stamps.testing.fake_apns",
        description="A fake APNs (HTTP/2 + TLS) on loopback, for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--max-concurrent-streams", type=int, default=1000)
    parser.add_argument("--client-ca", type=Path, help="require client certificates from this CA")
    parser.add_argument(
        "--jwt-key",
        action="append",
        default=[],
        metavar="KEYID=FILE",
        help="accept provider tokens signed by this P-256 public key (PEM); repeatable",
    )
    parser.add_argument("--team-id", help="the iss provider tokens must carry")
    parser.add_argument("--topic", action="append", help="an allowed apns-topic; repeatable")
    parser.add_argument("--cert", type=Path, help="server certificate (PEM) instead of a dev one")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    parser.add_argument("--ca", type=Path, help="the CA of --cert (default: --cert itself)")
    parser.add_argument("--ca-out", type=Path, help="also write the CA to trust to this file")
    parser.add_argument("--quiet", action="store_true", help="count pushes, do not keep them")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> FakeAPNs:
    identity = None
    if args.cert is not None or args.key is not None:
        if args.cert is None or args.key is None:
            raise FakeAPNsError("--cert and --key go together")
        certificate = args.cert.read_bytes()
        identity = ServerIdentity(
            ca_pem=args.ca.read_bytes() if args.ca else certificate,
            certificate_pem=certificate,
            key_pem=args.key.read_bytes(),
        )
    keys: dict[str, bytes] = {}
    for item in args.jwt_key:
        key_id, sep, file = item.partition("=")
        if not sep or not key_id or not file:
            raise FakeAPNsError(f"--jwt-key must be KEYID=FILE, not {item!r}")
        keys[key_id] = Path(file).read_bytes()
    apns = FakeAPNs(
        client_ca_pem=args.client_ca.read_bytes() if args.client_ca else None,
        jwt_public_keys=keys or None,
        team_id=args.team_id,
        topics=args.topic,
        max_concurrent_streams=args.max_concurrent_streams,
        host=args.host,
        port=args.port,
        record=not args.quiet,
        identity=identity,
    )
    await apns.start()
    ca_path = apns.ca_file
    if args.ca_out is not None:
        args.ca_out.write_bytes(apns.ca_pem)
        ca_path = args.ca_out
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before LISTENING: a caller may stop at once
        loop.add_signal_handler(signum, stop.set)
    apns.serving_cpu_start = time.process_time()
    print(f"LISTENING {apns.host} {apns.port}", flush=True)
    print(f"CA {ca_path}", flush=True)
    try:
        await stop.wait()
    finally:
        await apns.close()
    return apns


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake APNs until SIGTERM/SIGINT; print the counts on exit."""
    args = _parse_args(argv)
    use_uvloop = args.loop == "uvloop"
    if args.loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            use_uvloop = True
    speed_up_hpack()
    try:
        if use_uvloop:
            import uvloop

            apns = uvloop.run(_serve(args))
        else:
            apns = asyncio.run(_serve(args))
    except (FakeAPNsError, OSError) as exc:
        print(f"fake APNs: {exc}", file=sys.stderr)
        return 2
    print(
        f"PUSHES {apns.push_count} DELIVERED {apns.delivered_count} "
        f"CONNECTIONS {apns.connections_opened} "
        f"CPU_SECONDS {time.process_time() - apns.serving_cpu_start:.3f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
