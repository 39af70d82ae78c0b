"""No request can make the app answer 5xx or log a traceback.

The regressions of the hardening issue first (each was a 500), then an ASGI-level fuzz over every
route of the app: random methods, paths built from the real route shapes with real and random
segments, random headers (huge and invalid ones too) and random bodies (deep JSON, huge
numbers), sent in random chunks. Everything runs in-process against the real app and store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Mount, Route

from passkit_stamps import images
from passkit_stamps.google import callbacks
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.web.config import GoogleWebConfig

from .conftest import MOUNT, Wallet, make_wallet
from .test_google_callback import CALLBACK, ISSUER, Google

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    """The app under fuzz and the real values that let requests get past the first checks."""

    wallet: Wallet
    google: Google
    serial: str
    token: str
    secret: str
    image_names: list[str]
    #: Signed callbacks, made once: a strategy must draw the same values when replayed.
    callback_bodies: list[bytes]
    device: str = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def target(service: StampService, dev_pki: DevPKI) -> AsyncIterator[Target]:
    google = Google()
    config = GoogleWebConfig(issuer_id=ISSUER, callback_options={"root_keys": [google.root_key()]})
    wallet = make_wallet(service, dev_pki, google=config)
    issued = await service.issue_card("coffee")
    card = issued.card
    template = await service.get_template("coffee")
    names = [images.image_name(template, "hero", 2), images.image_name(template, "icon@2x")]
    try:
        yield Target(
            wallet=wallet,
            google=google,
            serial=card.serial,
            token=card.authentication_token,
            secret=wallet.config.card_page_path(card.serial).rsplit("/", 1)[1],
            image_names=names,
            callback_bodies=[google.callback(card.serial), google.callback(card.serial, "del")],
        )
    finally:
        await wallet.client.aclose()


# -- the defects of the report, through the app ---------------------------------------------------


async def test_a_5000_digit_integer_in_the_device_log_is_400(target: Target) -> None:
    body = b'{"logs": [' + b"1" * 5000 + b"]}"
    response = await target.wallet.client.post(MOUNT + "/v1/log", content=body)
    assert response.status_code == 400
    assert "integer" in response.text


@pytest.mark.parametrize(
    "body", [b"[" * 8000 + b"]" * 8000, b'{"a":' * 2500 + b"1" + b"}" * 2500], ids=["[", "{"]
)
async def test_deeply_nested_google_callbacks_are_400(target: Target, body: bytes) -> None:
    response = await target.wallet.client.post(CALLBACK, content=body)
    assert response.status_code == 400
    assert "nested deeper" in response.text


async def test_a_signed_callback_expiring_in_1e20_ms_is_400(target: Target) -> None:
    body = target.google.callback(target.serial, expTimeMillis=1e20)
    response = await target.wallet.client.post(CALLBACK, content=body)
    assert response.status_code == 400
    assert "expTimeMillis is out of range" in response.text


async def test_junk_callbacks_do_not_hold_the_event_loop(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a burst of junk callbacks is being verified (held in its worker threads here), the
    app still answers other requests, and only MAX_VERIFY_THREADS verify at a time."""
    release = threading.Event()
    running: list[int] = []
    peak = [0]
    threads: set[int] = set()
    lock = threading.Lock()
    real = callbacks._verifies

    def held(*args: Any) -> bool:
        with lock:
            running.append(1)
            peak[0] = max(peak[0], len(running))
            threads.add(threading.get_ident())
        try:
            release.wait(timeout=3)  # on the loop thread this would stall every request
            return real(*args)
        finally:
            with lock:
                running.pop()

    monkeypatch.setattr(callbacks, "_verifies", held)
    junk = json.loads(target.google.callback(target.serial))
    junk["intermediateSigningKey"]["signatures"] = [junk["signature"]] * 4
    body = json.dumps(junk).encode()
    client = target.wallet.client
    burst = [asyncio.create_task(client.post(CALLBACK, content=body)) for _ in range(12)]
    for _ in range(300):
        await asyncio.sleep(0.005)
        if len(running) == callbacks.MAX_VERIFY_THREADS:
            break
    log = await client.post(MOUNT + "/v1/log", json={"logs": ["still answering"]})
    assert log.status_code == 200
    assert not any(task.done() for task in burst)
    release.set()
    answers = await asyncio.gather(*burst)
    assert [a.status_code for a in answers] == [400] * 12
    assert peak[0] == callbacks.MAX_VERIFY_THREADS
    assert threading.get_ident() not in threads


def _verifications_held() -> int:
    """The callbacks verifying or waiting to verify on this event loop's limiter."""
    limiter = callbacks._VERIFY_LIMITERS.get(asyncio.get_running_loop())
    return 0 if limiter is None else limiter.borrowed_tokens + limiter.statistics().tasks_waiting


async def test_callbacks_beyond_the_waiters_cap_get_429(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = callbacks._verifies

    def held(*args: Any) -> bool:
        release.wait(timeout=3)
        return real(*args)

    monkeypatch.setattr(callbacks, "_verifies", held)
    monkeypatch.setattr(callbacks, "MAX_VERIFY_WAITERS", 4)
    junk = json.loads(target.google.callback(target.serial))
    junk["intermediateSigningKey"]["signatures"] = [junk["signature"]]
    body = json.dumps(junk).encode()
    client = target.wallet.client
    queued = [asyncio.create_task(client.post(CALLBACK, content=body)) for _ in range(4)]
    # Once the four hold the limiter (verifying or waiting), a fifth is refused: waited for,
    # not slept on (a fixed 0.2 s could end before they all got there on a loaded machine).
    for _ in range(1000):
        if _verifications_held() == 4:
            break
        await asyncio.sleep(0.01)
    assert _verifications_held() == 4
    refused = await client.post(CALLBACK, content=body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    release.set()
    assert [a.status_code for a in await asyncio.gather(*queued)] == [400] * 4


@pytest.mark.parametrize("path", [MOUNT + "/v1/log/", MOUNT + "/cards/x/y/"])
async def test_a_query_string_that_is_not_utf8_is_400(target: Target, path: str) -> None:
    """Found by the fuzz: Starlette's trailing-slash redirect decoded it strictly (a 500)."""
    request = {"method": "GET", "path": path, "query": b"\x80", "headers": [], "chunks": [b""]}
    assert await call_asgi(target.wallet.parent, request) == 400


# -- the ASGI fuzz --------------------------------------------------------------------------------


def route_shapes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, tuple[str, ...]]]:
    """Every (path template, methods) of the app, mounts included."""
    shapes = []
    for route in routes:
        if isinstance(route, Mount):
            shapes += route_shapes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            shapes.append((prefix + route.path, tuple(sorted(route.methods or ()))))
    return shapes


_PARAM = re.compile(r"\{([a-z_]+)(?::path)?\}")
_odd_text = st.text(max_size=80)
_huge = st.sampled_from([4_000, 70_000]).map(lambda n: "a" * n)
_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]
_HEADER_NAMES = [
    "authorization", "content-length", "content-type", "if-modified-since", "if-none-match",
    "host", "cookie", "accept-language", "x-forwarded-for", "x-forwarded-proto", "range",
    "transfer-encoding", "accept-encoding", "origin",
]  # fmt: skip


def _segment(target: Target, name: str) -> st.SearchStrategy[str]:
    real = {
        "device": [target.device, "x" * 128],
        "pass_type": [target.wallet.pass_type, "pass.other.type"],
        "serial": [target.serial, "NO-SUCH-CARD"],
        "secret": [target.secret, "A" * 22],
        "name": target.image_names,
        "template_id": ["coffee", "salon", "no-such-template"],
    }.get(name, [])
    choices: list[st.SearchStrategy[str]] = [_odd_text, _huge, st.sampled_from(["..", "%00", ""])]
    if real:
        choices.insert(0, st.sampled_from(real))
    return st.one_of(*choices)


@st.composite
def paths(
    draw: st.DrawFn, target: Target, shapes: list[tuple[str, tuple[str, ...]]], *, odd: bool
) -> tuple[str, tuple[str, ...]]:
    """A path and the methods its route answers (none for a random path)."""
    if odd and draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(_odd_text, _huge).map(lambda t: "/" + t)), ()
    shape, methods = draw(st.sampled_from(shapes))
    path = _PARAM.sub(lambda m: draw(_segment(target, m.group(1))).replace("/", "_"), shape)
    if draw(st.integers(0, 9)) == 0:
        path = path.replace(MOUNT, draw(st.sampled_from(["", "/other", MOUNT + MOUNT])), 1)
    if draw(st.integers(0, 5)) == 0:
        path += "/"  # Starlette then tries the path without the slash (redirect_slashes)
    return path, methods


def _header_values(target: Target) -> st.SearchStrategy[bytes]:
    text = st.one_of(
        st.sampled_from(
            [
                f"ApplePass {target.token}",
                "ApplePass " + "x" * 300,
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Fri, 31 Dec 9999 23:59:59 +1400",
                "-1",
                "99999999999999999999999999",
                "0",
                "application/json",
                "chunked",
                '"abc", W/"def"',
            ]
        ),
        st.integers(-(10**30), 10**30).map(str),
        _odd_text,
        _huge,
    ).map(lambda t: t.encode("utf-8"))
    # b"\xb9" is "¹" once Starlette decodes the header as latin-1: a digit to str.isdigit().
    return st.one_of(text, st.binary(max_size=64), st.sampled_from([b"\xb9", b"1\xb2"]))


def _bodies(target: Target) -> st.SearchStrategy[bytes]:
    deep = st.integers(1, 20_000).flatmap(
        lambda n: st.sampled_from(
            [b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b'{"logs": ' + b"[" * n]
        )
    )
    digits = st.sampled_from([1, 40, 41, 4_301, 6_000]).map(lambda n: b"7" * n)
    # Half of the bodies are the hostile JSON of the report and its relatives.
    hostile = st.one_of(
        deep,
        digits.map(lambda d: b'{"logs": [' + d + b"]}"),
        digits.map(lambda d: b'{"pushToken": ' + d + b"}"),
        st.sampled_from([b'{"logs": [Infinity]}', b'{"pushToken": NaN}', b'{"logs": [1e999]}']),
    )
    ordinary = st.one_of(
        st.just(b""),
        st.binary(max_size=300),
        st.lists(st.text(max_size=50), max_size=5).map(lambda m: json.dumps({"logs": m}).encode()),
        st.text(alphabet="0123456789abcdef", max_size=100).map(
            lambda t: json.dumps({"pushToken": t}).encode()
        ),
        st.sampled_from(target.callback_bodies),
        st.integers(0, 70_000).map(lambda n: b"x" * n),
    )
    return st.one_of(hostile, ordinary)


@st.composite
def requests(draw: st.DrawFn, target: Target, shape: str | None = None) -> dict[str, Any]:
    """A request to the route ``shape`` (with real and random segments), or to any path."""
    shapes = route_shapes(list(target.wallet.parent.routes))
    if shape is not None:
        shapes = [s for s in shapes if s[0] == shape]
    headers = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(_HEADER_NAMES),
                    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20),
                ).map(str.encode),
                _header_values(target),
            ),
            max_size=6,
        )
    )
    path, methods = draw(paths(target, shapes, odd=shape is None))
    # Mostly a method the route answers (so bodies reach the parsers), sometimes any.
    any_method = st.one_of(st.sampled_from(_METHODS), st.from_regex(r"[A-Z]{1,10}", fullmatch=True))
    method = draw(st.sampled_from(methods) if methods and draw(st.booleans()) else any_method)
    body = draw(_bodies(target))
    # Cut points drawn independently of the body's length (stable when examples are replayed).
    cuts = sorted(min(c, len(body)) for c in draw(st.lists(st.integers(0, 80_000), max_size=4)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return {
        "method": method,
        "path": path,
        "query": draw(
            st.one_of(
                st.just(b""),
                st.text(max_size=40).map(lambda t: b"passesUpdatedSince=" + t.encode()),
                st.binary(max_size=60),
                st.sampled_from([b"\x80", b"a=\xff", b"passesUpdatedSince=%80"]),
            )
        ),
        "headers": headers,
        "chunks": chunks,
    }


async def call_asgi(app: Any, request: dict[str, Any]) -> int:
    """One request straight through the ASGI interface; the response status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "https",
        "path": request["path"],
        "raw_path": request["path"].encode("utf-8"),
        "root_path": "",
        "query_string": request["query"],
        "headers": request["headers"],
        "client": ("203.0.113.7", 40000),
        "server": ("stamps.example.com", 443),
        "state": {},
    }
    pending = list(request["chunks"]) or [b""]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    assert statuses, "no response"
    return statuses[0]


def _bad_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


#: Every route of the app (test_every_route_is_fuzzed keeps this list complete).
SHAPES = [
    MOUNT + "/v1/devices/{device}/registrations/{pass_type}/{serial}",
    MOUNT + "/v1/devices/{device}/registrations/{pass_type}",
    MOUNT + "/v1/passes/{pass_type}/{serial}",
    MOUNT + "/v1/log",
    MOUNT + "/images/{name:path}",
    MOUNT + "/cards/{serial}/{secret}",
    MOUNT + "/cards/{serial}/{secret}/pass.pkpass",
    MOUNT + "/cards/{serial}/{secret}/google",
    CALLBACK,
    MOUNT + "/enrol/{template_id}",
    MOUNT + "/enrol/{template_id}/sent",
]


@pytest.mark.parametrize("shape", [*SHAPES, None], ids=[*SHAPES, "any-path"])
@settings(FUZZ, max_examples=60)
@given(data=st.data())
async def test_no_request_gets_a_5xx_or_a_traceback(
    target: Target, caplog: pytest.LogCaptureFixture, shape: str | None, data: st.DataObject
) -> None:
    request = data.draw(requests(target, shape))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        status = await call_asgi(target.wallet.parent, request)
    assert status < 500, (status, request["method"], request["path"][:200])
    assert not _bad_records(caplog)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=2_000),
        st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    ),
    changes=st.dictionaries(
        st.sampled_from(["expTimeMillis", "count", "nonce", "objectId", "classId", "eventType"]),
        st.one_of(
            st.none(),
            st.integers(-(10**30), 10**30),
            st.floats(allow_nan=False),
            st.text(max_size=30),
            st.text(max_size=30).map(lambda t: f"{ISSUER}.{t}"),  # our prefix: unescaped
        ),
        max_size=3,
    ),
)
async def test_no_google_callback_gets_a_5xx(
    target: Target, caplog: pytest.LogCaptureFixture, body: bytes, changes: dict[str, Any]
) -> None:
    caplog.clear()
    signed = target.google.callback(target.serial, **changes)
    with caplog.at_level(logging.WARNING):
        for content in (body, signed):
            response = await target.wallet.client.post(CALLBACK, content=content)
            assert response.status_code in (200, 400, 413), response.text[:200]
    assert not _bad_records(caplog)


def test_every_route_is_fuzzed(target: Target) -> None:
    """The fuzzed shapes are the app's routes: a new route must be added to SHAPES."""
    shapes = {shape for shape, _ in route_shapes(list(target.wallet.parent.routes))}
    assert shapes == set(SHAPES)


async def test_a_refused_callback_logs_one_bounded_line(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"protocolVersion": "x" * 12_000}).encode()
    with caplog.at_level(logging.WARNING):
        response = await target.wallet.client.post(CALLBACK, content=body)
    assert response.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "passkit_stamps.web.google"]
    assert len(lines) == 1 and len(lines[0]) < 300
