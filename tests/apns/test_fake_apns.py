"""The fake APNs, driven by an independent raw h2 client over real TLS on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import h2.errors
import h2.settings
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit_stamps.runtime.devpki import (
    make_pass_certificate,
    make_root,
    make_wwdr,
    pem_certificate,
    pem_key,
)
from passkit_stamps.testing import REASONS, FakeAPNs, FakeAPNsError, PushReply, RecordedPush

from .conftest import TOKEN, TOPIC, ProviderKey, RawH2Connect

OTHER = "cd" * 32
UUID = "123e4567-e89b-42d3-a456-426614174000"


def reason(response_body: bytes) -> str:
    return str(json.loads(response_body)["reason"])


# -- basics: TLS, ALPN, recording -------------------------------------------------------------


async def test_push_is_answered_and_recorded(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert client.alpn == "h2"
    response = await client.push(
        TOKEN, apns_push_type="background", apns_priority="5", apns_expiration="0"
    )

    assert response.status == 200
    assert response.body == b""
    assert len(response.headers["apns-id"]) == 36
    pushes = await fake_apns.wait_for_pushes(1)
    assert pushes == [
        RecordedPush(
            token=TOKEN,
            topic=TOPIC,
            headers={
                "apns-push-type": "background",
                "apns-priority": "5",
                "apns-expiration": "0",
                "apns-topic": TOPIC,
            },
            body=b"{}",
            connection_id=1,
            stream_id=1,
            apns_id=response.headers["apns-id"],
        )
    ]
    assert fake_apns.push_count == fake_apns.delivered_count == 1
    assert fake_apns.connections_opened == 1


async def test_apns_id_is_echoed(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.push(TOKEN, apns_id=UUID)
    assert response.headers["apns-id"] == UUID
    assert fake_apns.pushes[0].apns_id == UUID


async def test_server_certificate_is_valid_for_localhost_and_127_0_0_1(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect
) -> None:
    for name in ("localhost", "127.0.0.1"):
        client = await raw_h2(
            fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem, server_hostname=name
        )
        assert (await client.push()).status == 200
    assert fake_apns.ca_file.read_bytes() == fake_apns.ca_pem


async def test_connections_are_told_apart(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    first = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    second = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await first.push(TOKEN)
    await second.push(OTHER)
    assert [(p.token, p.connection_id) for p in fake_apns.pushes] == [(TOKEN, 1), (OTHER, 2)]
    assert fake_apns.open_connections == 2


async def test_many_concurrent_streams_on_one_connection(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect
) -> None:
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    tokens = [f"{i:064x}" for i in range(500)]
    futures = [client.start(f"/3/device/{t}", {"apns-topic": TOPIC}) for t in tokens]
    responses = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert {r.status for r in responses} == {200}
    assert sorted(p.token for p in fake_apns.pushes) == sorted(tokens)
    assert len({r.headers["apns-id"] for r in responses}) == 500


async def test_record_false_only_counts(raw_h2: RawH2Connect) -> None:
    async with FakeAPNs(record=False) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        for _ in range(3):
            await client.push()
        await client.push(topic=None)  # refused: MissingTopic
        await apns.wait_for_pushes(4)
        assert apns.pushes == []
        assert (apns.push_count, apns.delivered_count) == (4, 3)


async def test_wait_for_pushes_times_out_saying_how_many(fake_apns: FakeAPNs) -> None:
    with pytest.raises(TimeoutError, match="0 of 2 pushes"):
        await fake_apns.wait_for_pushes(2, timeout=0.05)


# -- requests refused like APNs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "why"),
    [
        ("GET", f"/3/device/{TOKEN}", {"apns-topic": TOPIC}, b"", 405, "MethodNotAllowed"),
        ("POST", "/3/devices/x", {"apns-topic": TOPIC}, b"{}", 404, "BadPath"),
        ("POST", "/", {"apns-topic": TOPIC}, b"{}", 404, "BadPath"),
        ("POST", "/3/device/", {"apns-topic": TOPIC}, b"{}", 400, "MissingDeviceToken"),
        ("POST", "/3/device/xyz", {"apns-topic": TOPIC}, b"{}", 400, "BadDeviceToken"),
        ("POST", f"/3/device/{TOKEN[:-2]}", {"apns-topic": TOPIC}, b"{}", 400, "BadDeviceToken"),
        ("POST", f"/3/device/{TOKEN}", {}, b"{}", 400, "MissingTopic"),
        ("POST", f"/3/device/{TOKEN}", {"apns-topic": "pass com"}, b"{}", 400, "BadTopic"),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC, "apns-push-type": "pass"},
            b"{}",
            400,
            "InvalidPushType",
        ),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC, "apns-priority": "7"},
            b"{}",
            400,
            "BadPriority",
        ),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC, "apns-expiration": "soon"},
            b"{}",
            400,
            "BadExpirationDate",
        ),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC, "apns-id": "not-a-uuid"},
            b"{}",
            400,
            "BadMessageId",
        ),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC, "apns-collapse-id": "c" * 65},
            b"{}",
            400,
            "BadCollapseId",
        ),
        ("POST", f"/3/device/{TOKEN}", {"apns-topic": TOPIC}, b"", 400, "PayloadEmpty"),
        (
            "POST",
            f"/3/device/{TOKEN}",
            {"apns-topic": TOPIC},
            b"x" * 4097,
            413,
            "PayloadTooLarge",
        ),
        (
            "POST",
            f"/3/device/{TOKEN}",
            [("apns-topic", TOPIC), ("apns-topic", TOPIC)],
            b"{}",
            400,
            "DuplicateHeaders",
        ),
    ],
)
async def test_bad_requests_are_refused_with_apns_reasons(
    fake_apns: FakeAPNs,
    raw_h2: RawH2Connect,
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]],
    body: bytes,
    status: int,
    why: str,
) -> None:
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.request(path, headers, body, method)
    assert (response.status, reason(response.body)) == (status, why)
    assert len(response.headers["apns-id"]) == 36
    assert (fake_apns.pushes[0].status, fake_apns.pushes[0].reason) == (status, why)
    assert fake_apns.delivered_count == 0


async def test_largest_payload_is_accepted(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.request(f"/3/device/{TOKEN}", {"apns-topic": TOPIC}, b"x" * 4096)
    assert response.status == 200


async def test_topics_restrict_apns_topic(raw_h2: RawH2Connect) -> None:
    async with FakeAPNs(topics={TOPIC}) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        assert (await client.push(TOKEN, TOPIC)).status == 200
        refused = await client.push(TOKEN, "pass.com.example.other")
        assert (refused.status, reason(refused.body)) == (400, "TopicDisallowed")


# -- scripted replies -----------------------------------------------------------------------


@pytest.mark.parametrize("why", sorted(r for r in REASONS if REASONS[r] != 410))
async def test_every_reason_can_be_scripted(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect, why: str
) -> None:
    fake_apns.reply(TOKEN, PushReply(REASONS[why], why))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.push(TOKEN)
    assert response.status == REASONS[why]
    assert json.loads(response.body) == {"reason": why}
    assert response.headers["content-type"].startswith("application/json")
    assert (await client.push(OTHER)).status == 200  # other tokens unaffected


@pytest.mark.parametrize("why", ["Unregistered", "ExpiredToken"])
async def test_410_carries_its_timestamp(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect, why: str
) -> None:
    fake_apns.reply(TOKEN, PushReply(410, why, timestamp_ms=1_700_000_000_123))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.push(TOKEN)
    assert response.status == 410
    assert json.loads(response.body) == {"reason": why, "timestamp": 1_700_000_000_123}


async def test_410_timestamp_defaults_to_now(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(410))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    before = int(time.time() * 1000)
    body = json.loads((await client.push(TOKEN)).body)
    assert body["reason"] == "Unregistered"
    assert before <= body["timestamp"] <= int(time.time() * 1000)


async def test_unknown_reasons_are_sent_verbatim(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(400, "SomethingNew"))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert reason((await client.push(TOKEN)).body) == "SomethingNew"


async def test_times_then_next_script_then_200(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(503, "ServiceUnavailable", times=2))
    fake_apns.reply(TOKEN, PushReply(429, times=1))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    statuses = [(await client.push(TOKEN)).status for _ in range(5)]
    assert statuses == [503, 503, 429, 200, 200]


async def test_reply_default_and_clear(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply_default(PushReply(500))
    fake_apns.reply(TOKEN, PushReply(200))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert (await client.push(TOKEN)).status == 200
    other = await client.push(OTHER)
    assert (other.status, reason(other.body)) == (500, "InternalServerError")
    fake_apns.clear_replies()
    assert (await client.push(OTHER)).status == 200


async def test_script_applies_only_to_valid_pushes(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect
) -> None:
    fake_apns.reply(TOKEN, PushReply(410, times=1))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert reason((await client.push(TOKEN, topic=None)).body) == "MissingTopic"
    assert (await client.push(TOKEN)).status == 410


async def test_delay_holds_one_answer_while_others_pass(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect
) -> None:
    fake_apns.reply(TOKEN, PushReply(200, delay=0.3))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    started = time.monotonic()
    slow = client.start(f"/3/device/{TOKEN}", {"apns-topic": TOPIC})
    fast = await client.push(OTHER)
    assert fast.status == 200 and not slow.done()
    assert fake_apns.peak_concurrent_streams == 2
    assert (await asyncio.wait_for(slow, 5)).status == 200
    assert time.monotonic() - started >= 0.3


async def test_drop_closes_the_connection_without_answer(
    fake_apns: FakeAPNs, raw_h2: RawH2Connect
) -> None:
    fake_apns.reply(TOKEN, PushReply(drop=True, times=1))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    with pytest.raises(ConnectionError):
        await client.push(TOKEN)
    assert client.goaway is None
    again = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert (await again.push(TOKEN)).status == 200


async def test_goaway_reply_answers_then_closes(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(403, "InvalidProviderToken", goaway=True))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    response = await client.push(TOKEN)
    assert (response.status, reason(response.body)) == (403, "InvalidProviderToken")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.goaway is not None
    assert json.loads(client.goaway.additional_data or b"") == {"reason": "InvalidProviderToken"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": 99}, "status"),
        ({"status": 200, "reason": "BadTopic"}, "reason must be None"),
        ({"status": 400}, "reason is required"),
        ({"status": 403, "reason": "Unregistered"}, "goes with status 410"),
        ({"status": 400, "reason": "BadTopic", "timestamp_ms": 1}, "timestamp_ms"),
        ({"delay": -1.0}, "delay"),
        ({"times": 0}, "times"),
    ],
)
def test_bad_scripts_are_typed_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FakeAPNsError, match=message):
        PushReply(**kwargs)  # type: ignore[arg-type]


def test_bad_configuration_is_a_typed_error() -> None:
    with pytest.raises(FakeAPNsError, match="max_concurrent_streams"):
        FakeAPNs(max_concurrent_streams=0)
    with pytest.raises(FakeAPNsError, match="jwt_public_keys"):
        FakeAPNs(jwt_public_keys={"K": b"not a key"})
    with pytest.raises(FakeAPNsError, match="n_streams"):
        FakeAPNs().goaway_after(0)


# -- GOAWAY, dropped sockets, MAX_CONCURRENT_STREAMS -----------------------------------------


async def test_goaway_after_n_streams(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.goaway_after(3, debug=b'{"reason":"Shutdown"}')
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    futures = [client.start(f"/3/device/{i:064x}", {"apns-topic": TOPIC}) for i in range(5)]
    responses = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)

    answered = [r for r in responses if not isinstance(r, BaseException) and r.reset is None]
    assert [r.stream_id for r in answered] == [1, 3, 5]
    assert {r.status for r in answered} == {200}
    for later in responses[3:]:  # refused, or lost with the connection: never processed
        assert isinstance(later, ConnectionError) or (
            later.reset == h2.errors.ErrorCodes.REFUSED_STREAM  # type: ignore[union-attr]
        )
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.goaway is not None
    assert client.goaway.last_stream_id == 5
    assert client.goaway.additional_data == b'{"reason":"Shutdown"}'
    assert fake_apns.push_count == 3 and fake_apns.goaways_sent == 1

    again = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    assert (await again.push()).status == 200  # each connection gets its own N
    fake_apns.goaway_after(None)


async def test_goaway_on_demand_is_sent_at_once(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(200, delay=0.3))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    in_flight = client.start(f"/3/device/{TOKEN}", {"apns-topic": TOPIC})
    await fake_apns.wait_for_pushes(1)
    await fake_apns.goaway(debug=b"Shutdown")
    await asyncio.sleep(0.1)
    assert client.goaway is not None and not in_flight.done()  # GOAWAY before the answer
    assert (client.goaway.error_code, client.goaway.last_stream_id) == (0, 1)
    assert client.goaway.additional_data == b"Shutdown"
    # The fake still answers stream 1, but h2 (this client) cannot read after a GOAWAY.
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(in_flight, 5)
    await asyncio.wait_for(client.closed.wait(), 5)


async def test_goaway_on_demand_drained(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(200, delay=0.2))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    in_flight = client.start(f"/3/device/{TOKEN}", {"apns-topic": TOPIC})
    await fake_apns.wait_for_pushes(1)
    await fake_apns.goaway(debug=b"Shutdown", drain=True)
    late = await client.push(OTHER)  # opened after the GOAWAY was decided: refused
    assert late.reset == h2.errors.ErrorCodes.REFUSED_STREAM
    assert (await asyncio.wait_for(in_flight, 5)).status == 200  # answered, then GOAWAY
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.goaway is not None and client.goaway.last_stream_id == 1


async def test_drop_connections_is_abrupt(fake_apns: FakeAPNs, raw_h2: RawH2Connect) -> None:
    fake_apns.reply(TOKEN, PushReply(200, delay=5))
    client = await raw_h2(fake_apns.host, fake_apns.port, ca_pem=fake_apns.ca_pem)
    await client.settings_received.wait()
    in_flight = client.start(f"/3/device/{TOKEN}", {"apns-topic": TOPIC})
    await fake_apns.wait_for_pushes(1)
    await fake_apns.drop_connections()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(in_flight, 5)
    assert client.goaway is None  # no GOAWAY: the socket just closed
    assert fake_apns.open_connections == 0


@pytest.mark.parametrize("limit", [1, 1000])
async def test_max_concurrent_streams_is_announced(raw_h2: RawH2Connect, limit: int) -> None:
    async with FakeAPNs(max_concurrent_streams=limit) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        await client.push()  # a round trip: both SETTINGS frames are in
        assert client.server_max_concurrent_streams == limit


async def test_max_concurrent_streams_is_enforced(raw_h2: RawH2Connect) -> None:
    async with FakeAPNs(max_concurrent_streams=2) as apns:
        apns.reply_default(PushReply(200, delay=0.5))
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        await client.push(TOKEN)  # settings exchanged and acknowledged
        # A client that ignores the server's limit (h2 would refuse to open the third stream).
        client.conn.remote_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
        )
        futures = [client.start(f"/3/device/{i:064x}", {"apns-topic": TOPIC}) for i in range(3)]
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.goaway is not None
        assert client.goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert apns.protocol_errors and "Max inbound streams is 2" in apns.protocol_errors[0]
        await asyncio.gather(*futures, return_exceptions=True)


async def test_peak_concurrent_streams_reports_what_the_client_did(raw_h2: RawH2Connect) -> None:
    async with FakeAPNs(max_concurrent_streams=1000) as apns:
        apns.reply_default(PushReply(200, delay=0.2))
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        await client.settings_received.wait()
        futures = [client.start(f"/3/device/{i:064x}", {"apns-topic": TOPIC}) for i in range(20)]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert apns.peak_concurrent_streams == 20


# -- certificate authentication ------------------------------------------------------------


async def test_client_certificate_from_the_ca_is_accepted(dev_pki, raw_h2: RawH2Connect) -> None:  # type: ignore[no-untyped-def]
    async with FakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as apns:
        client = await raw_h2(
            apns.host,
            apns.port,
            ca_pem=apns.ca_pem,
            cert=dev_pki.signer_cert,
            key=dev_pki.signer_key,
        )
        assert (await client.push(TOKEN, dev_pki.pass_type_identifier)).status == 200
        # A Pass Type ID certificate has one topic: it is implied, and no other is allowed.
        assert (await client.push(TOKEN, topic=None)).status == 200
        other = await client.push(TOKEN, "pass.com.example.other")
        assert (other.status, reason(other.body)) == (400, "TopicDisallowed")


async def test_root_ca_accepts_a_chain_through_the_intermediate(
    dev_pki,  # type: ignore[no-untyped-def]
    raw_h2: RawH2Connect,
    tmp_path: Path,
) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(dev_pki.signer_cert.read_bytes() + dev_pki.wwdr_cert.read_bytes())
    async with FakeAPNs(client_ca_pem=dev_pki.root_cert.read_bytes()) as apns:
        client = await raw_h2(
            apns.host, apns.port, ca_pem=apns.ca_pem, cert=chain, key=dev_pki.signer_key
        )
        assert (await client.push(TOKEN)).status == 200


async def refused(apns: FakeAPNs, raw_h2: RawH2Connect, **kwargs: Path) -> None:
    """The TLS handshake fails (TLS 1.2), or the connection dies at once (TLS 1.3 alert)."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem, **kwargs)
        await client.push(TOKEN)


async def test_missing_client_certificate_is_refused(dev_pki, raw_h2: RawH2Connect) -> None:  # type: ignore[no-untyped-def]
    async with FakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as apns:
        await refused(apns, raw_h2)
        assert apns.push_count == 0


async def test_client_certificate_from_another_ca_is_refused(
    dev_pki,  # type: ignore[no-untyped-def]
    raw_h2: RawH2Connect,
    tmp_path: Path,
) -> None:
    root, root_key = make_root()
    wwdr, wwdr_key = make_wwdr(root, root_key)
    cert, key = make_pass_certificate(wwdr, wwdr_key)
    (tmp_path / "c.pem").write_bytes(pem_certificate(cert))
    (tmp_path / "k.pem").write_bytes(pem_key(key))
    async with FakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as apns:
        await refused(apns, raw_h2, cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
        assert apns.push_count == 0


# -- token (JWT) authentication ------------------------------------------------------------


def token_fake(apns_key: ProviderKey, **kwargs: object) -> FakeAPNs:
    return FakeAPNs(
        jwt_public_keys={apns_key.key_id: apns_key.public_pem},
        team_id=apns_key.team_id,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_valid_provider_token_is_accepted(
    apns_key: ProviderKey, raw_h2: RawH2Connect
) -> None:
    async with token_fake(apns_key) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        bearer = f"bearer {apns_key.token()}"
        for _ in range(3):  # the same token, reused: verified once, accepted each time
            assert (await client.push(TOKEN, authorization=bearer)).status == 200
        assert apns.pushes[0].headers["authorization"] == bearer


async def test_missing_provider_token(apns_key: ProviderKey, raw_h2: RawH2Connect) -> None:
    async with token_fake(apns_key) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        response = await client.push(TOKEN)
        assert (response.status, reason(response.body)) == (403, "MissingProviderToken")


async def test_provider_token_checks(apns_key: ProviderKey, raw_h2: RawH2Connect) -> None:
    other_key = ProviderKey(
        ec.generate_private_key(ec.SECP256R1()), apns_key.key_id, apns_key.team_id, apns_key.p8_path
    )
    now = time.time()
    cases = {
        "wrong key": (other_key.token(), "InvalidProviderToken"),
        "unknown kid": (apns_key.token(key_id="OTHERKEY12"), "InvalidProviderToken"),
        "wrong team": (apns_key.token(iss="OTHERTEAM1"), "InvalidProviderToken"),
        "not a jwt": ("abc.def.ghi", "InvalidProviderToken"),
        "expired": (apns_key.token(iat=now - 3601), "ExpiredProviderToken"),
        "from the future": (apns_key.token(iat=now + 3600), "InvalidProviderToken"),
    }
    async with token_fake(apns_key) as apns:
        for case, (jwt_token, why) in cases.items():
            client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
            response = await client.push(TOKEN, authorization=f"bearer {jwt_token}")
            assert (response.status, reason(response.body)) == (403, why), case
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        response = await client.push(TOKEN, authorization=f"basic {apns_key.token()}")
        assert reason(response.body) == "InvalidProviderToken"


async def test_token_expires_after_an_hour_and_renewal_is_limited(
    apns_key: ProviderKey, raw_h2: RawH2Connect
) -> None:
    now = [1_800_000_000.0]
    async with token_fake(apns_key, clock=lambda: now[0]) as apns:
        client = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        first = f"bearer {apns_key.token(iat=now[0])}"
        assert (await client.push(TOKEN, authorization=first)).status == 200
        now[0] += 1000  # a new token 17 minutes later: too soon
        early = await client.push(TOKEN, authorization=f"bearer {apns_key.token(iat=now[0])}")
        assert (early.status, reason(early.body)) == (429, "TooManyProviderTokenUpdates")
        assert (await client.push(TOKEN, authorization=first)).status == 200
        now[0] += 2601  # the first token is now older than an hour
        stale = await client.push(TOKEN, authorization=first)
        assert (stale.status, reason(stale.body)) == (403, "ExpiredProviderToken")
        renewed = f"bearer {apns_key.token(iat=now[0])}"
        assert (await client.push(TOKEN, authorization=renewed)).status == 200


async def test_certificate_or_token_when_both_are_configured(
    dev_pki,  # type: ignore[no-untyped-def]
    apns_key: ProviderKey,
    raw_h2: RawH2Connect,
) -> None:
    async with token_fake(apns_key, client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as apns:
        with_cert = await raw_h2(
            apns.host,
            apns.port,
            ca_pem=apns.ca_pem,
            cert=dev_pki.signer_cert,
            key=dev_pki.signer_key,
        )
        assert (await with_cert.push(TOKEN)).status == 200
        without = await raw_h2(apns.host, apns.port, ca_pem=apns.ca_pem)
        assert reason((await without.push(TOKEN)).body) == "MissingProviderToken"
        bearer = f"bearer {apns_key.token()}"
        assert (await without.push(TOKEN, authorization=bearer)).status == 200


# -- package and process -----------------------------------------------------------------


def test_importing_the_package_does_not_load_the_server() -> None:
    code = (
        "import sys, passkit_stamps.testing as t; "
        "assert 'passkit_stamps.testing.fake_apns' not in sys.modules; "
        "t.FakeAPNs; assert 'passkit_stamps.testing.fake_apns' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


async def test_standalone_process(raw_h2: RawH2Connect, tmp_path: Path) -> None:
    ca_out = tmp_path / "ca.pem"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "passkit_stamps.testing.fake_apns", "--port", "0",
        "--max-concurrent-streams", "7", "--ca-out", str(ca_out), "--quiet", "--loop", "asyncio",
        stdout=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    assert process.stdout is not None
    try:
        listening = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        ca_line = (await process.stdout.readline()).decode().split()
        assert listening[0] == "LISTENING" and ca_line == ["CA", str(ca_out)]
        client = await raw_h2(listening[1], int(listening[2]), ca_pem=ca_out.read_bytes())
        assert (await client.push()).status == 200
        assert (await client.push(topic=None)).status == 400
        assert client.server_max_concurrent_streams == 7
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert out.decode().split()[:6] == ["PUSHES", "2", "DELIVERED", "1", "CONNECTIONS", "1"]
    assert process.returncode == 0


# -- the standalone fake's faster HPACK Huffman decoder --------------------------------------


def _hpack_decode(data: bytes) -> bytes | str:
    from hpack import HPACKDecodingError
    from hpack.huffman_table import decode_huffman as original

    try:
        return original(data)
    except HPACKDecodingError as exc:
        return str(exc)


def _fast_decode(data: bytes) -> bytes | str:
    from hpack import HPACKDecodingError

    from passkit_stamps.testing.fake_apns import decode_huffman

    try:
        return decode_huffman(data)
    except HPACKDecodingError as exc:
        return str(exc)


@settings(deadline=None)  # a stall on a loaded machine is not a failure
@given(st.binary(max_size=200))
def test_byte_wise_huffman_decodes_what_hpack_encodes(text: bytes) -> None:
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    encoded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(text)
    assert _fast_decode(encoded) == _hpack_decode(encoded) == text


@settings(deadline=None)  # a stall on a loaded machine is not a failure
@given(st.binary(max_size=64))
def test_byte_wise_huffman_agrees_with_hpack_on_any_bytes(data: bytes) -> None:
    assert _fast_decode(data) == _hpack_decode(data)  # the same bytes, or the same error
