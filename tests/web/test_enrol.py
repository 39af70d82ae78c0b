"""The public enrolment page: form, CSRF token, honeypot, one card per address, rate limits,
the URL and QR poster."""

from __future__ import annotations

import re
import time

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit_stamps.model import CardTemplate, Enrolment
from passkit_stamps.web.enrol import (
    COOKIE,
    EnrolmentLimits,
    EnrolmentPages,
    RateLimiter,
    enrolment_poster,
    enrolment_url,
    form_token,
    form_token_valid,
)

from .conftest import MOUNT, PUBLIC_URL, SECRET_KEY, Wallet, web_config

FORM = MOUNT + "/enrol/coffee"


async def _form(client: httpx.AsyncClient, path: str = FORM) -> dict[str, str]:
    page = await client.get(path)
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    return {"token": token.group(1), "language": "en"}


def _pages(wallet: Wallet) -> EnrolmentPages:
    route = next(r for r in wallet.app.routes if getattr(r, "path", "").startswith("/enrol"))
    pages = route.endpoint.__self__  # type: ignore[attr-defined]
    assert isinstance(pages, EnrolmentPages)
    return pages


async def _post(
    client: httpx.AsyncClient, fields: dict[str, str], path: str = FORM
) -> httpx.Response:
    return await client.post(path, data=fields)


async def test_the_form_page(wallet: Wallet) -> None:
    page = await wallet.client.get(FORM)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "private, no-store"
    cookie = page.headers["set-cookie"]
    assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" in cookie and f"Path={MOUNT}/enrol" in cookie
    html = page.text
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert "<h1>Free Coffee</h1>" in html
    assert f'action="{FORM}"' in html
    assert 'name="email"' in html and 'name="name"' in html
    assert 'name="phone"' not in html and 'name="birthday"' not in html
    assert 'name="website"' in html  # the honeypot, hidden from people
    for url in re.findall(r'(?:src|href|action)="([^"]+)"', html):
        assert url.startswith(MOUNT + "/"), url


async def test_unknown_template_is_404(wallet: Wallet) -> None:
    for path in ("/enrol/nope", "/enrol/NOPE", "/enrol/nope/sent", "/enrol/%00"):
        assert (await wallet.client.get(MOUNT + path)).status_code == 404
    assert (await wallet.client.post(MOUNT + "/enrol/nope", data={})).status_code == 404


async def test_enrolment_lands_on_the_new_card_and_emails_the_link(wallet: Wallet) -> None:
    fields = await _form(wallet.client)
    response = await _post(
        wallet.client, fields | {"name": "  Ada   Lovelace ", "email": "Ada@Example.com"}
    )
    assert response.status_code == 303
    location = response.headers["location"]
    serial = location.split("/")[-2]
    assert location == MOUNT + wallet.config.card_page_path(serial)
    card = (await wallet.service.get_card(serial)).card
    assert card.holder.name == "Ada Lovelace" and card.holder.email == "ada@example.com"
    page = await wallet.client.get(location)
    assert "Add to Apple Wallet" in page.text and "Ada Lovelace" in page.text
    [job] = await wallet.service.pending_email()
    assert (job.serial, job.reason) == (serial, "card_issued")
    history = await wallet.service.card_history(serial)
    assert history[0].actor == "enrolment page"


async def test_an_address_with_a_card_gets_its_link_by_email_not_a_second_card(
    wallet: Wallet,
) -> None:
    fields = await _form(wallet.client)
    first = await _post(wallet.client, fields | {"name": "Ada", "email": "ada@example.com"})
    serial = first.headers["location"].split("/")[-2]
    again = await _post(wallet.client, fields | {"name": "Eve", "email": "ADA@example.com"})
    assert again.status_code == 303
    assert again.headers["location"] == FORM + "/sent?lang=en"
    assert (await wallet.service.list_cards(template_id="coffee")).total == 1
    jobs = await wallet.service.pending_email()
    assert [(j.serial, j.reason) for j in jobs] == [
        (serial, "card_issued"),
        (serial, "existing_card"),
    ]
    sent = await wallet.client.get(again.headers["location"])
    assert sent.status_code == 200 and "Check your e-mail" in sent.text
    assert serial not in sent.text  # the page never tells which card


async def test_the_honeypot_is_answered_like_an_existing_address_and_does_nothing(
    wallet: Wallet,
) -> None:
    fields = await _form(wallet.client)
    response = await _post(
        wallet.client,
        fields | {"name": "Bot", "email": "bot@example.com", "website": "http://spam"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == FORM + "/sent?lang=en"
    assert (await wallet.service.list_cards()).total == 0
    assert await wallet.service.pending_email() == []


async def test_forged_or_expired_forms_are_refused(wallet: Wallet) -> None:
    # Every POST takes a token from the rate limits, forged ones too: room for this test's.
    _pages(wallet).limits = EnrolmentLimits(RateLimiter(100, 1.0), RateLimiter(100, 1.0))
    fields = await _form(wallet.client)
    nonce = wallet.client.cookies[COOKIE]
    person = {"name": "Ada", "email": "ada@example.com"}
    # Another template's token, an old one, a tampered one, none.
    other = form_token(SECRET_KEY, "salon", nonce)
    old = form_token(SECRET_KEY, "coffee", nonce, now=time.time() - 7200)
    tampered = fields["token"][:-2] + ("AA" if not fields["token"].endswith("AA") else "BB")
    for token in (other, old, tampered, "", "1.x", "99999999999999999.abc"):
        response = await _post(wallet.client, fields | person | {"token": token})
        assert response.status_code == 403, token
        assert "expired" in response.text
    # Without the cookie (a cross-site POST carries no SameSite=Strict cookie).
    bare = httpx.AsyncClient(transport=wallet.client._transport, base_url=PUBLIC_URL)
    async with bare:
        response = await bare.post(FORM, data=fields | person)
    assert response.status_code == 403
    assert (await wallet.service.list_cards()).total == 0


def test_form_tokens() -> None:
    token = form_token(SECRET_KEY, "coffee", "n" * 20, now=1000)
    assert form_token_valid(SECRET_KEY, "coffee", "n" * 20, token, now=1000 + 3599)
    assert not form_token_valid(SECRET_KEY, "coffee", "n" * 20, token, now=1000 + 3601)
    assert not form_token_valid(SECRET_KEY, "coffee", "m" * 20, token, now=1000)
    assert not form_token_valid(
        b"another-secret-key-0123456789", "coffee", "n" * 20, token, now=1000
    )


async def test_bad_fields_show_the_form_again_naming_them(wallet: Wallet) -> None:
    fields = await _form(wallet.client)
    response = await _post(
        wallet.client, fields | {"name": "<script>alert(1)</script>", "email": "not-an-address"}
    )
    assert response.status_code == 400
    assert "Please enter a valid e-mail address." in response.text
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text  # kept, escaped
    response = await _post(wallet.client, fields | {"name": "", "email": "a@example.com"})
    assert response.status_code == 400 and "Please enter your name" in response.text
    assert (await wallet.service.list_cards()).total == 0


async def test_phone_birthday_and_consent_when_the_template_asks(
    wallet: Wallet, coffee: CardTemplate
) -> None:
    asking = coffee.model_copy(
        update={
            "enrolment": Enrolment(
                ask_phone=True,
                ask_birthday=True,
                consent={"en": "I agree to receive news from Bean There.", "de": "Ich stimme zu."},
            )
        }
    )
    await wallet.service.publish_template(asking)
    html = (await wallet.client.get(FORM)).text
    assert 'name="phone"' in html and 'name="birthday"' in html
    assert "I agree to receive news from Bean There." in html
    fields = await _form(wallet.client)
    person = {"name": "Ada", "email": "ada@example.com"}
    response = await _post(wallet.client, fields | person)
    assert response.status_code == 400
    for text in ("phone number", "birthday", "Please agree"):
        assert text in response.text
    response = await _post(
        wallet.client,
        fields | person | {"phone": "+44 20 7946 0000", "birthday": "1990-12-10", "consent": "yes"},
    )
    assert response.status_code == 303
    serial = response.headers["location"].split("/")[-2]
    holder = (await wallet.service.get_card(serial)).card.holder
    assert holder.phone == "+44 20 7946 0000" and str(holder.birthday) == "1990-12-10"


async def test_german_browser_gets_the_german_form_and_card(wallet: Wallet) -> None:
    path = MOUNT + "/enrol/salon"
    page = await wallet.client.get(path, headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert '<html lang="de">' in page.text and "Karte holen" in page.text
    fields = await _form(wallet.client, path)
    fields["language"] = "de"
    response = await _post(
        wallet.client, fields | {"name": "Grete", "email": "g@example.com"}, path
    )
    serial = response.headers["location"].split("/")[-2]
    assert (await wallet.service.get_card(serial)).card.language == "de"


async def test_rate_limited_per_client_address(wallet: Wallet) -> None:
    fields = await _form(wallet.client)
    codes = []
    for i in range(7):
        response = await _post(wallet.client, fields | {"name": "A", "email": f"a{i}@example.com"})
        codes.append(response.status_code)
    assert codes[:5] == [303] * 5
    assert codes[5:] == [429, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert (await wallet.service.list_cards()).total == 5


async def test_rate_limited_per_template(wallet: Wallet) -> None:
    _pages(wallet).limits = EnrolmentLimits(RateLimiter(100, 1.0), RateLimiter(2, 0.001))
    fields = await _form(wallet.client)
    codes = [
        (
            await _post(wallet.client, fields | {"name": "A", "email": f"a{i}@example.com"})
        ).status_code
        for i in range(3)
    ]
    assert codes == [303, 303, 429]


async def test_bounded_body_and_form_only(wallet: Wallet) -> None:
    fields = await _form(wallet.client)
    big = await _post(wallet.client, fields | {"name": "A" * 10_000, "email": "a@example.com"})
    assert big.status_code == 413
    as_json = await wallet.client.post(FORM, json=fields)
    assert as_json.status_code == 415


@settings(deadline=None)  # a stall on a loaded machine is not a failure
@given(
    capacity=st.integers(1, 20),
    rate=st.floats(0.01, 10),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60),
)
def test_token_bucket_never_allows_more_than_capacity_plus_refill(
    capacity: int, rate: float, gaps: list[float]
) -> None:
    bucket = RateLimiter(capacity, rate)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        if bucket.take("k", now) == 0:
            allowed += 1
    assert allowed <= capacity + rate * now + 1e-9


def test_rate_limiter_forgets_the_oldest_keys() -> None:
    bucket = RateLimiter(1, 0.001, max_keys=3)
    for key in "abcd":
        assert bucket.take(key, 0) == 0
    assert bucket.take("d", 0) > 0
    assert bucket.take("a", 0) == 0  # forgotten: a full bucket again


def test_enrolment_url_and_qr_posters() -> None:
    config = web_config()
    assert enrolment_url(config, "coffee") == PUBLIC_URL + MOUNT + "/enrol/coffee"
    png = enrolment_poster(config, "coffee", "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 500
    svg = enrolment_poster(config, "coffee", "svg").decode()
    assert svg.startswith("<?xml") and "<svg" in svg and "/enrol/coffee" in svg
