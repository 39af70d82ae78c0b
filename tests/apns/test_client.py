"""The APNs client over real TLS + HTTP/2 on loopback, against the fake APNs."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from passkit_stamps.apple.apns import (
    APNsClient,
    DeadToken,
    Delivered,
    Failed,
    RetryLater,
    TokenAuth,
)
from passkit_stamps.errors import (
    APNsCertificateError,
    APNsClosedError,
    APNsConfigurationError,
    APNsInputError,
    APNsProviderTokenError,
    APNsRequestError,
    APNsServerCertificateError,
    APNsTopicError,
)
from passkit_stamps.runtime.devpki import make_root
from passkit_stamps.runtime.devpki import pem_certificate as pem
from passkit_stamps.testing import FakeAPNs, PushReply
from passkit_stamps.testing.fake_apns import REASONS

TOPIC = "pass.com.example.stamps"


def tok(i: int) -> str:
    return f"{i:064x}"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def credentials(dev_pki: Any) -> Any:
    return dev_pki.credentials()


@pytest.fixture
async def cert_fake(dev_pki: Any) -> AsyncIterator[FakeAPNs]:
    async with FakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as apns:
        yield apns


def cert_client(fake: FakeAPNs, credentials: Any, **kwargs: Any) -> APNsClient:
    kwargs.setdefault("backoff_base", 0.01)
    return APNsClient(credentials, host="localhost", port=fake.port, ca=fake.ca_pem, **kwargs)


def token_client(fake: FakeAPNs, apns_key: Any, **kwargs: Any) -> APNsClient:
    clock = kwargs.pop("clock", time.time)
    auth = TokenAuth(
        apns_key.p8_path, key_id=apns_key.key_id, team_id=apns_key.team_id, clock=clock
    )
    kwargs.setdefault("backoff_base", 0.01)
    return APNsClient(
        token_auth=auth,
        topic=TOPIC,
        host="localhost",
        port=fake.port,
        ca=fake.ca_file,
        clock=clock,
        **kwargs,
    )


# -- certificate authentication -------------------------------------------------------------------


async def test_certificate_push_is_delivered_with_the_documented_headers(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    async with cert_client(cert_fake, credentials) as apns:
        result = await apns.push(tok(1))
    assert isinstance(result, Delivered)
    assert result.token == tok(1) and result.apns_id
    (push,) = cert_fake.pushes
    assert push.token == tok(1) and push.topic == TOPIC and push.body == b"{}"
    assert push.headers["apns-push-type"] == "background"
    assert push.headers["apns-priority"] == "5"
    expiration = int(push.headers["apns-expiration"])
    assert 4 * 3600 - 60 <= expiration - time.time() <= 4 * 3600 + 5  # a few hours ahead
    assert "authorization" not in push.headers


async def test_header_defaults_can_be_changed(cert_fake: FakeAPNs, credentials: Any) -> None:
    from datetime import timedelta

    async with cert_client(
        cert_fake, credentials, priority=10, expiration=None, push_type="alert"
    ) as apns:
        assert isinstance(await apns.push(tok(2)), Delivered)
    headers = cert_fake.pushes[0].headers
    assert (headers["apns-priority"], headers["apns-expiration"]) == ("10", "0")
    assert headers["apns-push-type"] == "alert"
    assert timedelta(hours=4) == APNsClient.__init__.__kwdefaults__["expiration"]


async def test_certificate_from_another_ca_is_refused_with_one_clear_error(
    credentials: Any,
) -> None:
    other_root, _ = make_root(common_name="someone else")
    async with FakeAPNs(client_ca_pem=pem(other_root)) as fake:
        client = cert_client(fake, credentials)
        async with client:
            with pytest.raises(APNsCertificateError) as caught:
                await client.push(tok(3))
            message = str(caught.value)
            assert "pass.com.example.stamps" in message
            with pytest.raises(APNsCertificateError):  # stays stopped
                await client.push(tok(4))
        with pytest.raises(APNsCertificateError):
            await cert_client(fake, credentials).connect()  # found before any push
        assert fake.push_count == 0


async def test_untrusted_server_certificate_is_a_configuration_error(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    other_root, _ = make_root(common_name="not the fake's CA")
    client = APNsClient(credentials, host="localhost", port=cert_fake.port, ca=pem(other_root))
    async with client:
        with pytest.raises(APNsServerCertificateError, match="--ca"):
            await client.push(tok(5))


async def test_private_key_never_stays_on_disk(
    cert_fake: FakeAPNs, credentials: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    client = cert_client(cert_fake, credentials)
    assert list(tmp_path.iterdir()) == []
    async with client:
        assert isinstance(await client.push(tok(6)), Delivered)


def test_certificate_topic_must_be_its_pass_type(credentials: Any) -> None:
    with pytest.raises(APNsTopicError, match=r"pass\.com\.example\.stamps"):
        APNsClient(credentials, topic="pass.com.other")


# -- token authentication -------------------------------------------------------------------------


async def test_token_push_is_delivered(apns_key: Any) -> None:
    async with FakeAPNs(
        jwt_public_keys={apns_key.key_id: apns_key.public_pem}, team_id=apns_key.team_id
    ) as fake:
        async with token_client(fake, apns_key) as apns:
            assert isinstance(await apns.push(tok(7)), Delivered)
        assert fake.pushes[0].headers["authorization"].startswith("bearer ")


async def test_token_from_an_unknown_key_is_refused(apns_key: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with FakeAPNs(jwt_public_keys={apns_key.key_id: other_pem}) as fake:
        apns = token_client(fake, apns_key)
        with pytest.raises(APNsProviderTokenError, match=apns_key.key_id) as caught:
            await apns.push(tok(8))
        await apns.aclose()
    assert caught.value.reason == "InvalidProviderToken"


async def test_token_is_reused_and_renewed_between_20_and_60_minutes(apns_key: Any) -> None:
    clock = Clock()
    async with FakeAPNs(
        jwt_public_keys={apns_key.key_id: apns_key.public_pem}, clock=clock
    ) as fake:
        client = token_client(fake, apns_key, clock=clock)
        auth = client.token_auth
        assert auth is not None
        async with client:
            start = clock.now
            for minute in (0, 1, 19, 20, 39.9):
                clock.now = start + minute * 60
                assert isinstance(await client.push(tok(int(minute))), Delivered)
            assert auth.minted == 1  # one token for the first 40 minutes, never more often
            clock.now = start + 40 * 60
            assert isinstance(await client.push(tok(40)), Delivered)
            assert auth.minted == 2  # renewed at 40 minutes, before the 60 APNs allows
            clock.now = start + 79 * 60
            assert isinstance(await client.push(tok(79)), Delivered)
            assert auth.minted == 2
        headers = [p.headers["authorization"] for p in fake.pushes]
        assert len(set(headers)) == 2


def test_token_refresh_period_is_bounded(apns_key: Any) -> None:
    for bad in (60.0, 19 * 60.0, 3600.0):
        with pytest.raises(APNsInputError, match="refresh_after"):
            TokenAuth(
                apns_key.p8_path, key_id="ABC123DEFG", team_id="EXAMPLE123", refresh_after=bad
            )


def test_token_auth_refuses_a_key_that_is_not_p256(tmp_path: Path, dev_pki: Any) -> None:
    with pytest.raises(APNsProviderTokenError, match="P-256"):
        TokenAuth(dev_pki.signer_key, key_id="ABC123DEFG", team_id="EXAMPLE123")
    with pytest.raises(APNsProviderTokenError, match="cannot be read"):
        TokenAuth(tmp_path / "missing.p8", key_id="ABC123DEFG", team_id="EXAMPLE123")
    with pytest.raises(APNsInputError, match="key_id"):
        TokenAuth(dev_pki.signer_key, key_id="short", team_id="EXAMPLE123")


async def test_expired_provider_token_is_renewed_once(apns_key: Any) -> None:
    clock = Clock()
    server_offset = 0.0
    async with FakeAPNs(
        jwt_public_keys={apns_key.key_id: apns_key.public_pem},
        clock=lambda: clock.now + server_offset,
    ) as fake:
        client = token_client(fake, apns_key, clock=clock)
        async with client:
            assert isinstance(await client.push(tok(1)), Delivered)
            # 30 minutes on: our token is still due for reuse, but the server's clock runs
            # 31 minutes ahead, so to APNs it is over an hour old.
            clock.now += 30 * 60
            server_offset = 31 * 60
            result = await client.push(tok(2))
            assert isinstance(result, Delivered)  # renewed once, then accepted
            assert client.token_auth is not None and client.token_auth.minted == 2
        reasons = [p.reason for p in fake.pushes]
        assert reasons == [None, "ExpiredProviderToken", None]


async def test_expired_provider_token_twice_stops_with_a_clock_hint(apns_key: Any) -> None:
    clock = Clock()
    async with (
        FakeAPNs(jwt_public_keys={apns_key.key_id: apns_key.public_pem}, clock=clock) as fake,
        token_client(fake, apns_key, clock=clock) as client,
    ):
        assert isinstance(await client.push(tok(1)), Delivered)
        clock.now += 25 * 60
        fake.reply_default(PushReply(status=403, reason="ExpiredProviderToken"))
        with pytest.raises(APNsProviderTokenError, match="clock"):
            await client.push(tok(3))
        assert client.token_auth is not None and client.token_auth.minted == 2


# -- Apple's table of responses --------------------------------------------------------------------

DEAD = {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
RETRY = {"TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown", "IdleTimeout"}
ERROR_CLASS: dict[str, type[APNsConfigurationError]] = {
    "BadCertificate": APNsCertificateError,
    "BadCertificateEnvironment": APNsCertificateError,
    "Forbidden": APNsCertificateError,
    "InvalidProviderToken": APNsProviderTokenError,
    "MissingProviderToken": APNsProviderTokenError,
    "UnrelatedKeyIdInToken": APNsProviderTokenError,
    "BadEnvironmentKeyIdInToken": APNsProviderTokenError,
    "TooManyProviderTokenUpdates": APNsProviderTokenError,
    "ExpiredProviderToken": APNsProviderTokenError,  # certificate auth cannot renew a token
    "BadTopic": APNsTopicError,
    "MissingTopic": APNsTopicError,
    "TopicDisallowed": APNsTopicError,
}


@pytest.mark.parametrize("reason", sorted(REASONS))
async def test_every_row_of_apples_error_table(
    reason: str, cert_fake: FakeAPNs, credentials: Any
) -> None:
    status = REASONS[reason]
    timestamp = 1_700_000_000_000 if status == 410 else None
    cert_fake.reply(tok(9), PushReply(status=status, reason=reason, timestamp_ms=timestamp))
    async with cert_client(cert_fake, credentials, retries=2) as apns:
        if reason in DEAD:
            result = await apns.push(tok(9))
            assert isinstance(result, DeadToken)
            assert (result.status, result.reason) == (status, reason)
            if status == 410:
                assert result.timestamp == datetime.fromtimestamp(1_700_000_000, UTC)
        elif reason in RETRY:
            result = await apns.push(tok(9))
            assert isinstance(result, RetryLater)
            assert (result.status, result.reason, result.attempts) == (status, reason, 3)
            assert len([p for p in cert_fake.pushes if p.token == tok(9)]) == 3
        else:
            expected = ERROR_CLASS.get(reason, APNsRequestError)
            with pytest.raises(expected) as caught:
                await apns.push(tok(9))
            assert caught.value.reason == reason and caught.value.status == status
            assert caught.value.token == tok(9)


async def test_retry_later_then_delivered(cert_fake: FakeAPNs, credentials: Any) -> None:
    cert_fake.reply(tok(10), PushReply(status=503, reason="ServiceUnavailable", times=1))
    cert_fake.reply(tok(10), PushReply(status=429, reason="TooManyRequests", times=1))
    async with cert_client(cert_fake, credentials) as apns:
        assert isinstance(await apns.push(tok(10)), Delivered)
    assert len(cert_fake.pushes) == 3


async def test_unknown_reason_is_kept_verbatim(cert_fake: FakeAPNs, credentials: Any) -> None:
    cert_fake.reply(tok(11), PushReply(status=400, reason="SomethingNew"))
    async with cert_client(cert_fake, credentials) as apns:
        result = await apns.push(tok(11))
    assert result == Failed(tok(11), 400, "SomethingNew", result.apns_id)


async def test_configuration_error_stops_push_many_with_one_error(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    cert_fake.reply(tok(500), PushReply(status=400, reason="TopicDisallowed"))
    async with cert_client(cert_fake, credentials) as apns:
        results = []
        with pytest.raises(APNsTopicError) as caught:
            async for result in apns.push_many(tok(i) for i in range(100_000)):
                results.append(result)
        assert "pass.com.example.stamps" in str(caught.value)
        with pytest.raises(APNsTopicError):
            await apns.push(tok(1))
    assert cert_fake.push_count < 5000  # stopped, did not push the 100,000


def test_bad_inputs_are_typed_errors(credentials: Any) -> None:
    with pytest.raises(APNsInputError, match="credentials"):
        APNsClient()
    with pytest.raises(APNsInputError, match="priority"):
        APNsClient(credentials, priority=7)
    with pytest.raises(APNsInputError, match="port"):
        APNsClient(credentials, port=0)


async def test_malformed_token_is_an_input_error(cert_fake: FakeAPNs, credentials: Any) -> None:
    async with cert_client(cert_fake, credentials) as apns:
        for bad in ("", "xyz", "ab/../" * 10, 123):
            with pytest.raises(APNsInputError, match="token"):
                await apns.push(bad)  # type: ignore[arg-type]


# -- connections: concurrency, GOAWAY, drops, pool -------------------------------------------------


@pytest.mark.parametrize("limit", [1, 1000])
async def test_max_concurrent_streams_is_honoured(
    limit: int, dev_pki: Any, credentials: Any
) -> None:
    async with FakeAPNs(
        client_ca_pem=dev_pki.wwdr_cert.read_bytes(), max_concurrent_streams=limit
    ) as fake:
        n = 50 if limit == 1 else 3000
        fake.reply_default(PushReply(delay=0.05))  # answers wait: streams pile up
        async with cert_client(fake, credentials) as apns:
            results = [r async for r in apns.push_many(tok(i) for i in range(n))]
        assert all(isinstance(r, Delivered) for r in results) and len(results) == n
        assert fake.peak_concurrent_streams <= limit
        if limit == 1000:
            assert fake.peak_concurrent_streams > 500  # many streams in flight, not one by one
        assert fake.connections_opened == 1


async def test_goaway_in_the_middle_of_a_burst_loses_and_duplicates_nothing(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    cert_fake.goaway_after(700, error_code=0, debug=b"Shutdown")
    n = 5000
    async with cert_client(cert_fake, credentials) as apns:
        results = [r async for r in apns.push_many(tok(i) for i in range(n))]
        goaways = list(apns.goaways)
    assert sorted(r.token for r in results) == sorted(tok(i) for i in range(n))
    assert all(isinstance(r, Delivered) for r in results)
    delivered = collections.Counter(p.token for p in cert_fake.pushes if p.status == 200)
    assert len(delivered) == n and max(delivered.values()) == 1  # none sent twice
    assert cert_fake.connections_opened >= n // 700
    assert goaways and goaways[0].debug == b"Shutdown"  # the reason is surfaced


async def test_goaway_on_demand_moves_waiting_pushes_to_a_new_connection(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    cert_fake.reply_default(PushReply(delay=0.2))
    async with cert_client(cert_fake, credentials) as apns:
        tasks = [asyncio.ensure_future(apns.push(tok(i))) for i in range(20)]
        await cert_fake.wait_for_pushes(20)
        await cert_fake.goaway(error_code=0, debug=b"maintenance")
        cert_fake.clear_replies()
        results = await asyncio.gather(*tasks)
    assert all(isinstance(r, Delivered) for r in results)


async def test_dropped_connection_retries_in_flight_pushes(
    cert_fake: FakeAPNs, credentials: Any
) -> None:
    cert_fake.reply_default(PushReply(delay=0.3))
    n = 200
    async with cert_client(cert_fake, credentials) as apns:

        async def drop_soon() -> None:
            await cert_fake.wait_for_pushes(50)
            await cert_fake.drop_connections()
            cert_fake.clear_replies()

        dropper = asyncio.ensure_future(drop_soon())
        results = [r async for r in apns.push_many(tok(i) for i in range(n))]
        await dropper
    assert sorted(r.token for r in results) == sorted(tok(i) for i in range(n))
    assert all(isinstance(r, Delivered) for r in results)  # at-least-once
    assert cert_fake.connections_opened >= 2


async def test_server_gone_gives_retry_later_not_a_hang(credentials: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    client = APNsClient(credentials, host="127.0.0.1", port=port, retries=1, connect_timeout=1)
    async with client:
        result = await asyncio.wait_for(client.push(tok(1)), 10)
    assert isinstance(result, RetryLater) and result.reason.startswith("ConnectionFailed")


async def test_pool_of_connections(cert_fake: FakeAPNs, credentials: Any) -> None:
    async with cert_client(cert_fake, credentials, connections=3, max_streams=50) as apns:
        await apns.connect()
        results = [r async for r in apns.push_many(tok(i) for i in range(3000))]
    assert len(results) == 3000 and all(r.ok for r in results)
    assert cert_fake.connections_opened == 3
    assert len({p.connection_id for p in cert_fake.pushes}) == 3


async def test_ping_on_idle_keeps_the_connection(cert_fake: FakeAPNs, credentials: Any) -> None:
    async with cert_client(cert_fake, credentials, ping_interval=0.05, ping_timeout=1) as apns:
        assert isinstance(await apns.push(tok(1)), Delivered)
        await asyncio.sleep(0.3)
        assert isinstance(await apns.push(tok(2)), Delivered)
    assert cert_fake.connections_opened == 1


# -- clean shutdown --------------------------------------------------------------------------------


async def test_async_with_waits_for_pushes_in_flight(cert_fake: FakeAPNs, credentials: Any) -> None:
    cert_fake.reply_default(PushReply(delay=0.3))
    async with cert_client(cert_fake, credentials) as apns:
        task = asyncio.ensure_future(apns.push(tok(1)))
        await cert_fake.wait_for_pushes(1)
    assert isinstance(task.result(), Delivered)
    with pytest.raises(APNsClosedError):
        await apns.push(tok(2))


async def test_close_timeout_resolves_what_is_left(cert_fake: FakeAPNs, credentials: Any) -> None:
    cert_fake.reply_default(PushReply(delay=5))
    apns = cert_client(cert_fake, credentials)
    task = asyncio.ensure_future(apns.push(tok(1)))
    await cert_fake.wait_for_pushes(1)
    started = time.monotonic()
    await apns.aclose(timeout=0.2)
    assert time.monotonic() - started < 3
    result = task.result()
    assert isinstance(result, RetryLater) and result.reason == "ClientClosed"


# -- many tokens, bounded memory -------------------------------------------------------------------


async def test_push_many_takes_an_async_iterable(cert_fake: FakeAPNs, credentials: Any) -> None:
    async def tokens() -> AsyncIterator[str]:
        for i in range(500):
            yield tok(i)

    async with cert_client(cert_fake, credentials) as apns:
        results = [r async for r in apns.push_many(tokens())]
    assert sorted(r.token for r in results) == [tok(i) for i in range(500)]


def _fake_process(tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "passkit_stamps.testing.fake_apns", "--quiet", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
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


#: Enough pushes that keeping each token or result would show (~200 bytes each: 6 MB), few
#: enough for the suite (tracemalloc slows the client about three times; the 1,000,000-token
#: figure is bench_apns.py's). Measured: peak 1.98 MB at 30,000, 2.05 MB at 100,000.
PUSHES = 30_000


async def test_pushes_stream_without_memory_growth(tmp_path: Path, apns_key: Any) -> None:
    """The fake runs in its own process so tracemalloc sees the client alone."""
    proc, port, ca = _fake_process(tmp_path)
    try:
        auth = TokenAuth(apns_key.p8_path, key_id=apns_key.key_id, team_id=apns_key.team_id)
        client = APNsClient(token_auth=auth, topic=TOPIC, host="localhost", port=port, ca=ca)
        produced = 0

        def tokens() -> Iterator[str]:
            nonlocal produced
            for i in range(PUSHES):
                produced += 1
                yield tok(i)

        async with client:
            async for _ in client.push_many(tok(i) for i in range(3000)):
                pass  # warm-up: connection, caches
            tracemalloc.start()
            delivered = 0
            async for result in client.push_many(tokens()):
                delivered += result.ok
                # bounded: the window in flight plus results not yet taken
                assert produced - delivered <= 2 * client.max_in_flight + 1
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert delivered == PUSHES
        # The window holds 2,000 at a time; 50 bytes kept per push would already pass 3 MB.
        assert peak < 3 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    finally:
        proc.terminate()
        proc.wait(10)
