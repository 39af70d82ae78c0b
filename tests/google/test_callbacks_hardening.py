"""Google save/delete callbacks from an attacker's side: hostile bodies are typed errors (never a
500), the verification work per request is bounded and runs off the event loop, and an
unreachable key URL is not refetched for every request."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passkit_stamps.errors import CallbackBusyError, CallbackVerificationError
from passkit_stamps.google import callbacks
from passkit_stamps.google.callbacks import (
    MAX_INTERMEDIATE_SIGNATURES,
    MAX_VERIFY_THREADS,
    ROOT_KEYS_URL,
    RootKey,
    RootKeys,
    verify_callback,
)

ISSUER = "3388000000012345678"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR_MS = 3_600_000
ROOT = ec.generate_private_key(ec.SECP256R1())
INTERMEDIATE = ec.generate_private_key(ec.SECP256R1())
ROOT_KEYS = [RootKey(ROOT.public_key(), "ECv2SigningOnly", None)]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _lv(*parts: str) -> bytes:
    return b"".join(struct.pack("<I", len(p.encode())) + p.encode() for p in parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return _b64(key.sign(data, ec.ECDSA(hashes.SHA256())))


def _der(key: ec.EllipticCurvePrivateKey) -> str:
    return _b64(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def signed(
    message: str | None = None,
    *,
    key_expiration: str | None = None,
    signatures: list[str] | None = None,
) -> bytes:
    """A callback whose signed message (raw JSON text, so any literal fits) and intermediate key
    are signed exactly as Google signs them."""
    if message is None:
        message = json.dumps(
            {
                "classId": f"{ISSUER}.coffee",
                "objectId": f"{ISSUER}.113772",
                "eventType": "save",
                "expTimeMillis": NOW_MS + 60_000,
                "count": 1,
                "nonce": "n-1",
            }
        )
    expiration = key_expiration if key_expiration is not None else f'"{NOW_MS + HOUR_MS}"'
    signed_key = f'{{"keyValue": "{_der(INTERMEDIATE)}", "keyExpiration": {expiration}}}'
    if signatures is None:
        signatures = [_sign(ROOT, _lv("GooglePayPasses", "ECv2SigningOnly", signed_key))]
    return json.dumps(
        {
            "signature": _sign(
                INTERMEDIATE, _lv("GooglePayPasses", ISSUER, "ECv2SigningOnly", message)
            ),
            "intermediateSigningKey": {"signedKey": signed_key, "signatures": signatures},
            "protocolVersion": "ECv2SigningOnly",
            "signedMessage": message,
        }
    ).encode()


def message_with(exp: str) -> str:
    return (
        f'{{"classId": "{ISSUER}.coffee", "objectId": "{ISSUER}.113772", "eventType": "save", '
        f'"expTimeMillis": {exp}, "count": 1, "nonce": "n-1"}}'
    )


async def verify(body: bytes | str, **kwargs: Any) -> Any:
    kwargs.setdefault("root_keys", ROOT_KEYS)
    kwargs.setdefault("now", NOW)
    return await verify_callback(body, ISSUER, **kwargs)


async def test_the_signed_helper_makes_valid_callbacks() -> None:
    assert (await verify(signed())).object_id == f"{ISSUER}.113772"


# -- item 4: hostile bodies are CallbackVerificationError ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 8000 + b"]" * 8000,
        b'{"a":' * 2500 + b"1" + b"}" * 2500,
        b'{"protocolVersion": "ECv2SigningOnly", "x": ' + b"[" * 5000 + b"}",
        b'{"protocolVersion": ' + b"1" * 5000 + b"}",
        b'{"protocolVersion": Infinity}',
    ],
)
async def test_deep_or_huge_bodies_are_verification_errors(body: bytes) -> None:
    with pytest.raises(CallbackVerificationError, match="not valid JSON"):
        await verify(body)


@pytest.mark.parametrize(
    "exp",
    ["1e20", "100000000000000000000", "-1e20", "1e400", "Infinity", '"1e20"', "1" * 5000,
     '"' + "9" * 5000 + '"', "1e308", "253402300800000"],
)  # fmt: skip
async def test_out_of_range_message_expiry_is_a_verification_error(exp: str) -> None:
    with pytest.raises(CallbackVerificationError):
        await verify(signed(message_with(exp)))


@pytest.mark.parametrize("exp", ["1e20", "Infinity", '"' + "9" * 5000 + '"', "[" * 40 + "]" * 40])
async def test_out_of_range_key_expiry_is_a_verification_error(exp: str) -> None:
    with pytest.raises(CallbackVerificationError):
        await verify(signed(key_expiration=exp))


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
_FIELDS = ["classId", "objectId", "eventType", "expTimeMillis", "count", "nonce"]


@FAST
@given(st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6))
async def test_any_signed_message_is_an_event_or_a_verification_error(
    changes: dict[str, Any],
) -> None:
    message = {
        "classId": f"{ISSUER}.coffee",
        "objectId": f"{ISSUER}.113772",
        "eventType": "save",
        "expTimeMillis": NOW_MS + 60_000,
        "count": 1,
        "nonce": "n-1",
    }
    message.update(changes)
    try:
        event = await verify(signed(json.dumps(message)))
    except CallbackVerificationError:
        return
    assert event.expires_at > NOW and event.class_id.startswith(ISSUER)


@FAST
@given(
    st.one_of(
        st.binary(max_size=400),
        _json_values.map(lambda v: json.dumps(v).encode()),
        st.integers(0, 10_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(0, 3_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.dictionaries(
            st.sampled_from(
                ["protocolVersion", "intermediateSigningKey", "signature", "signedMessage"]
            ),
            _json_values,
        ).map(lambda d: json.dumps({"protocolVersion": "ECv2SigningOnly", **d}).encode()),
    )
)
async def test_any_body_is_a_verification_error(body: bytes) -> None:
    with pytest.raises(CallbackVerificationError):
        await verify(body)


# -- item 5: bounded work, off the event loop --------------------------------------------------


class CountingVerifies:
    """Wraps the real signature check: counts calls, records the thread, can hold callers."""

    def __init__(self, real: Any, *, hold: threading.Event | None = None) -> None:
        self.real = real
        self.hold = hold
        self.calls = 0
        self.threads: set[int] = set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.threads.add(threading.get_ident())
        try:
            if self.hold is not None:
                self.hold.wait(timeout=3)  # without threads this would stall the loop: fail
            return bool(self.real(*args))
        finally:
            with self._lock:
                self.running -= 1


def junk_signatures(count: int) -> list[str]:
    junk = ec.generate_private_key(ec.SECP256R1())
    return [_sign(junk, str(i).encode()) for i in range(count)]


async def test_150_junk_signatures_are_refused_before_any_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = CountingVerifies(callbacks._verifies)
    monkeypatch.setattr(callbacks, "_verifies", counter)
    body = signed(signatures=junk_signatures(150))
    assert len(body) < callbacks.MAX_BODY
    with pytest.raises(CallbackVerificationError, match=f"more than {MAX_INTERMEDIATE_SIGNATURES}"):
        await verify(body)
    assert counter.calls == 0


async def test_verification_work_is_bounded_by_signatures_times_root_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = CountingVerifies(callbacks._verifies)
    monkeypatch.setattr(callbacks, "_verifies", counter)
    roots = [*ROOT_KEYS, RootKey(INTERMEDIATE.public_key(), "ECv2SigningOnly", None)]
    body = signed(signatures=junk_signatures(MAX_INTERMEDIATE_SIGNATURES))
    with pytest.raises(CallbackVerificationError, match="not signed by any Google root key"):
        await verify(body, root_keys=roots)
    assert counter.calls == MAX_INTERMEDIATE_SIGNATURES * len(roots)
    oversized = signed(signatures=["A" * 400])  # no ECDSA P-256 signature is that long
    with pytest.raises(CallbackVerificationError, match="signature"):
        await verify(oversized)
    assert counter.calls == MAX_INTERMEDIATE_SIGNATURES * len(roots)


async def test_a_burst_of_junk_is_verified_in_few_threads_while_the_loop_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold = threading.Event()
    counter = CountingVerifies(callbacks._verifies, hold=hold)
    monkeypatch.setattr(callbacks, "_verifies", counter)
    body = signed(signatures=junk_signatures(MAX_INTERMEDIATE_SIGNATURES))
    burst = [asyncio.create_task(verify(body)) for _ in range(3 * MAX_VERIFY_THREADS + 4)]
    for _ in range(200):  # the loop keeps running while the verifications are held
        await asyncio.sleep(0.005)
        if counter.running == MAX_VERIFY_THREADS:
            break
    assert counter.running == MAX_VERIFY_THREADS
    assert not any(t.done() for t in burst)
    hold.set()
    results = await asyncio.gather(*burst, return_exceptions=True)
    assert all(isinstance(r, CallbackVerificationError) for r in results)
    assert counter.max_running == MAX_VERIFY_THREADS
    assert threading.get_ident() not in counter.threads


# -- item 5: the key URL while Google is unreachable --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@respx.mock(assert_all_mocked=True)
async def test_an_unreachable_key_url_is_fetched_once_per_backoff_interval(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get(ROOT_KEYS_URL).mock(side_effect=httpx.ConnectError("unreachable"))
    clock = Clock()
    keys = RootKeys(clock=clock)
    body = signed()
    results = await asyncio.gather(
        *(verify(body, root_keys=keys) for _ in range(51)), return_exceptions=True
    )
    assert all(isinstance(r, CallbackVerificationError) for r in results)
    assert "root keys" in str(results[-1])
    assert route.call_count == 1  # single flight, and the failure is remembered
    intervals = []
    for _ in range(5):
        before = route.call_count
        waited = 0.0
        while route.call_count == before:
            clock.now += 1
            waited += 1
            with pytest.raises(CallbackVerificationError):
                await verify(body, root_keys=keys)
            assert waited < 10_000
        intervals.append(waited)
    assert intervals == sorted(intervals) and intervals[-1] > intervals[0]  # growing backoff
    assert intervals[-1] <= callbacks.MAX_KEY_FETCH_BACKOFF


@respx.mock(assert_all_mocked=True)
async def test_keys_are_used_once_google_answers_again(respx_mock: respx.MockRouter) -> None:
    document = {
        "keys": [
            {
                "keyValue": _der(ROOT),
                "protocolVersion": "ECv2SigningOnly",
                "keyExpiration": str(NOW_MS + 48 * HOUR_MS),
            }
        ]
    }
    route = respx_mock.get(ROOT_KEYS_URL)
    route.side_effect = [httpx.ConnectError("down"), httpx.Response(200, json=document)]
    clock = Clock()
    keys = RootKeys(clock=clock)
    with pytest.raises(CallbackVerificationError, match="root keys"):
        await verify(signed(), root_keys=keys)
    clock.now += callbacks.MAX_KEY_FETCH_BACKOFF + 1
    assert (await verify(signed(), root_keys=keys)).nonce == "n-1"
    assert route.call_count == 2


async def test_a_flood_beyond_the_waiters_cap_is_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Junk callbacks queued for the verification threads without a cap: each one waiting held
    its body and a task. Beyond MAX_VERIFY_WAITERS they are refused at once, verifying nothing."""
    hold = threading.Event()
    counter = CountingVerifies(callbacks._verifies, hold=hold)
    monkeypatch.setattr(callbacks, "_verifies", counter)
    body = signed(signatures=junk_signatures(1))
    queued = [asyncio.create_task(verify(body)) for _ in range(callbacks.MAX_VERIFY_WAITERS)]
    for _ in range(200):
        await asyncio.sleep(0.005)
        if counter.running == MAX_VERIFY_THREADS:
            break
    extra = [asyncio.create_task(verify(body)) for _ in range(10)]
    refused = await asyncio.gather(*extra, return_exceptions=True)
    assert all(isinstance(r, CallbackBusyError) for r in refused)
    hold.set()
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(type(r) is CallbackVerificationError for r in results)  # verified, then refused
    assert counter.max_running == MAX_VERIFY_THREADS
