"""Failed API-key checks are limited per client address (issue 13): after ``key_failures``
refused keys in a window, the address gets 429 problem+json with Retry-After before its key is
even looked at; other addresses are unaffected; an unknown key id and a wrong secret count (and
answer) alike. Both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from passkit_stamps.api import ApiConfig, create_api
from passkit_stamps.service import StampService

from .conftest import MOUNT
from .test_api import assert_problem


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def clients(
    service: StampService, config: ApiConfig, clock: Clock, *addresses: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per address, all talking to the same API app."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount(MOUNT, app=create_api(service, config, clock=clock))])
    made = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(address, 40000)),
            base_url="http://testserver",
        )
        for address in addresses
    ]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_address_that_keeps_failing_gets_429_and_others_do_not(
    service: StampService,
) -> None:
    key = await service.create_api_key("till", "staff")
    serial = (await service.issue_card("coffee")).card.serial
    key_id, secret = key.secret[4:20], key.secret[21:]
    other_id = "0" * 16 if key_id != "0" * 16 else "1" * 16
    config = ApiConfig(key_failures=3, key_failure_window=60)
    clock = Clock()
    async with clients(service, config, clock, "203.0.113.7", "198.51.100.2") as (bad, good):
        url = f"{MOUNT}/cards/{serial}"
        wrong = [
            f"pks_{key_id}_{'A' * 43}",  # right id, wrong secret
            f"pks_{other_id}_{secret}",  # unknown id
            "nonsense",  # malformed
        ]
        for token in wrong:
            assert_problem(await bad.get(url, headers=bearer(token)), 401, "api-key")
        # The budget is spent: refused before the key is looked at, whatever it is ...
        for headers in (bearer(wrong[0]), bearer(key.secret), {}):
            r = await bad.get(url, headers=headers)
            body = assert_problem(r, 429, "api-rate-limit")
            assert "address" in body["detail"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
        # ... while the right key from another address works, and that address may still fail.
        assert (await good.get(url, headers=bearer(key.secret))).status_code == 200
        assert_problem(await good.get(url, headers=bearer(wrong[1])), 401, "api-key")
        # The budget refills over the window: one more try after a third of it.
        clock.now += 20.5
        assert (await bad.get(url, headers=bearer(key.secret))).status_code == 200
        assert_problem(await bad.get(url, headers=bearer(wrong[1])), 401, "api-key")
        assert_problem(await bad.get(url, headers=bearer(key.secret)), 429, "api-rate-limit")


async def test_unknown_id_wrong_secret_and_revoked_key_count_alike(service: StampService) -> None:
    key = await service.create_api_key("till", "staff")
    revoked = await service.create_api_key("old till", "staff")
    await service.revoke_api_key(revoked.key.id)
    serial = (await service.issue_card("coffee")).card.serial
    key_id, secret = key.secret[4:20], key.secret[21:]
    other_id = "0" * 16 if key_id != "0" * 16 else "1" * 16
    tokens = {
        "wrong secret": f"pks_{key_id}_{'A' * 43}",
        "unknown id": f"pks_{other_id}_{secret}",
        "revoked": revoked.secret,
    }
    for name, token in tokens.items():
        clock = Clock()
        config = ApiConfig(key_failures=2, key_failure_window=10)
        async with clients(service, config, clock, "192.0.2.9") as (client,):
            url = f"{MOUNT}/cards/{serial}/stamps"
            answers = [await client.post(url, headers=bearer(token)) for _ in range(3)]
            assert [a.status_code for a in answers] == [401, 401, 429], name
            assert answers[0].json() == answers[1].json()
            assert answers[0].headers == answers[1].headers
            if name == "wrong secret":
                first = answers[0].json()
            assert answers[0].json() == first  # the same answer for every way of being wrong
    # nothing was stamped
    assert (await service.get_card(serial)).card.stamps == 0


async def test_ipv6_clients_share_a_budget_per_64_prefix(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    config = ApiConfig(key_failures=2, key_failure_window=60)
    clock = Clock()
    one, two, other = "2001:db8:1:2::10", "2001:db8:1:2:ffff::99", "2001:db8:1:3::10"
    async with clients(service, config, clock, one, two, other) as (a, b, c):
        url = f"{MOUNT}/cards/{serial}"
        assert_problem(await a.get(url, headers=bearer("x")), 401, "api-key")
        assert_problem(await b.get(url, headers=bearer("y")), 401, "api-key")
        assert_problem(await a.get(url, headers=bearer("z")), 429, "api-rate-limit")
        assert_problem(await c.get(url, headers=bearer("z")), 401, "api-key")


async def test_a_key_created_after_the_app_started_works_at_once(service: StampService) -> None:
    serial = (await service.issue_card("coffee")).card.serial
    async with clients(service, ApiConfig(), Clock(), "192.0.2.1") as (client,):
        url = f"{MOUNT}/cards/{serial}"
        assert_problem(await client.get(url, headers=bearer("x")), 401, "api-key")
        key = await service.create_api_key("new till", "staff")
        assert (await client.get(url, headers=bearer(key.secret))).status_code == 200
        await service.revoke_api_key(key.key.id)
        assert_problem(await client.get(url, headers=bearer(key.secret)), 401, "api-key")


async def test_a_key_created_by_another_process_is_found(service: StampService) -> None:
    """Another service on the same store (as ``api-keys create`` in another process): the
    API finds the new key at once and refuses a key revoked elsewhere within the table's age."""
    serial = (await service.issue_card("coffee")).card.serial
    elsewhere = StampService(service.store)
    async with clients(service, ApiConfig(), Clock(), "192.0.2.1") as (client,):
        url = f"{MOUNT}/cards/{serial}"
        old = await service.create_api_key("till", "staff")
        assert (await client.get(url, headers=bearer(old.secret))).status_code == 200
        new = await elsewhere.create_api_key("new till", "staff")
        service._api_keys.loaded_at -= 1.0  # the table was read a second ago
        assert (await client.get(url, headers=bearer(new.secret))).status_code == 200
        await elsewhere.revoke_api_key(old.key.id)
        service._api_keys.loaded_at -= 10.0  # older than the table's age
        assert_problem(await client.get(url, headers=bearer(old.secret)), 401, "api-key")
