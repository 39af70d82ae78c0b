"""Private enrolment (``[enrolment] private = true``, issue 13): the enrolment page stops being an
existence oracle. A new address, an address that already holds a card and the honeypot get the
same answer, complete before the store is asked; the new customer's card link goes by e-mail.
Without it (the default) a new customer still lands on the card."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from passkit_stamps.errors import StoreError
from passkit_stamps.model import CardTemplate, Enrolment, Holder
from passkit_stamps.store.codec import EncodedTemplate

from .conftest import MOUNT, Wallet

FORM = MOUNT + "/enrol/coffee"
SENT = FORM + "/sent?lang=en"


def private(template: CardTemplate) -> CardTemplate:
    return template.model_copy(update={"enrolment": Enrolment(private=True)})


async def _form(client: httpx.AsyncClient, path: str = FORM) -> dict[str, str]:
    page = await client.get(path)
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    return {"token": token.group(1), "language": "en"}


def _whole(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.headers.raw), response.content


async def test_private_answers_every_address_alike_and_emails_the_new_card(
    wallet: Wallet, coffee: CardTemplate
) -> None:
    await wallet.service.publish_template(private(coffee))
    known = await wallet.service.enrol("coffee", Holder(name="Ada", email="ada@example.com"))
    assert known.serial is not None
    fields = await _form(wallet.client)
    new = await wallet.client.post(FORM, data=fields | {"name": "Bob", "email": "bob@example.com"})
    again = await wallet.client.post(
        FORM, data=fields | {"name": "Eve", "email": "ADA@example.com"}
    )
    bot = await wallet.client.post(
        FORM, data=fields | {"name": "Bot", "email": "x@example.com", "website": "http://spam"}
    )
    assert new.status_code == 303 and new.headers["location"] == SENT
    # Status, every header (in order) and body: the same bytes for the three.
    assert _whole(new) == _whole(again) == _whole(bot)
    cards = (await wallet.service.list_cards(template_id="coffee")).items
    assert sorted(c.holder.email or "" for c in cards) == ["ada@example.com", "bob@example.com"]
    bob = next(c.serial for c in cards if c.holder.email == "bob@example.com")
    jobs = [(j.serial, j.reason) for j in await wallet.service.pending_email()]
    assert jobs == [
        (known.serial, "card_issued"),  # Ada's own enrolment
        (bob, "card_issued"),  # the new customer: the link by e-mail, as they do not land on it
        (known.serial, "existing_card"),  # Eve typed Ada's address: Ada gets her link
    ]
    history = await wallet.service.card_history(bob)
    assert history[0].actor == "enrolment page"
    page = await wallet.client.get(SENT)
    assert page.status_code == 200 and "Check your e-mail" in page.text
    assert bob not in page.text and known.serial not in page.text


async def test_the_default_still_lands_on_the_new_card_per_template(
    wallet: Wallet, coffee: CardTemplate
) -> None:
    """Private is the template's choice: coffee private, salon not, in one app."""
    await wallet.service.publish_template(private(coffee))
    coffee_form = await wallet.client.get(FORM)
    assert "we e-mail you the link to your card" in coffee_form.text
    salon = MOUNT + "/enrol/salon"
    salon_form = await wallet.client.get(salon)
    assert "your card opens right away" in salon_form.text
    fields = await _form(wallet.client, salon)
    landed = await wallet.client.post(
        salon, data=fields | {"name": "Ada", "email": "ada@example.com"}
    )
    assert landed.status_code == 303
    serial = landed.headers["location"].split("/")[-2]
    assert landed.headers["location"] == wallet.page_path(serial)


async def _asgi_post(wallet: Wallet, fields: dict[str, str], nonce: str, trace: list[str]) -> None:
    """POST the form straight into the app, noting each ASGI message it sends in ``trace``."""
    body = urlencode(fields).encode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": FORM,
        "raw_path": FORM.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"stamps.example.com"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"cookie", b"enrol_nonce=" + nonce.encode()),
        ],
        "client": ("192.0.2.7", 50000),
        "server": ("stamps.example.com", 443),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        trace.append(f"{message['type']}:{message.get('status', '')}")

    await wallet.parent(scope, receive, send)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the page, not the backend
async def test_private_answers_before_the_store_is_asked(
    wallet: Wallet, coffee: CardTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing the address decides comes before the answer: it is sent (start and body) before
    ``enrol`` is called, for a new address and a known one alike. (Without private, the page
    waits for ``enrol`` to know where to send the browser.)"""
    trace: list[str] = []
    real = wallet.service.enrol

    async def enrol(*args: Any, **kwargs: Any) -> Any:
        trace.append("enrol")
        return await real(*args, **kwargs)

    monkeypatch.setattr(wallet.service, "enrol", enrol)
    fields = await _form(wallet.client)
    nonce = wallet.client.cookies["enrol_nonce"]
    await _asgi_post(wallet, fields | {"name": "Ada", "email": "ada@example.com"}, nonce, trace)
    assert trace == ["enrol", "http.response.start:303", "http.response.body:"]

    await wallet.service.publish_template(private(coffee))
    for person in ({"name": "Bob", "email": "bob@example.com"}, {"email": "ada@example.com"}):
        trace.clear()
        await _asgi_post(wallet, fields | {"name": "X"} | person, nonce, trace)
        assert trace == ["http.response.start:303", "http.response.body:", "enrol"]
    assert (await wallet.service.list_cards(template_id="coffee")).total == 2


async def test_a_failed_private_enrolment_is_logged_without_what_was_typed(
    wallet: Wallet,
    coffee: CardTemplate,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody waits for a private enrolment's outcome: a failure after the answer is logged
    with its class only (a store error's message may quote the address)."""
    await wallet.service.publish_template(private(coffee))
    fields = await _form(wallet.client)

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("write failed for secret-ada@example.com")  # injected

    monkeypatch.setattr(wallet.service, "enrol", failing)
    answer = await wallet.client.post(
        FORM, data=fields | {"name": "Ada", "email": "secret-ada@example.com"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == SENT
    assert "private enrolment on 'coffee' not completed: StoreError" in caplog.text
    assert "secret-ada" not in caplog.text


def test_private_is_stored_only_when_set(coffee: CardTemplate) -> None:
    """A template stored before the field existed keeps its digest (no design update)."""
    assert "private" not in EncodedTemplate(coffee).data["enrolment"]
    assert EncodedTemplate(private(coffee)).data["enrolment"]["private"] is True
    assert CardTemplate.model_validate(
        coffee.model_dump() | {"enrolment": {"private": True}}
    ).enrolment.private
