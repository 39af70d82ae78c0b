"""The asyncio side of the APNs client: sockets, TLS, timers, retries; the HTTP/2 logic is in
:mod:`._connection`.

No task per push: a push is a small object queued in a deque, sent by :meth:`APNsClient._pump`
into whichever connection has a free stream, and resolved by the connection's ``data_received``
(a future for :meth:`APNsClient.push`, a shared result queue for :meth:`APNsClient.push_many`).
Writes are batched: one ``transport.write`` per event-loop iteration and connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from ...errors import (
    APNsCertificateError,
    APNsClosedError,
    APNsConfigurationError,
    APNsInputError,
    APNsProviderTokenError,
    APNsRequestError,
    APNsServerCertificateError,
    APNsTopicError,
)
from ..credentials import SigningCredentials, Source
from ._auth import TokenAuth, client_ssl_context
from ._connection import (
    APNsConnection,
    ConnectionFailed,
    GoAway,
    PingAcknowledged,
    Ready,
    Response,
    StreamReset,
    encode_header_block,
)
from .results import (
    CONFIGURATION_REASONS,
    Action,
    DeadToken,
    Delivered,
    Failed,
    PushResult,
    RetryLater,
    classify,
    timestamp_from_ms,
)

__all__ = [
    "DEFAULT_EXPIRATION",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_PRIORITY",
    "DEFAULT_PUSH_TYPE",
    "APNsClient",
    "check_token",
]

log = logging.getLogger("passkit_stamps.apns")

DEFAULT_HOST = "api.push.apple.com"  # Wallet pass pushes exist only in production
DEFAULT_PORT = 443  # or 2197 where 443 is blocked
DEFAULT_PUSH_TYPE = "background"  # what works with Wallet: the payload has no alert
DEFAULT_PRIORITY = 5  # Apple asks for 5 (conserve power) with background pushes
DEFAULT_EXPIRATION = timedelta(hours=4)  # APNs keeps an undelivered pass update this long
BODY = b"{}"  # Wallet ignores the payload; the push only says "ask for updates"

_TOKEN = re.compile(r"[0-9A-Fa-f]{16,400}")
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,254}")
_PUSH_TYPES = frozenset({"background", "alert", "voip", "complication", "fileprovider", "mdm"})
_CERT_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED", "HANDSHAKE_FAILURE")


class _Single:
    """Where the result of :meth:`APNsClient.push` goes."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[PushResult]) -> None:
        self.future = future

    def deliver(self, result: PushResult) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Batch:
    """Where the results of one :meth:`APNsClient.push_many` go, in arrival order."""

    __slots__ = ("abandoned", "error", "loop", "outstanding", "results", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.results: deque[PushResult] = deque()
        self.outstanding = 0
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.abandoned = False

    def deliver(self, result: PushResult) -> None:
        self.outstanding -= 1
        if not self.abandoned:
            self.results.append(result)
        self._wake()

    def fail(self, error: BaseException) -> None:
        self.outstanding -= 1
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = self.loop.create_future()
        await self.waiter
        self.waiter = None


class _Push:
    __slots__ = ("attempts", "auth", "path", "renewed", "sink", "token", "topic")

    def __init__(self, token: str, topic: bytes, sink: _Single | _Batch) -> None:
        self.token = token
        self.path = b"/3/device/" + token.encode("ascii")
        self.topic = topic
        self.sink = sink
        self.attempts = 0  # failed attempts so far (retryable answers, lost connections)
        self.auth: bytes | None = None  # the provider token it was sent with
        self.renewed = False


class _Slot:
    """One place in the pool: its current connection, the next one being made, failures."""

    __slots__ = ("connecting", "failures", "protocol")

    def __init__(self) -> None:
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.failures = 0


class _Protocol(asyncio.Protocol):
    def __init__(self, client: APNsClient, slot: _Slot, conn: APNsConnection) -> None:
        self.client = client
        self.slot = slot
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._flush_scheduled = False
        self._in_receive = False
        self.last_received = self.loop.time()
        self._ping_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            transport = self.transport
            self.client._fail(
                APNsServerCertificateError(
                    f"{self.client.authority} does not speak HTTP/2 (ALPN h2): check the host"
                )
            )
            transport.abort()
            return
        self.conn.initiate()
        self.flush()
        self._arm_ping()

    def data_received(self, data: bytes) -> None:
        if self._flush_scheduled:
            # Bytes h2 queued must leave before it reads a GOAWAY (which clears its buffer).
            self.flush()
        self.last_received = self.loop.time()
        self._in_receive = True
        try:
            events = self.conn.receive(data)
            if events:
                self.client._on_events(self, events)
        finally:
            self._in_receive = False
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self.client._on_lost(self, exc)

    # -- writing -------------------------------------------------------------------------------

    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._in_receive:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.conn.close()
            self.flush()
            self.transport.close()

    # -- PING on idle --------------------------------------------------------------------------

    def _arm_ping(self) -> None:
        interval = self.client.ping_interval
        if interval:
            self._ping_timer = self.loop.call_later(interval, self._ping_tick)

    def _ping_tick(self) -> None:
        self._ping_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.loop.time() - self.last_received >= self.client.ping_interval:
            self.conn.ping()
            self.flush()
            self.loop.call_later(self.client.ping_timeout, self._ping_deadline)
        self._arm_ping()

    def _ping_deadline(self) -> None:
        if self.conn.ping_outstanding and self.transport is not None:
            log.warning("APNs connection did not answer PING: reconnecting")
            self.transport.abort()


class APNsClient:
    """Sends Wallet pass update pushes to APNs over HTTP/2.

    Authentication: ``credentials`` (the Pass Type ID certificate and key, as TLS client
    certificate: the default) and/or ``token_auth`` (:class:`TokenAuth`, a provider JWT from a
    ``.p8`` key). ``topic`` defaults to the certificate's pass type identifier.

    Use it as ``async with APNsClient(credentials) as apns:``; leaving the block waits up to
    ``close_timeout`` seconds for pushes in flight, then closes the connections.
    """

    def __init__(
        self,
        credentials: SigningCredentials | None = None,
        *,
        token_auth: TokenAuth | None = None,
        topic: str | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        ca: Source | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connections: int = 1,
        max_streams: int = 1000,
        max_in_flight: int = 2000,
        push_type: str = DEFAULT_PUSH_TYPE,
        priority: int = DEFAULT_PRIORITY,
        expiration: timedelta | None = DEFAULT_EXPIRATION,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials is None and token_auth is None:
            raise APNsInputError(
                "credentials: give the Pass Type ID SigningCredentials (certificate auth) or "
                "token_auth=TokenAuth(...) (a .p8 key)"
            )
        if topic is None:
            if credentials is None:
                raise APNsInputError("topic: token authentication needs the pass type identifier")
            topic = credentials.pass_type_identifier
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            raise APNsInputError(f"topic {topic!r} is not a pass type identifier")
        if (
            credentials is not None
            and token_auth is None
            and topic != credentials.pass_type_identifier
        ):
            raise APNsTopicError(
                f"topic {topic!r} is not the certificate's pass type "
                f"{credentials.pass_type_identifier!r}: a Pass Type ID certificate pushes "
                "only to its own pass type; use that certificate's pass type or token auth",
                reason="TopicDisallowed",
            )
        if push_type not in _PUSH_TYPES:
            raise APNsInputError(f"push_type {push_type!r} must be one of {sorted(_PUSH_TYPES)}")
        if priority not in (1, 5, 10):
            raise APNsInputError(
                f"priority {priority!r} must be 5 (Apple's value for Wallet), 10 or 1"
            )
        if not 1 <= connections <= 64:
            raise APNsInputError(f"connections {connections!r} must be from 1 to 64")
        if not 1 <= max_streams <= 100_000:
            raise APNsInputError(f"max_streams {max_streams!r} must be from 1 to 100000")
        if max_in_flight < 1:
            raise APNsInputError(f"max_in_flight {max_in_flight!r} must be at least 1")
        if retries < 0:
            raise APNsInputError(f"retries {retries!r} must not be negative")
        if not 0 < port < 65536:
            raise APNsInputError(f"port {port!r} must be from 1 to 65535")
        self.credentials = credentials
        self.token_auth = token_auth
        self.topic = topic
        self.host = host
        self.port = port
        self.authority = host if port == 443 else f"{host}:{port}"
        self._ssl = ssl_context or client_ssl_context(credentials, ca=ca)
        self.max_streams = max_streams
        self.max_in_flight = max_in_flight
        self.push_type = push_type
        self.priority = priority
        self.expiration = expiration
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._clock = clock
        self._slots = [_Slot() for _ in range(connections)]
        self._next_slot = 0
        self._draining: set[_Protocol] = set()
        self._waiting: deque[_Push] = deque()
        self._outstanding = 0  # pushes accepted and not yet resolved
        self._idle: asyncio.Event | None = None
        self._failure: APNsConfigurationError | None = None
        self._closing = False
        self._closed = False
        self._blocks: dict[tuple[bytes, bytes, bytes | None], tuple[bytes, bytes]] = {}
        self._topic_bytes = topic.encode("ascii")
        self._retry_timers: dict[asyncio.TimerHandle, _Push] = {}  # pushes backing off
        self.goaways: deque[GoAway] = deque(maxlen=32)  # the last GOAWAYs received, newest last
        self.connections_opened = 0

    # -- public API ----------------------------------------------------------------------------

    async def __aenter__(self) -> APNsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the pool's connections now (otherwise the first push does); raises the
        configuration error when the server refuses the certificate."""
        self._check_usable()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout * (self.retries + 1)
        # Poll: a refused certificate may only show after the handshake, on a later attempt.
        while self._failure is None and loop.time() < deadline:
            ready = [s for s in self._slots if s.protocol is not None and s.protocol.conn.ready]
            if len(ready) == len(self._slots):
                return
            self._ensure_connections()
            await asyncio.sleep(0.01)
        if self._failure is not None:
            raise self._failure

    async def push(self, token: str, *, topic: str | None = None) -> PushResult:
        """Send one pass update push to ``token`` and return its result."""
        self._check_usable()
        future: asyncio.Future[PushResult] = asyncio.get_running_loop().create_future()
        self._submit(_Push(check_token(token), self._topic_for(topic), _Single(future)))
        self._pump()
        return await future

    async def push_many(
        self,
        tokens: Iterable[str] | AsyncIterable[str],
        *,
        topic: str | None = None,
        window: int | None = None,
    ) -> AsyncIterator[PushResult]:
        """Push to every token, yielding results as they arrive (not in token order). At most
        ``window`` (default ``max_in_flight``) tokens are held at once, so a million tokens never
        sit in memory. A configuration error stops the pushes and is raised here."""
        self._check_usable()
        topic_bytes = self._topic_for(topic)
        limit = window or self.max_in_flight
        loop = asyncio.get_running_loop()
        batch = _Batch(loop)
        sync_it: Iterable[str] | None = None
        async_it: AsyncIterator[str] | None = None
        if isinstance(tokens, AsyncIterable):
            async_it = aiter(tokens)
        else:
            sync_it = iter(tokens)
        exhausted = False
        results = batch.results
        try:
            while True:
                if batch.error is not None:
                    raise batch.error
                if not exhausted and batch.outstanding < limit:
                    added = 0
                    while batch.outstanding < limit:
                        try:
                            if sync_it is not None:
                                token = next(sync_it)  # type: ignore[call-overload]
                            else:
                                assert async_it is not None
                                token = await anext(async_it)
                        except (StopIteration, StopAsyncIteration):
                            exhausted = True
                            break
                        self._check_usable()
                        push = _Push(check_token(token), topic_bytes, batch)
                        batch.outstanding += 1
                        self._outstanding += 1
                        self._waiting.append(push)
                        added += 1
                    if added:
                        self._pump()
                while results:
                    yield results.popleft()
                    if batch.error is not None:
                        raise batch.error
                if exhausted and batch.outstanding == 0:
                    return
                if batch.outstanding >= limit or exhausted:
                    await batch.wait()
        finally:
            batch.abandoned = True

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop taking pushes, wait up to ``timeout`` (default ``close_timeout``) for those in
        flight, then close every connection (a push still unanswered resolves RetryLater)."""
        if self._closed:
            return
        self._closing = True
        timeout = self.close_timeout if timeout is None else timeout
        if self._outstanding and self._failure is None:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        self._closed = True
        leftovers = self._cancel_retries()
        leftovers.extend(self._waiting)
        self._waiting.clear()
        protocols = self._protocols()
        for protocol in protocols:
            leftovers.extend(protocol.conn.abandon())
        for push in leftovers:
            self._resolve(push, RetryLater(push.token, None, "ClientClosed", push.attempts))
        for slot in self._slots:
            if slot.connecting is not None:
                slot.connecting.cancel()
        for protocol in protocols:
            protocol.close()
        if protocols:
            await asyncio.wait([p.closed for p in protocols], timeout=2.0)

    @property
    def in_flight(self) -> int:
        """Pushes accepted and not yet resolved (waiting, sent, or waiting to be retried)."""
        return self._outstanding

    # -- submitting and sending ----------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise APNsClosedError("the APNs client is closed: create a new one")

    def _topic_for(self, topic: str | None) -> bytes:
        if topic is None or topic == self.topic:
            return self._topic_bytes
        if self.token_auth is None:
            raise APNsTopicError(
                f"topic {topic!r}: certificate authentication pushes only to the certificate's "
                f"pass type {self.topic!r}",
                reason="TopicDisallowed",
            )
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            raise APNsInputError(f"topic {topic!r} is not a pass type identifier")
        return topic.encode("ascii")

    def _submit(self, push: _Push) -> None:
        self._outstanding += 1
        self._waiting.append(push)

    def _requeue(self, push: _Push, *, front: bool = False) -> None:
        if self._closed or self._failure is not None:
            return
        if front:
            self._waiting.appendleft(push)
        else:
            self._waiting.append(push)

    def _header_blocks(self, topic: bytes, now: float) -> tuple[bytes, bytes, bytes | None]:
        auth = self.token_auth.header() if self.token_auth is not None else None
        if self.expiration is None:
            expiration = b"0"
        else:
            expiration = str(int(now + self.expiration.total_seconds())).encode()
        key = (topic, expiration, auth)
        blocks = self._blocks.get(key)
        if blocks is None:
            if len(self._blocks) > 64:
                self._blocks.clear()
            blocks = encode_header_block(
                self.authority.encode("ascii"),
                [
                    (b"apns-topic", topic),
                    (b"apns-push-type", self.push_type.encode("ascii")),
                    (b"apns-priority", str(self.priority).encode("ascii")),
                    (b"apns-expiration", expiration),
                ],
                auth,
            )
            self._blocks[key] = blocks
        return blocks[0], blocks[1], auth

    def _pump(self) -> None:
        """Send waiting pushes on connections with free streams; open connections as needed."""
        waiting = self._waiting
        if not waiting or self._failure is not None or self._closed:
            return
        slots = self._slots
        n = len(slots)
        now = self._clock()
        cache: dict[bytes, tuple[bytes, bytes, bytes | None]] = {}
        for i in range(n):
            slot = slots[(self._next_slot + i) % n]
            protocol = slot.protocol
            if protocol is None:
                continue
            conn = protocol.conn
            capacity = conn.capacity
            if not capacity:
                continue
            send = conn.send_push
            while capacity and waiting:
                push = waiting.popleft()
                topic = push.topic
                blocks = cache.get(topic)
                if blocks is None:
                    blocks = cache[topic] = self._header_blocks(topic, now)
                push.auth = blocks[2]
                send(push.path, blocks[0], blocks[1], BODY, push)
                capacity -= 1
            protocol.schedule_flush()
            if not waiting:
                break
        if n > 1:
            self._next_slot = (self._next_slot + 1) % n
        if waiting:
            self._ensure_connections()

    def _ensure_connections(self) -> None:
        if self._closed or self._failure is not None:
            return
        for slot in self._slots:
            if slot.protocol is None and slot.connecting is None:
                slot.connecting = asyncio.get_running_loop().create_task(self._connect(slot))

    async def _connect(self, slot: _Slot) -> None:
        try:
            if slot.failures:
                await asyncio.sleep(self._backoff(slot.failures, base=0.1))
            loop = asyncio.get_running_loop()
            conn = APNsConnection(max_streams=self.max_streams)
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Protocol(self, slot, conn),
                        self.host,
                        self.port,
                        ssl=self._ssl,
                        server_hostname=self.host,
                    ),
                    self.connect_timeout,
                )
            except ssl.SSLCertVerificationError as exc:
                self._fail(
                    APNsServerCertificateError(
                        f"the TLS certificate of {self.authority} is not trusted "
                        f"({exc.verify_message}): check the host, or give the CA file (--ca)"
                    )
                )
                return
            except ssl.SSLError as exc:
                if self._is_certificate_alert(exc):
                    self._fail(self._certificate_refused(exc))
                    return
                self._connect_failed(slot, exc)
                return
            except (OSError, TimeoutError) as exc:
                self._connect_failed(slot, exc)
                return
            self.connections_opened += 1
            if self._closed or self._failure is not None:
                protocol.close()
                return
            slot.protocol = protocol
        finally:
            slot.connecting = None
            # The server's SETTINGS may have arrived before this task resumed: send what
            # waits (or try again, backing off, when this attempt failed).
            if not self._closed and self._failure is None:
                self._pump()
                if slot.protocol is None and self._waiting:
                    self._ensure_connections()

    def _connect_failed(self, slot: _Slot, exc: BaseException, *, after_tls: bool = False) -> None:
        slot.failures += 1
        reason = f"ConnectionFailed: {exc or type(exc).__name__}"
        log.warning("cannot connect to APNs at %s: %s", self.authority, exc)
        if slot.failures > self.retries:
            if after_tls and self.credentials is not None and self._failure is None:
                self._fail(
                    self._certificate_refused(
                        "the server closed every connection right after the TLS handshake"
                    )
                )
                return
            # Give up on what waits (the caller retries later); keep trying for new pushes.
            waiting = list(self._waiting)
            self._waiting.clear()
            for push in waiting:
                self._resolve(push, RetryLater(push.token, None, reason, push.attempts + 1))
            slot.failures = self.retries  # next attempt still backs off, without growing
            return
        if self._waiting:
            self._ensure_connections()

    def _is_certificate_alert(self, exc: BaseException) -> bool:
        text = f"{getattr(exc, 'reason', '')} {exc}".upper()
        return any(alert in text for alert in _CERT_ALERTS)

    def _certificate_refused(self, exc: BaseException | str) -> APNsCertificateError:
        who = (
            f"the Pass Type ID certificate for {self.credentials.pass_type_identifier!r}"
            if self.credentials is not None
            else "no client certificate (token authentication)"
        )
        return APNsCertificateError(
            f"{self.authority} refused the TLS handshake with {who} ({exc}): use the certificate "
            "Apple issued for this pass type, exported with its private key",
            reason="BadCertificate",
        )

    # -- what connections report ---------------------------------------------------------------

    def _on_events(self, protocol: _Protocol, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is Response:
                self._on_response(event)
            elif kind is Ready:
                protocol.slot.failures = 0
            elif kind is StreamReset:
                push = event.tag
                if event.refused:  # not processed: send again, not an attempt
                    self._requeue(push, front=True)
                else:
                    self._retry(push, None, f"StreamReset({event.error_code})", None)
            elif kind is GoAway:
                self._on_goaway(protocol, event)
            elif kind is ConnectionFailed:
                log.warning("APNs connection failed: %s", event.message)
                protocol.close()
            elif kind is PingAcknowledged:
                pass
        if protocol.conn.closing and protocol.conn.in_flight == 0:
            protocol.close()
        self._pump()

    def _on_response(self, event: Response) -> None:
        push: _Push = event.tag
        status = event.status
        if status == 200:
            self._resolve(push, Delivered(push.token, event.apns_id))
            return
        reason, timestamp = _reason(event.body, status)
        action = classify(status, reason)
        if action is Action.DEAD_TOKEN:
            self._resolve(
                push,
                DeadToken(push.token, status, reason, timestamp_from_ms(timestamp), event.apns_id),
            )
        elif action is Action.RETRY:
            self._retry(push, status, reason, event.apns_id)
        elif action is Action.RENEW_TOKEN:
            if (
                self.token_auth is not None
                and not push.renewed
                and self.token_auth.renew_expired(push.auth)
            ):
                push.renewed = True
                self._requeue(push, front=True)
            else:
                self._fail(self._configuration_error(push, status, reason), push)
        elif action is Action.CONFIGURATION:
            self._fail(self._configuration_error(push, status, reason), push)
        else:
            self._resolve(push, Failed(push.token, status, reason, event.apns_id))

    def _on_goaway(self, protocol: _Protocol, goaway: GoAway) -> None:
        self.goaways.append(goaway)
        debug = goaway.debug.decode("utf-8", "replace")
        log.warning(
            "APNs sent GOAWAY (%s, last stream %d%s): %d push(es) move to a new connection",
            goaway.error_name,
            goaway.last_stream_id,
            f", {debug}" if debug else "",
            len(goaway.unprocessed),
        )
        for push in reversed(goaway.unprocessed):
            self._requeue(push, front=True)
        reason, _ = _reason(goaway.debug, 0)
        if reason in CONFIGURATION_REASONS:
            sample = goaway.unprocessed[0] if goaway.unprocessed else None
            self._fail(self._configuration_error(sample, None, reason))
            return
        if goaway.last_stream_id == 0:
            protocol.slot.failures += 1  # refused before any stream: back off, do not spin
        self._retire(protocol)

    def _retire(self, protocol: _Protocol) -> None:
        """The connection takes no new streams: free its slot for a new one."""
        slot = protocol.slot
        if slot.protocol is protocol:
            slot.protocol = None
            if protocol.conn.in_flight:
                self._draining.add(protocol)
        if self._waiting:
            self._ensure_connections()

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        self._draining.discard(protocol)
        slot = protocol.slot
        lost = protocol.conn.abandon()
        if not protocol.conn.ready:
            # Closed before the server's SETTINGS: a failed connection attempt. With TLS 1.3 a
            # server refuses a client certificate after the handshake, and asyncio reports
            # that alert as a plain close.
            if slot.protocol is protocol:
                slot.protocol = None
            if isinstance(exc, ssl.SSLError) and self._is_certificate_alert(exc):
                self._fail(self._certificate_refused(exc))
                return
            self._connect_failed(
                slot, exc or ConnectionError("closed before HTTP/2 settings"), after_tls=True
            )
            return
        if slot.protocol is protocol:
            slot.protocol = None
            if protocol.conn.goaway is None:
                slot.failures += 1  # dropped without GOAWAY: reconnect with back-off
        if lost:
            why = f"ConnectionLost: {exc}" if exc else "ConnectionLost"
            log.warning("APNs connection lost with %d push(es) in flight: resending", len(lost))
            for push in lost:
                self._retry(push, None, why, None, immediately=True)
        if not self._closed:
            self._pump()
            if self._waiting:
                self._ensure_connections()

    # -- results -------------------------------------------------------------------------------

    def _resolve(self, push: _Push, result: PushResult) -> None:
        self._outstanding -= 1
        push.sink.deliver(result)
        if self._outstanding == 0 and self._idle is not None:
            self._idle.set()

    def _retry(
        self,
        push: _Push,
        status: int | None,
        reason: str,
        apns_id: str | None,
        *,
        immediately: bool = False,
    ) -> None:
        push.attempts += 1
        if push.attempts > self.retries or self._closed:
            self._resolve(push, RetryLater(push.token, status, reason, push.attempts, apns_id))
            return
        if immediately and push.attempts == 1:
            self._requeue(push, front=True)
            return
        delay = self._backoff(push.attempts, base=self.backoff_base)
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def again() -> None:
            self._retry_timers.pop(timer, None)
            self._requeue(push)
            self._pump()

        timer = loop.call_later(delay, again)
        self._retry_timers[timer] = push

    def _cancel_retries(self) -> list[_Push]:
        pushes = list(self._retry_timers.values())
        for timer in self._retry_timers:
            timer.cancel()
        self._retry_timers.clear()
        return pushes

    def _backoff(self, attempt: int, *, base: float) -> float:
        """Exponential back-off with jitter: up to base * 2**(attempt-1), at least half of it."""
        ceiling = min(self.backoff_max, base * (2 ** (attempt - 1)))
        return float(ceiling * (0.5 + random.random() / 2))

    def _fail(self, error: APNsConfigurationError, culprit: _Push | None = None) -> None:
        """A configuration error: stop sending, fail every waiting push with it (and
        ``culprit``, the push whose answer revealed it)."""
        if culprit is not None:
            self._outstanding -= 1
            culprit.sink.fail(self._failure or error)
        if self._failure is not None:
            return
        self._failure = error
        log.error("APNs: %s", error)
        pushes = self._cancel_retries()
        pushes.extend(self._waiting)
        self._waiting.clear()
        for protocol in self._protocols():
            pushes.extend(protocol.conn.abandon())
            protocol.close()
        for push in pushes:
            self._outstanding -= 1
            push.sink.fail(error)
        if self._idle is not None:
            self._idle.set()

    def _protocols(self) -> list[_Protocol]:
        protocols = [s.protocol for s in self._slots if s.protocol is not None]
        protocols.extend(self._draining)
        return protocols

    def _configuration_error(
        self, push: _Push | None, status: int | None, reason: str
    ) -> APNsConfigurationError:
        kind, fix = CONFIGURATION_REASONS[reason]
        token = push.token if push is not None else None
        topic = push.topic.decode("ascii") if push is not None else self.topic
        head = f"APNs refused the push ({status} {reason})" if status else f"APNs: {reason}"
        if kind == "certificate":
            who = (
                f"the certificate is for pass type {self.credentials.pass_type_identifier!r} "
                f"(team {self.credentials.team_identifier})"
                if self.credentials is not None
                else "no client certificate was sent"
            )
            return APNsCertificateError(
                f"{head}: {fix}; {who}, host {self.authority}",
                reason=reason,
                status=status,
                token=token,
            )
        if kind == "token":
            who = (
                f"key id {self.token_auth.key_id}, team id {self.token_auth.team_id}"
                if self.token_auth is not None
                else "no provider token was sent (certificate authentication)"
            )
            return APNsProviderTokenError(
                f"{head}: {fix} ({who})", reason=reason, status=status, token=token
            )
        if kind == "topic":
            cert = (
                f"; the certificate is for pass type {self.credentials.pass_type_identifier!r}"
                if self.credentials is not None
                else ""
            )
            return APNsTopicError(
                f"{head}: {fix}; the topic was {topic!r}{cert}",
                reason=reason,
                status=status,
                token=token,
            )
        return APNsRequestError(f"{head}: {fix}", reason=reason, status=status, token=token)


def check_token(token: object) -> str:
    """``token`` if it is a well-formed push token (hex), else :class:`APNsInputError`."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        shown = repr(token) if len(repr(token)) <= 80 else repr(token)[:77] + "..."
        raise APNsInputError(
            f"token {shown} is not a push token: expected the hexadecimal pushToken a device "
            "registered (64 characters today)"
        )
    return token


def _reason(body: bytes, status: int) -> tuple[str, object]:
    """APNs' ``reason`` (verbatim) and ``timestamp`` from an error body."""
    if not body:
        return (f"HTTP {status}" if status else ""), None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace"), None
    if not isinstance(data, dict):
        return body[:200].decode("utf-8", "replace"), None
    reason = data.get("reason")
    return (str(reason) if reason is not None else f"HTTP {status}"), data.get("timestamp")
