"""One HTTP/2 connection to APNs as a sans-I/O state machine over ``h2``: bytes in, events out,
bytes to send. No sockets, no clock, no event loop: :mod:`.client` drives it, the tests drive it
with bytes from an in-memory ``h2`` server.

Hot-path choices (pushes per second is the figure that matters):

* The request header block is pre-encoded. Every header but ``:path`` is the same for a batch of
  pushes, so HPACK runs once per (topic, authorization, expiration) combination, not per push: an
  encoder stand-in hands ``h2`` the prepared block. The blocks use only the static table and
  literals *without indexing*, and the first block starts with a dynamic-table-size update to 0,
  so the server's decoder state never depends on ours.
* ``h2`` counts open streams by scanning every stream on each new one (O(n) per push with
  1,000 in flight): the connection keeps that count itself and retires closed streams as their
  responses end.
* Header validation and normalisation are off for what we send (our headers are fixed and
  lowercase) and for what we receive (we read two headers and ignore the rest).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream

__all__ = [
    "APNsConnection",
    "ConnectionFailed",
    "GoAway",
    "PingAcknowledged",
    "Ready",
    "Response",
    "StreamReset",
    "encode_header_block",
]

DEFAULT_RECEIVE_WINDOW = 1 << 24  # responses are small; a big window means no WINDOW_UPDATE churn
_RESETS = (h2.stream.StreamClosedBy.SEND_RST_STREAM, h2.stream.StreamClosedBy.RECV_RST_STREAM)
_LAST_STREAM_ID = 2**31 - 3  # client stream ids are odd and below 2**31
MAX_RESPONSE_BODY = 64 * 1024  # APNs error bodies are tiny JSON; refuse to buffer absurd ones


# -- HPACK, by hand, for the fixed part of a request ---------------------------------------------


def _hpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(value: bytes) -> bytes:
    return _hpack_int(len(value), 7, 0x00) + value  # no Huffman: cheaper, and blocks are small


# Static-table indices (RFC 7541, Appendix A).
_METHOD_POST = b"\x83"
_SCHEME_HTTPS = b"\x87"
_AUTHORITY, _PATH, _AUTHORIZATION = 1, 4, 23


def _literal(index: int, value: bytes, *, never_indexed: bool = False) -> bytes:
    """A literal header field without indexing (or never indexed) with an indexed name."""
    return _hpack_int(index, 4, 0x10 if never_indexed else 0x00) + _hpack_str(value)


def _literal_new_name(name: bytes, value: bytes) -> bytes:
    return b"\x00" + _hpack_str(name) + _hpack_str(value)


def encode_header_block(
    authority: bytes, headers: Iterable[tuple[bytes, bytes]], authorization: bytes | None
) -> tuple[bytes, bytes]:
    """The block of a push request around its ``:path``: (before the path, after the path).

    ``headers`` are the regular headers (lowercase names) and ``authorization`` the optional
    ``bearer`` value, sent never-indexed as RFC 7541 asks for credentials."""
    before = _METHOD_POST + _SCHEME_HTTPS + _literal(_AUTHORITY, authority)
    after = b"".join(_literal_new_name(name, value) for name, value in headers)
    if authorization is not None:
        after += _literal(_AUTHORIZATION, authorization, never_indexed=True)
    return before, after


def _path_literal(path: bytes) -> bytes:
    n = len(path)
    if n < 127:
        return b"\x04" + bytes((n,)) + path
    return _hpack_int(_PATH, 4, 0x00) + _hpack_str(path)


class _PreEncoded:
    """Stands in for hpack's Encoder inside h2: returns the block prepared for the next HEADERS
    frame. The first block opens with a dynamic table size update to 0."""

    def __init__(self) -> None:
        self.block = b""
        self.first = True
        self.header_table_size = 4096  # h2 sets this from the server's SETTINGS; we use no table

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if self.first:
            self.first = False
            return b"\x20" + self.block
        return self.block


class _H2(h2.connection.H2Connection):
    """h2 with the open-stream count kept by :class:`APNsConnection` (h2 rescans all streams)."""

    apns_open = 0

    @property
    def open_outbound_streams(self) -> int:
        return self.apns_open


# -- events ------------------------------------------------------------------------------------


class Ready:
    """The server's first SETTINGS arrived: pushes may be sent."""

    __slots__ = ("max_concurrent_streams",)

    def __init__(self, max_concurrent_streams: int) -> None:
        self.max_concurrent_streams = max_concurrent_streams

    def __repr__(self) -> str:
        return f"Ready(max_concurrent_streams={self.max_concurrent_streams})"


class Response:
    """A complete response to the push tagged ``tag``."""

    __slots__ = ("apns_id", "body", "status", "stream_id", "tag")

    def __init__(
        self, stream_id: int, tag: Any, status: int, apns_id: str | None, body: bytes
    ) -> None:
        self.stream_id = stream_id
        self.tag = tag
        self.status = status
        self.apns_id = apns_id
        self.body = body

    def __repr__(self) -> str:
        return f"Response(stream_id={self.stream_id}, status={self.status}, body={self.body!r})"


class StreamReset:
    """The server reset the push's stream. ``refused`` (REFUSED_STREAM): it was not processed."""

    __slots__ = ("error_code", "stream_id", "tag")

    def __init__(self, stream_id: int, tag: Any, error_code: int) -> None:
        self.stream_id = stream_id
        self.tag = tag
        self.error_code = error_code

    @property
    def refused(self) -> bool:
        return self.error_code == h2.errors.ErrorCodes.REFUSED_STREAM

    def __repr__(self) -> str:
        return f"StreamReset(stream_id={self.stream_id}, error_code={self.error_code})"


class GoAway:
    """The server sent GOAWAY: no new streams on this connection. ``unprocessed`` are the tags of
    pushes above ``last_stream_id`` (never processed: send them again on another connection);
    pushes at or below it still get their responses."""

    __slots__ = ("debug", "error_code", "last_stream_id", "unprocessed")

    def __init__(
        self, last_stream_id: int, error_code: int, debug: bytes, unprocessed: list[Any]
    ) -> None:
        self.last_stream_id = last_stream_id
        self.error_code = error_code
        self.debug = debug
        self.unprocessed = unprocessed

    @property
    def error_name(self) -> str:
        try:
            return h2.errors.ErrorCodes(self.error_code).name
        except ValueError:
            return f"0x{self.error_code:x}"

    def __repr__(self) -> str:
        return (
            f"GoAway(last_stream_id={self.last_stream_id}, error={self.error_name}, "
            f"debug={self.debug!r}, unprocessed={len(self.unprocessed)})"
        )


class PingAcknowledged:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class ConnectionFailed:
    """The server broke the protocol: the connection is unusable (a GOAWAY to send is queued)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ConnectionFailed({self.message!r})"


Event = Ready | Response | StreamReset | GoAway | PingAcknowledged | ConnectionFailed


# -- the connection ------------------------------------------------------------------------------


class APNsConnection:
    """The client side of one HTTP/2 connection to APNs.

    ``send_push`` opens a stream for one push and remembers its ``tag`` (any object); every event
    about that push carries the tag back. Call :meth:`data_to_send` after any call and write the
    bytes; feed what the server sends to :meth:`receive`.
    """

    def __init__(
        self,
        *,
        max_streams: int | None = None,
        receive_window: int = DEFAULT_RECEIVE_WINDOW,
    ) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self._h2 = _H2(config=config)
        self._encoder = _PreEncoded()
        self._h2.encoder = self._encoder  # type: ignore[assignment]
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: receive_window,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,  # the server opens none
            },
        )
        self._receive_window = receive_window
        self._limit = max_streams  # our own cap, below the server's
        self._server_max = 0
        self._tags: dict[int, Any] = {}
        self._partial: dict[int, list[Any]] = {}  # stream id -> [status, apns_id, bytearray]
        self._blocked: deque[tuple[int, bytes]] = deque()  # bodies waiting for flow control
        self._pending_ping: bytes | None = None
        self._method = [(b":method", b"POST")]  # what h2 looks at; the block is pre-encoded
        self.ready = False
        self.closing = False  # GOAWAY sent or received: no new streams
        self.failed = False
        self._goaway_sent = False
        self.goaway: GoAway | None = None
        self.streams_opened = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._tags)

    @property
    def max_streams(self) -> int:
        """How many pushes may be in flight at once (the server's limit, or ours if lower)."""
        if self._limit is None:
            return self._server_max
        return min(self._limit, self._server_max)

    @property
    def capacity(self) -> int:
        """How many more pushes may be sent now."""
        if not self.ready or self.closing:
            return 0
        free = self.max_streams - len(self._tags)
        return free if free > 0 else 0

    def tags(self) -> list[Any]:
        """The tags of every push in flight (oldest first)."""
        return list(self._tags.values())

    # -- sending -------------------------------------------------------------------------------

    def initiate(self) -> None:
        self._h2.initiate_connection()
        extra = self._receive_window - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)

    def send_push(self, path: bytes, before: bytes, after: bytes, body: bytes, tag: Any) -> int:
        """Open a stream for one push (``before``/``after`` from :func:`encode_header_block`).
        Check :attr:`capacity` first: a push beyond it is a programming error."""
        h2conn = self._h2
        stream_id = h2conn.highest_outbound_stream_id
        stream_id = stream_id + 2 if stream_id else 1
        self._encoder.block = before + _path_literal(path) + after
        h2conn.send_headers(stream_id, self._method)
        h2conn.apns_open += 1
        self._tags[stream_id] = tag
        self.streams_opened += 1
        if self._blocked or h2conn.local_flow_control_window(stream_id) < len(body):
            self._blocked.append((stream_id, body))
        else:
            h2conn.send_data(stream_id, body, end_stream=True)
        if stream_id >= _LAST_STREAM_ID:
            self.close()  # stream ids are used up: the client moves to a fresh connection
        return stream_id

    def ping(self, data: bytes = b"apnsping") -> None:
        self._pending_ping = data
        self._h2.ping(data)

    @property
    def ping_outstanding(self) -> bool:
        return self._pending_ping is not None

    def close(self, error_code: int = 0) -> None:
        """Send GOAWAY: no new streams; what is in flight may still complete."""
        self.closing = True
        if self._goaway_sent:
            return
        self._goaway_sent = True
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed by the server
            self._h2.close_connection(error_code=error_code)
        self._reopen_for_reading()

    def abandon(self) -> list[Any]:
        """The socket is gone: the tags of every push that got no response (oldest first)."""
        self.closing = self.failed = True
        tags = list(self._tags.values())
        self._tags.clear()
        self._partial.clear()
        self._blocked.clear()
        self._h2.apns_open = 0
        return tags

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Process bytes from the server; return what happened, in order."""
        h2conn = self._h2
        try:
            h2_events = h2conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.failed = self.closing = True
            return [ConnectionFailed(f"HTTP/2 protocol error from the server: {exc}")]
        out: list[Event] = []
        tags = self._tags
        event: Any
        for event in h2_events:
            kind = type(event)
            if kind is h2.events.ResponseReceived:
                sid = event.stream_id
                status = 0
                apns_id = None
                for name, value in event.headers:
                    if name == b":status":
                        status = int(value)
                    elif name == b"apns-id":
                        apns_id = value.decode("ascii", "replace")
                if event.stream_ended is not None:
                    tag = tags.pop(sid, None)
                    if tag is not None:
                        self._retire(sid)
                        out.append(Response(sid, tag, status, apns_id, b""))
                else:
                    self._partial[sid] = [status, apns_id, bytearray()]
            elif kind is h2.events.StreamEnded:
                sid = event.stream_id
                partial = self._partial.pop(sid, None)
                if partial is not None:
                    tag = tags.pop(sid, None)
                    if tag is not None:
                        self._retire(sid)
                        out.append(Response(sid, tag, partial[0], partial[1], bytes(partial[2])))
            elif kind is h2.events.DataReceived:
                sid = event.stream_id
                if event.flow_controlled_length:
                    h2conn.acknowledge_received_data(event.flow_controlled_length, sid)
                partial = self._partial.get(sid)
                if partial is not None and len(partial[2]) < MAX_RESPONSE_BODY:
                    partial[2] += event.data[: MAX_RESPONSE_BODY - len(partial[2])]
            elif kind is h2.events.WindowUpdated:
                if self._blocked:
                    self._send_blocked()
            elif kind is h2.events.StreamReset:
                sid = event.stream_id
                self._partial.pop(sid, None)
                tag = tags.pop(sid, None)
                if tag is not None:
                    self._retire(sid)
                    self._drop_blocked(sid)
                    out.append(StreamReset(sid, tag, int(event.error_code or 0)))
            elif kind is h2.events.RemoteSettingsChanged:
                self._server_max = h2conn.remote_settings.max_concurrent_streams
                if not self.ready:
                    self.ready = True
                    out.append(Ready(self._server_max))
                if self._blocked:
                    self._send_blocked()
            elif kind is h2.events.ConnectionTerminated:
                out.append(self._on_goaway(event))
            elif kind is h2.events.PingAckReceived:
                self._pending_ping = None
                out.append(PingAcknowledged(event.ping_data or b""))
        return out

    def _retire(self, stream_id: int) -> None:
        # Keep h2's bookkeeping small: a finished stream leaves h2's table now (h2 would only
        # drop it while rescanning every stream).
        h2conn = self._h2
        h2conn.apns_open -= 1
        stream = h2conn.streams.get(stream_id)
        if stream is not None and stream.closed:
            del h2conn.streams[stream_id]
            # h2 remembers up to 65,536 closed streams; only a reset changes how it treats a
            # late frame (a frame after END_STREAM is a connection error either way), so
            # remember just those and keep memory flat over millions of pushes.
            if stream.closed_by in _RESETS:
                h2conn._closed_streams[stream_id] = stream.closed_by
        elif stream is not None and self._blocked:
            # The server answered before our body went out: cancel the stream, drop the body.
            self._drop_blocked(stream_id)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                h2conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _drop_blocked(self, stream_id: int) -> None:
        if self._blocked:
            self._blocked = deque(b for b in self._blocked if b[0] != stream_id)

    def _send_blocked(self) -> None:
        h2conn = self._h2
        while self._blocked:
            stream_id, body = self._blocked[0]
            try:
                if h2conn.local_flow_control_window(stream_id) < len(body):
                    return
                h2conn.send_data(stream_id, body, end_stream=True)
            except h2.exceptions.StreamClosedError:
                pass  # reset meanwhile; its event carries the tag
            self._blocked.popleft()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> GoAway:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        unprocessed = [tag for sid, tag in self._tags.items() if sid > last]
        for sid in [sid for sid in self._tags if sid > last]:
            del self._tags[sid]
            self._partial.pop(sid, None)
            self._h2.apns_open -= 1
        self.closing = True
        goaway = GoAway(last, int(event.error_code or 0), event.additional_data or b"", unprocessed)
        self.goaway = goaway
        self._reopen_for_reading()
        return goaway

    def _reopen_for_reading(self) -> None:
        # h2 treats GOAWAY (either way) as the end of the connection and then refuses the
        # responses still due on streams at or below last_stream_id. RFC 9113 §6.8 lets those
        # complete, so keep h2's state machine open for reading; `closing` stops new streams.
        import h2.connection as h2c

        self._h2.state_machine.state = h2c.ConnectionState.CLIENT_OPEN
