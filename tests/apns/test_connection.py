"""The sans-I/O APNs connection, driven with bytes from a real h2 server-side connection in memory.

No sockets: every byte the client produces is fed to an ``h2`` server object and every byte the
server produces is fed back, so the tests cover the HTTP/2 wire format, HPACK and the state
machines, not a mock."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit_stamps.apple.apns._connection import (
    APNsConnection,
    ConnectionFailed,
    GoAway,
    PingAcknowledged,
    Ready,
    Response,
    StreamReset,
    _hpack_int,
    encode_header_block,
)

TOKEN = "ab" * 32
PATH = f"/3/device/{TOKEN}".encode()
HEADERS = [
    (b"apns-topic", b"pass.com.example.stamps"),
    (b"apns-push-type", b"background"),
    (b"apns-priority", b"5"),
    (b"apns-expiration", b"1700000000"),
]
BEFORE, AFTER = encode_header_block(b"api.push.apple.com", HEADERS, None)


class Server:
    """An h2 server connection in memory, talking to one APNsConnection."""

    def __init__(self, client: APNsConnection, **settings: int) -> None:
        self.client = client
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(
                {getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()}
            )
        self.requests: dict[int, dict[bytes, bytes]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: list[int] = []
        self.events: list[h2.events.Event] = []

    def pump(self) -> list[object]:
        """Move bytes both ways until quiet; return the client's events."""
        out: list[object] = []
        for _ in range(20):
            to_server = self.client.data_to_send()
            if to_server:
                for event in self.h2.receive_data(to_server):
                    self.events.append(event)
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests[event.stream_id] = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        self.bodies[event.stream_id] = (
                            self.bodies.get(event.stream_id, b"") + event.data
                        )
                        self.h2.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        self.ended.append(event.stream_id)
            to_client = self.h2.data_to_send()
            if to_client:
                out.extend(self.client.receive(to_client))
            if not to_server and not to_client:
                break
        return out

    def ok(self, stream_id: int, apns_id: bytes = b"00000000-0000-0000-0000-000000000001") -> None:
        self.h2.send_headers(stream_id, [(b":status", b"200"), (b"apns-id", apns_id)], True)

    def error(self, stream_id: int, status: int, body: bytes) -> None:
        self.h2.send_headers(stream_id, [(b":status", str(status).encode()), (b"apns-id", b"x")])
        self.h2.send_data(stream_id, body, end_stream=True)

    def keep_open_after_goaway(self) -> None:
        # h2 stops a server sending after its own GOAWAY; RFC 9113 lets it finish streams.
        self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN


def connect(max_streams: int | None = None, **settings: int) -> tuple[APNsConnection, Server]:
    client = APNsConnection(max_streams=max_streams)
    client.initiate()
    server = Server(client, **settings)
    events = server.pump()
    assert any(isinstance(e, Ready) for e in events)
    return client, server


def send(client: APNsConnection, tag: object, path: bytes = PATH) -> int:
    return client.send_push(path, BEFORE, AFTER, b"{}", tag)


# -- the request on the wire ---------------------------------------------------------------------


def test_request_headers_and_body_as_the_server_decodes_them() -> None:
    client, server = connect()
    stream_id = send(client, "t1")
    server.pump()
    assert server.requests[stream_id] == {
        b":method": b"POST",
        b":scheme": b"https",
        b":authority": b"api.push.apple.com",
        b":path": PATH,
        b"apns-topic": b"pass.com.example.stamps",
        b"apns-push-type": b"background",
        b"apns-priority": b"5",
        b"apns-expiration": b"1700000000",
    }
    assert server.bodies[stream_id] == b"{}"
    assert stream_id in server.ended  # END_STREAM with the body


def test_authorization_is_sent_never_indexed() -> None:
    before, after = encode_header_block(b"h", HEADERS, b"bearer abc.def.ghi")
    client, server = connect()
    stream_id = client.send_push(PATH, before, after, b"{}", "t")
    server.pump()
    assert server.requests[stream_id][b"authorization"] == b"bearer abc.def.ghi"
    # 0x1f 0x08: "literal never indexed", static name index 23 (authorization)
    assert b"\x1f\x08" in after


def test_many_requests_keep_the_decoder_in_step() -> None:
    """Each block differs only by its path; the server's HPACK state must follow every one."""
    client, server = connect(max_concurrent_streams=1000)
    paths = [f"/3/device/{i:064x}".encode() for i in range(300)]
    ids = []
    for i, path in enumerate(paths):
        ids.append(send(client, i, path))
        if i % 50 == 49:
            server.pump()
            for sid in ids[-50:]:
                server.ok(sid)
    server.pump()
    assert [server.requests[sid][b":path"] for sid in ids] == paths


def test_first_block_resets_the_dynamic_table_and_later_ones_do_not() -> None:
    client, _server = connect()
    send(client, 1)
    first = client.data_to_send()
    send(client, 2)
    second = client.data_to_send()
    # frame header is 9 bytes; HEADERS payload starts with the size update (0x20) only once
    assert first[9] == 0x20
    assert second[9] == 0x83  # :method POST


def test_a_long_path_uses_a_multi_byte_length() -> None:
    client, server = connect()
    path = b"/3/device/" + b"ab" * 200
    stream_id = send(client, "long", path)
    server.pump()
    assert server.requests[stream_id][b":path"] == path


@settings(deadline=None)  # a stall on a loaded machine is not a failure
@given(st.integers(min_value=0, max_value=2**28), st.sampled_from([4, 5, 6, 7]))
def test_hpack_integers_decode_with_hpack(value: int, prefix: int) -> None:
    encoded = _hpack_int(value, prefix, 0)
    decoded, consumed = hpack.hpack.decode_integer(encoded, prefix)
    assert (decoded, consumed) == (value, len(encoded))


# -- concurrency and flow control ------------------------------------------------------------------


def test_no_capacity_before_the_server_settings() -> None:
    client = APNsConnection()
    client.initiate()
    assert not client.ready
    assert client.capacity == 0


@pytest.mark.parametrize("limit", [1, 3, 1000])
def test_capacity_follows_max_concurrent_streams(limit: int) -> None:
    client, server = connect(max_concurrent_streams=limit)
    assert client.max_streams == limit
    ids = [send(client, i) for i in range(client.capacity)]
    assert len(ids) == limit
    assert client.capacity == 0
    server.pump()
    server.ok(ids[0])
    events = server.pump()
    assert [e.tag for e in events if isinstance(e, Response)] == [0]
    assert client.capacity == 1


def test_our_own_limit_caps_the_server_limit() -> None:
    client, _ = connect(max_streams=10, max_concurrent_streams=1000)
    assert client.capacity == 10


def test_a_lowered_limit_applies_at_once() -> None:
    client, server = connect(max_concurrent_streams=100)
    server.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    server.pump()
    assert client.capacity == 2


def test_h2_stream_table_stays_empty_and_the_count_matches_h2s_own() -> None:
    client, server = connect(max_concurrent_streams=1000)
    for round_ in range(20):
        ids = [send(client, (round_, i)) for i in range(250)]
        server.pump()
        assert client.in_flight == 250
        assert client._h2._open_streams(1) == 250  # h2's own scan agrees with our count
        for sid in ids:
            server.ok(sid)
        events = server.pump()
        assert len([e for e in events if isinstance(e, Response)]) == 250
    assert client.in_flight == 0
    assert client._h2.streams == {}
    assert client.streams_opened == 5000


def test_bodies_wait_for_the_flow_control_window() -> None:
    client, server = connect(initial_window_size=0)
    sid = send(client, "blocked")
    server.pump()
    assert sid in server.requests and sid not in server.bodies
    server.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
    server.pump()
    assert server.bodies[sid] == b"{}"
    server.ok(sid)
    assert [type(e) for e in server.pump()] == [Response]


def test_connection_window_blocks_then_opens() -> None:
    client, server = connect()
    body = b"x" * 16000  # the server's connection window (65,535 bytes) holds four of these
    server.h2.acknowledge_received_data = lambda *a, **k: None  # type: ignore[method-assign]
    ids = [client.send_push(PATH, BEFORE, AFTER, body, i) for i in range(5)]
    server.pump()
    assert [sid in server.bodies for sid in ids] == [True] * 4 + [False]
    server.h2.increment_flow_control_window(65535)  # WINDOW_UPDATE on the connection
    server.pump()
    assert server.bodies[ids[4]] == body


# -- responses -------------------------------------------------------------------------------------


def test_ok_response_carries_the_tag_and_apns_id() -> None:
    client, server = connect()
    sid = send(client, "tag-1")
    server.pump()
    server.ok(sid, b"8e4c5d4e-0000-4000-8000-000000000001")
    (event,) = server.pump()
    assert isinstance(event, Response)
    assert (event.tag, event.status, event.apns_id, event.body) == (
        "tag-1",
        200,
        "8e4c5d4e-0000-4000-8000-000000000001",
        b"",
    )


def test_error_body_split_over_frames_is_joined() -> None:
    client, server = connect()
    sid = send(client, "t")
    server.pump()
    server.h2.send_headers(sid, [(b":status", b"410"), (b"apns-id", b"i")])
    server.h2.send_data(sid, b'{"reason":"Unreg')
    assert server.pump() == []
    server.h2.send_data(sid, b'istered","timestamp":1700000000000}', end_stream=True)
    (event,) = server.pump()
    assert isinstance(event, Response)
    assert event.body == b'{"reason":"Unregistered","timestamp":1700000000000}'


def test_refused_stream_is_reported_as_not_processed() -> None:
    client, server = connect()
    sid = send(client, "t")
    server.pump()
    server.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    (event,) = server.pump()
    assert isinstance(event, StreamReset) and event.refused and event.tag == "t"
    assert client.in_flight == 0


def test_other_resets_are_not_refusals() -> None:
    client, server = connect()
    sid = send(client, "t")
    server.pump()
    server.h2.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    (event,) = server.pump()
    assert isinstance(event, StreamReset) and not event.refused


# -- GOAWAY, PING, failures ------------------------------------------------------------------------


def test_goaway_returns_unprocessed_pushes_and_lets_processed_ones_finish() -> None:
    client, server = connect()
    ids = [send(client, i) for i in range(6)]
    server.pump()
    server.h2.close_connection(
        error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=ids[2], additional_data=b"bye"
    )
    events = server.pump()
    (goaway,) = [e for e in events if isinstance(e, GoAway)]
    assert goaway.last_stream_id == ids[2]
    assert goaway.unprocessed == [3, 4, 5]
    assert goaway.debug == b"bye" and goaway.error_name == "NO_ERROR"
    assert client.closing and client.capacity == 0
    assert client.in_flight == 3
    server.keep_open_after_goaway()
    for sid in ids[:3]:
        server.ok(sid)
    responses = [e for e in server.pump() if isinstance(e, Response)]
    assert [r.tag for r in responses] == [0, 1, 2]
    assert client.in_flight == 0


def test_goaway_with_an_error_code_and_reason() -> None:
    client, server = connect()
    send(client, "t")
    server.pump()
    server.h2.close_connection(
        error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR,
        last_stream_id=0,
        additional_data=b'{"reason":"BadCertificate"}',
    )
    (goaway,) = [e for e in server.pump() if isinstance(e, GoAway)]
    assert goaway.error_name == "PROTOCOL_ERROR"
    assert goaway.unprocessed == ["t"]


def test_close_sends_goaway_and_still_reads_responses() -> None:
    client, server = connect()
    sid = send(client, "t")
    server.pump()
    client.close()
    server.pump()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in server.events)
    assert client.capacity == 0
    server.keep_open_after_goaway()
    server.ok(sid)
    assert [e.tag for e in server.pump() if isinstance(e, Response)] == ["t"]


def test_ping_is_acknowledged() -> None:
    client, server = connect()
    client.ping(b"12345678")
    assert client.ping_outstanding
    events = server.pump()
    assert [type(e) for e in events] == [PingAcknowledged]
    assert not client.ping_outstanding


def test_abandon_returns_every_push_in_flight_in_order() -> None:
    client, server = connect()
    for i in range(5):
        send(client, i)
    server.pump()
    assert client.abandon() == [0, 1, 2, 3, 4]
    assert client.in_flight == 0 and client.capacity == 0


def test_data_on_stream_zero_is_a_protocol_error() -> None:
    client, _ = connect()
    # A DATA frame on stream 0 is a connection error (RFC 9113 §6.1).
    events = client.receive(b"\x00\x00\x02\x00\x00\x00\x00\x00\x00{}")
    assert [type(e) for e in events] == [ConnectionFailed]
    assert client.failed and client.capacity == 0
    assert client.data_to_send()  # h2 queued its GOAWAY
