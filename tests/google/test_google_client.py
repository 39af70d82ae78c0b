"""The REST client against respx: every status path, retries, rate limiting, tokens, pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from walletfixtures import *  # noqa: F403  (the pytest fixtures)
from walletfixtures import service_account_info

from passkit_stamps.errors import (
    GoogleAlreadyExistsError,
    GoogleAuthError,
    GoogleClassNotFoundError,
    GoogleConfigError,
    GoogleNotFoundError,
    GoogleNotificationQuotaError,
    GooglePermissionError,
    GoogleRateLimitedError,
    GoogleTransientError,
    GoogleValidationError,
    GoogleWalletError,
)
from passkit_stamps.google.auth import SCOPE, TokenSource
from passkit_stamps.google.client import RetryPolicy, WalletClient
from passkit_stamps.google.ratelimit import TokenBucket

BASE = "https://wallet.test/walletobjects/v1/"
TOKEN_URI = "https://oauth2.test/token"
OBJ = {"id": "1.card", "classId": "1.coffee", "state": "ACTIVE"}
CLS = {
    "id": "1.coffee",
    "issuerName": "Bean",
    "programName": "Free",
    "reviewStatus": "UNDER_REVIEW",
}


def err(
    status: int, reason: str | None = None, message: str = "nope", **headers: str
) -> httpx.Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}]
            if reason
            else [],
        }
    }
    return httpx.Response(status, json=body, headers=headers)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.post(TOKEN_URI).mock(
            side_effect=lambda request: httpx.Response(
                200,
                json={
                    "access_token": f"tok-{router.routes['token'].call_count}",
                    "expires_in": 3600,
                    "token_type": "Bearer",
                },
            ),
            name="token",
        ) if False else None
        yield router


@pytest.fixture
def token_route(mock: respx.MockRouter) -> respx.Route:
    counter = {"n": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        counter["n"] += 1
        return httpx.Response(
            200,
            json={
                "access_token": f"tok-{counter['n']}",
                "expires_in": 3600,
                "token_type": "Bearer",
            },
        )

    return mock.post(TOKEN_URI).mock(side_effect=answer)


@pytest.fixture
def tokens(rsa_key: rsa.RSAPrivateKey, token_route: respx.Route, fake: FakeTime) -> TokenSource:
    return TokenSource(service_account_info(rsa_key, token_uri=TOKEN_URI), clock=lambda: fake.now)


@pytest.fixture
async def client(tokens: TokenSource, fake: FakeTime) -> AsyncIterator[WalletClient]:
    async with WalletClient(
        tokens,
        base_url=BASE,
        sleep=fake.sleep,
        clock=fake.clock,
        jitter=lambda: 1.0,
        rate=1000.0,
    ) as c:
        yield c
    await tokens.aclose()


def body(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


# -- basic calls ------------------------------------------------------------------------------


async def test_class_insert_get_patch(
    mock: respx.MockRouter, client: WalletClient, token_route: respx.Route
) -> None:
    insert = mock.post(BASE + "loyaltyClass").respond(200, json=CLS)
    get = mock.get(BASE + "loyaltyClass/1.coffee").respond(200, json=CLS)
    patch = mock.patch(BASE + "loyaltyClass/1.coffee").respond(200, json=CLS)
    assert await client.insert_class(CLS) == CLS
    assert await client.get_class("1.coffee") == CLS
    await client.patch_class("1.coffee", {"programName": "New", "reviewStatus": "APPROVED"})
    assert body(insert) == CLS
    assert body(patch) == {"programName": "New", "reviewStatus": "UNDER_REVIEW"}
    request = get.calls[0].request
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert token_route.call_count == 1  # one token for every call
    form = token_route.calls[0].request.content.decode()
    assert "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in form


async def test_ensure_class_inserts_or_patches(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    insert = mock.post(BASE + "loyaltyClass").mock(
        side_effect=[
            httpx.Response(200, json=CLS),
            err(409, "duplicate"),
        ]
    )
    patch = mock.patch(BASE + "loyaltyClass/1.coffee").respond(200, json=CLS)
    await client.ensure_class(CLS)
    assert patch.call_count == 0
    await client.ensure_class(CLS)
    assert insert.call_count == 2 and patch.call_count == 1
    sent = body(patch)
    assert sent["reviewStatus"] == "UNDER_REVIEW"
    assert sent["callbackOptions"] is None  # absent from the class: cleared at Google


async def test_object_calls_and_state(mock: respx.MockRouter, client: WalletClient) -> None:
    mock.get(BASE + "loyaltyObject/1.card").respond(200, json=OBJ)
    patch = mock.patch(BASE + "loyaltyObject/1.card").respond(200, json=OBJ)
    assert await client.get_object("1.card") == OBJ
    await client.void_object("1.card")
    assert body(patch) == {"state": "INACTIVE"}
    await client.expire_object("1.card")
    assert body(patch) == {"state": "EXPIRED"}
    await client.patch_object("1.card", {"loyaltyPoints": {}}, notify=True)
    assert body(patch)["notifyPreference"] == "NOTIFY_ON_UPDATE"
    with pytest.raises(GoogleConfigError, match="invalid object state"):
        await client.set_object_state("1.card", "DELETED")


async def test_ids_are_quoted_in_paths(mock: respx.MockRouter, client: WalletClient) -> None:
    route = mock.get(BASE + "loyaltyObject/1.a%2Fb").respond(200, json={})
    await client.get_object("1.a/b")
    assert route.called


# -- upsert -----------------------------------------------------------------------------------


async def test_upsert_patches_an_existing_object(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    patch = mock.patch(BASE + "loyaltyObject/1.card").respond(200, json=OBJ)
    result = await client.upsert_object(OBJ)
    assert not result.inserted and result.resource == OBJ
    assert body(patch)["accountName"] is None  # fields the card lost are cleared


async def test_upsert_inserts_a_missing_object(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    mock.patch(BASE + "loyaltyObject/1.card").mock(return_value=err(404, "resourceNotFound"))
    insert = mock.post(BASE + "loyaltyObject").respond(200, json=OBJ)
    result = await client.upsert_object(OBJ)
    assert result.inserted and not result.class_ensured
    assert body(insert) == OBJ


async def test_upsert_creates_the_missing_class(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    mock.patch(BASE + "loyaltyObject/1.card").mock(return_value=err(404, "resourceNotFound"))
    insert = mock.post(BASE + "loyaltyObject").mock(
        side_effect=[
            err(404, "resourceNotFound", "class not found"),
            httpx.Response(200, json=OBJ),
        ]
    )
    insert_class = mock.post(BASE + "loyaltyClass").respond(200, json=CLS)
    result = await client.upsert_object(OBJ, loyalty_class=CLS)
    assert result.inserted and result.class_ensured
    assert insert.call_count == 2 and insert_class.call_count == 1


async def test_upsert_without_class_reports_class_missing(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    mock.patch(BASE + "loyaltyObject/1.card").mock(return_value=err(404, "resourceNotFound"))
    mock.post(BASE + "loyaltyObject").mock(return_value=err(404, "resourceNotFound", "no class"))
    with pytest.raises(GoogleClassNotFoundError, match=r"class 1\.coffee not found") as info:
        await client.upsert_object(OBJ)
    assert info.value.status == 404 and info.value.google_message == "no class"


async def test_upsert_patches_when_insert_races(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    patch = mock.patch(BASE + "loyaltyObject/1.card").mock(
        side_effect=[
            err(404, "resourceNotFound"),
            httpx.Response(200, json=OBJ),
        ]
    )
    mock.post(BASE + "loyaltyObject").mock(return_value=err(409, "duplicate"))
    result = await client.upsert_object(OBJ)
    assert not result.inserted and patch.call_count == 2


# -- list -------------------------------------------------------------------------------------


async def test_list_follows_pages_even_without_resources(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    route = mock.get(BASE + "loyaltyObject").mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "resources": [{"id": "1.a"}, {"id": "1.b"}],
                    "pagination": {"nextPageToken": "p2"},
                },
            ),
            httpx.Response(200, json={"pagination": {"nextPageToken": "p3"}}),
            httpx.Response(200, json={"resources": [{"id": "1.c"}], "pagination": {}}),
        ]
    )
    ids = [o["id"] async for o in client.list_objects("1.coffee", page_size=2)]
    assert ids == ["1.a", "1.b", "1.c"]
    params = [dict(call.request.url.params) for call in route.calls]
    assert params == [
        {"classId": "1.coffee", "maxResults": "2"},
        {"classId": "1.coffee", "maxResults": "2", "token": "p2"},
        {"classId": "1.coffee", "maxResults": "2", "token": "p3"},
    ]


async def test_list_stops_on_a_repeated_token(mock: respx.MockRouter, client: WalletClient) -> None:
    route = mock.get(BASE + "loyaltyObject").respond(
        200, json={"resources": [{"id": "1.a"}], "pagination": {"nextPageToken": "same"}}
    )
    ids = [o["id"] async for o in client.list_objects("1.coffee")]
    assert ids == ["1.a", "1.a"] and route.call_count == 2
    with pytest.raises(GoogleConfigError, match="page size"):
        [o async for o in client.list_objects("1.coffee", page_size=0)]


# -- messages ---------------------------------------------------------------------------------


async def test_message_notifies(mock: respx.MockRouter, client: WalletClient) -> None:
    route = mock.post(BASE + "loyaltyObject/1.card/addMessage").respond(200, json={"resource": OBJ})
    result = await client.add_message("1.card", "Goal!", "Free coffee ready", message_id="m1")
    assert result.notified and not result.downgraded and result.resource == OBJ
    assert body(route) == {
        "message": {
            "id": "m1",
            "header": "Goal!",
            "body": "Free coffee ready",
            "messageType": "TEXT_AND_NOTIFY",
        }
    }


async def test_message_over_quota_goes_out_silently(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    route = mock.post(BASE + "loyaltyObject/1.card/addMessage").mock(
        side_effect=[
            err(403, "quotaExceeded", "too many notifications"),
            httpx.Response(200, json={"resource": OBJ}),
        ]
    )
    result = await client.add_message("1.card", "Hi", "News")
    assert not result.notified and result.downgraded
    assert [body(route, i)["message"]["messageType"] for i in (0, 1)] == ["TEXT_AND_NOTIFY", "TEXT"]
    assert body(route, 0)["message"]["id"] == body(route, 1)["message"]["id"]


async def test_silent_message_over_quota_is_an_error(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    mock.post(BASE + "loyaltyObject/1.card/addMessage").mock(return_value=err(403, "quotaExceeded"))
    with pytest.raises(GoogleNotificationQuotaError):
        await client.add_message("1.card", "Hi", "News", notify=False)
    with pytest.raises(GoogleConfigError, match="header and a body"):
        await client.add_message("1.card", " ", "News")


async def test_message_permission_error_is_not_downgraded(
    mock: respx.MockRouter, client: WalletClient
) -> None:
    route = mock.post(BASE + "loyaltyObject/1.card/addMessage").mock(
        return_value=err(403, "forbidden", "issuer mismatch")
    )
    with pytest.raises(GooglePermissionError) as info:
        await client.add_message("1.card", "Hi", "News")
    assert not isinstance(info.value, GoogleNotificationQuotaError)
    assert route.call_count == 1


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (400, "invalidArgument", GoogleValidationError),
        (403, "forbidden", GooglePermissionError),
        (404, "resourceNotFound", GoogleNotFoundError),
        (409, "duplicate", GoogleAlreadyExistsError),
        (418, None, GoogleWalletError),
    ],
)
async def test_client_errors_are_typed_and_not_retried(
    mock: respx.MockRouter,
    client: WalletClient,
    fake: FakeTime,
    status: int,
    reason: str | None,
    error: type[GoogleWalletError],
) -> None:
    route = mock.patch(BASE + "loyaltyObject/1.card").mock(
        return_value=err(status, reason, "bad field x")
    )
    with pytest.raises(error) as info:
        await client.patch_object("1.card", OBJ)
    assert type(info.value) is error
    assert route.call_count == 1 and fake.sleeps == []
    assert info.value.status == status and info.value.reason == reason
    assert info.value.google_message == "bad field x"
    assert "bad field x" in str(info.value) and f"HTTP {status}" in str(info.value)


async def test_5xx_is_retried_with_growing_backoff(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    route = mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[
            err(503, "backendError"),
            err(500),
            err(502),
            httpx.Response(200, json=OBJ),
        ]
    )
    assert await client.get_object("1.card") == OBJ
    assert route.call_count == 4
    assert fake.sleeps == [0.5, 1.0, 2.0]  # jitter pinned to its maximum


async def test_5xx_gives_up_after_max_attempts(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    route = mock.get(BASE + "loyaltyObject/1.card").mock(return_value=err(503, "backendError"))
    with pytest.raises(GoogleTransientError, match="503"):
        await client.get_object("1.card")
    assert route.call_count == 5 and len(fake.sleeps) == 4


async def test_jitter_spreads_the_delays(
    mock: respx.MockRouter, tokens: TokenSource, fake: FakeTime
) -> None:
    values = iter([0.25, 0.5])
    mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[err(500), err(500), httpx.Response(200, json=OBJ)]
    )
    client = WalletClient(
        tokens, base_url=BASE, sleep=fake.sleep, clock=fake.clock, jitter=lambda: next(values)
    )
    await client.get_object("1.card")
    assert fake.sleeps == [0.125, 0.5]
    await client.aclose()


async def test_connection_errors_are_retried(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    route = mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json=OBJ),
        ]
    )
    assert await client.get_object("1.card") == OBJ
    assert route.call_count == 3 and len(fake.sleeps) == 2
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GoogleTransientError, match="connection failed"):
        await client.get_object("1.card")


async def test_429_honours_retry_after(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[
            err(429, "rateLimitExceeded", **{"Retry-After": "7"}),
            httpx.Response(200, json=OBJ),
        ]
    )
    await client.get_object("1.card")
    assert fake.sleeps == [7.0]


@pytest.mark.parametrize("header", [b"\xb9", b"\xd9\xa3", b"1e3", b"-5", b" "])
async def test_429_with_a_malformed_retry_after_backs_off_by_itself(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime, header: bytes
) -> None:
    # b"\xb9" reads as "\u00b9" (superscript one), which passed str.isdigit() and then crashed
    # float(): a ValueError from inside the client instead of a retry.
    refused = err(429, "rateLimitExceeded")
    refused.headers = httpx.Headers([*refused.headers.raw, (b"Retry-After", header)])
    mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[refused, httpx.Response(200, json=OBJ)]
    )
    await client.get_object("1.card")
    assert len(fake.sleeps) == 1 and 0 < fake.sleeps[0] < 60


async def test_429_retry_after_as_http_date(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[
            err(429, **{"Retry-After": when}),
            httpx.Response(200, json=OBJ),
        ]
    )
    await client.get_object("1.card")
    assert 15 < fake.sleeps[0] <= 20


async def test_429_gives_up_when_retry_after_exceeds_the_budget(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    route = mock.get(BASE + "loyaltyObject/1.card").mock(
        return_value=err(429, "rateLimitExceeded", **{"Retry-After": "3600"})
    )
    with pytest.raises(GoogleRateLimitedError, match="429"):
        await client.get_object("1.card")
    assert route.call_count == 1 and fake.sleeps == []


async def test_total_wait_is_bounded(
    mock: respx.MockRouter, tokens: TokenSource, fake: FakeTime
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").mock(return_value=err(500))
    client = WalletClient(
        tokens,
        base_url=BASE,
        sleep=fake.sleep,
        clock=fake.clock,
        jitter=lambda: 1.0,
        retry=RetryPolicy(max_attempts=50, base_delay=1, max_delay=8, max_total=20),
    )
    with pytest.raises(GoogleTransientError):
        await client.get_object("1.card")
    assert sum(fake.sleeps) <= 20 and fake.sleeps == [1, 2, 4, 8]
    await client.aclose()


async def test_403_rate_limit_reason_is_retried(
    mock: respx.MockRouter, client: WalletClient, fake: FakeTime
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[err(403, "userRateLimitExceeded"), httpx.Response(200, json=OBJ)]
    )
    assert await client.get_object("1.card") == OBJ
    assert len(fake.sleeps) == 1


async def test_error_body_that_is_not_json(mock: respx.MockRouter, client: WalletClient) -> None:
    mock.get(BASE + "loyaltyObject/1.card").respond(400, text="<html>Bad Request</html>")
    with pytest.raises(GoogleValidationError, match="Bad Request") as info:
        await client.get_object("1.card")
    assert info.value.reason is None


# -- tokens -----------------------------------------------------------------------------------


async def test_401_refreshes_the_token_once(
    mock: respx.MockRouter, client: WalletClient, token_route: respx.Route, fake: FakeTime
) -> None:
    route = mock.get(BASE + "loyaltyObject/1.card").mock(
        side_effect=[err(401, "authError"), httpx.Response(200, json=OBJ)]
    )
    assert await client.get_object("1.card") == OBJ
    assert token_route.call_count == 2 and fake.sleeps == []
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_second_401_is_an_auth_error(
    mock: respx.MockRouter, client: WalletClient, token_route: respx.Route
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").mock(return_value=err(401, "authError", "bad token"))
    with pytest.raises(GoogleAuthError, match="bad token"):
        await client.get_object("1.card")
    assert token_route.call_count == 2


async def test_concurrent_calls_share_one_token_refresh(
    mock: respx.MockRouter, client: WalletClient, token_route: respx.Route
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").respond(200, json=OBJ)
    results = await asyncio.gather(*(client.get_object("1.card") for _ in range(20)))
    assert len(results) == 20 and token_route.call_count == 1


async def test_token_refreshed_before_expiry(
    tokens: TokenSource, token_route: respx.Route, fake: FakeTime
) -> None:
    assert await tokens.token() == "tok-1"
    fake.now += 3600 - 301  # still more than the 300 s margin left
    assert await tokens.token() == "tok-1"
    fake.now += 2
    assert await tokens.token() == "tok-2"
    tokens.invalidate("tok-1")  # a stale 401 must not drop the newer token
    assert await tokens.token() == "tok-2"
    claims = token_route.calls[0].request.content.decode()
    assert "assertion=" in claims
    assert token_route.call_count == 2
    assert SCOPE  # the one scope the wallet API takes


async def test_token_endpoint_refusal(mock: respx.MockRouter, rsa_key: rsa.RSAPrivateKey) -> None:
    mock.post(TOKEN_URI).respond(
        400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    )
    tokens = TokenSource(service_account_info(rsa_key, token_uri=TOKEN_URI))
    with pytest.raises(GoogleAuthError, match="refused service account"):
        await tokens.token()
    await tokens.aclose()


async def test_token_scope_in_assertion(tokens: TokenSource, token_route: respx.Route) -> None:
    import base64
    from urllib.parse import parse_qs

    await tokens.token()
    form = parse_qs(token_route.calls[0].request.content.decode())
    payload = form["assertion"][0].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["scope"] == SCOPE
    assert claims["iss"] == "wallet@stamps-test.iam.gserviceaccount.com"


# -- rate limiting ----------------------------------------------------------------------------


async def test_rate_limiter_is_shared_by_every_call(
    mock: respx.MockRouter, tokens: TokenSource, fake: FakeTime
) -> None:
    mock.get(BASE + "loyaltyObject/1.card").respond(200, json=OBJ)
    mock.post(BASE + "loyaltyObject").respond(200, json=OBJ)
    sleeps: list[float] = []

    async def record(seconds: float) -> None:  # the clock stands still: every wait is visible
        sleeps.append(seconds)

    client = WalletClient(tokens, base_url=BASE, rate=4, burst=2, sleep=record, clock=fake.clock)
    await asyncio.gather(
        client.get_object("1.card"),
        client.insert_object(OBJ),
        client.get_object("1.card"),
        client.insert_object(OBJ),
    )
    # two at once (the burst), then one every 1/4 s
    assert sorted(sleeps) == [0.25, 0.5]
    await client.aclose()


async def test_token_bucket(fake: FakeTime) -> None:
    bucket = TokenBucket(10, burst=3, clock=fake.clock, sleep=fake.sleep)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == [0, 0, 0, pytest.approx(0.1), pytest.approx(0.2)]
    fake.now += 10  # refills, but never beyond the burst
    assert [bucket.reserve() for _ in range(4)] == [0, 0, 0, pytest.approx(0.1)]
    await bucket.acquire()
    assert fake.sleeps == [pytest.approx(0.2)]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="rate"):
            TokenBucket(bad)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(5, burst=0.5)


def test_client_uses_http2_and_validates_base_url(tokens: TokenSource) -> None:
    client = WalletClient(tokens)
    assert client.base_url == "https://walletobjects.googleapis.com/walletobjects/v1/"
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    assert pool._http2 is True
    assert client.limiter.rate == 20.0
    with pytest.raises(GoogleConfigError, match="base URL"):
        WalletClient(tokens, base_url="wallet.test")
