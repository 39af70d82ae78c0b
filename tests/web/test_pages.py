"""The card page, its .pkpass download, the images, the config and the page URL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from passkit_stamps import images
from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.engine import EventType, Platform
from passkit_stamps.errors import WebConfigError
from passkit_stamps.model import Card, CardTemplate, Holder
from passkit_stamps.web import requests as rq
from passkit_stamps.web.cardpage import CardPageLinks, page_context, readable_on, render_card_page
from passkit_stamps.web.config import WebConfig, card_page_url
from passkit_stamps.web.imageroutes import IMMUTABLE

from .conftest import MOUNT, PUBLIC_URL, SECRET_KEY, Wallet, web_config

# -- the page over HTTP -------------------------------------------------------------------------


async def test_card_page_shows_the_card(wallet: Wallet) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada Lovelace"))).card.serial
    for _ in range(3):
        await wallet.service.add_stamps(serial, 3)
    response = await wallet.client.get(wallet.page_path(serial))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "private, no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    card = (await wallet.service.get_card(serial)).card
    voucher = card.vouchers_ready[0]
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html
    assert "Ada Lovelace" in html
    assert "1 / 8" in html  # 9 stamps: a free coffee at 8, one carried over
    assert "Free coffee in 7 stamps" in html
    assert voucher.code in html
    assert "<svg" in html  # the QR code, inline
    assert f'href="{MOUNT}{wallet.config.card_page_path(serial)}/pass.pkpass"' in html
    assert "Add to Apple Wallet" in html
    assert "Google" not in html  # not configured: no button
    grid = images.image_name(card_template(wallet, "coffee"), "hero", 1)
    assert f'src="{MOUNT}/images/{grid}"' in html
    assert 'alt="1 of 8 stamps collected"' in html
    assert re.search(r"<h1>Free Coffee</h1>", html)
    # No external resources: every src/href is ours, the merchant's site, or a data URI.
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith((MOUNT + "/", "https://beanthere.example.com")), url


def card_template(wallet: Wallet, template_id: str) -> CardTemplate:
    from conftest import TEMPLATES  # tests/conftest.py

    return CardTemplate.load(TEMPLATES / template_id)


async def test_card_page_in_german(wallet: Wallet) -> None:
    serial = (
        await wallet.service.issue_card("salon", Holder(name="Grete"), language="de")
    ).card.serial
    html = (await wallet.client.get(wallet.page_path(serial))).text
    assert '<html lang="de">' in html
    assert "Zu Apple Wallet hinzufügen" in html
    assert "Stempel" in html


async def test_opening_the_page_records_the_web_platform_once(wallet: Wallet) -> None:
    serial = (await wallet.service.issue_card("coffee")).card.serial
    for _ in range(3):
        assert (await wallet.client.get(wallet.page_path(serial))).status_code == 200
    details = await wallet.service.get_card(serial)
    assert details.platforms == {Platform.WEB}
    history = await wallet.service.card_history(serial)
    assert [e.type for e in history].count(EventType.PASS_ADDED) == 1


async def test_wrong_secret_and_unknown_serial_are_the_same_404(wallet: Wallet) -> None:
    serial = (await wallet.service.issue_card("coffee")).card.serial
    secret = rq.page_secret(SECRET_KEY, serial)
    other = rq.page_secret(SECRET_KEY, "NO-SUCH-CARD")
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    responses = [
        await wallet.client.get(f"{MOUNT}/cards/{serial}/{wrong}"),
        await wallet.client.get(f"{MOUNT}/cards/{serial}/{rq.page_secret(b'x' * 32, serial)}"),
        await wallet.client.get(f"{MOUNT}/cards/NO-SUCH-CARD/{other}"),
        await wallet.client.get(f"{MOUNT}/cards/{serial}/short"),
        await wallet.client.get(f"{MOUNT}/cards/{'s' * 70}/{secret}"),
        await wallet.client.get(f"{MOUNT}/cards/NO-SUCH-CARD/{other}/pass.pkpass"),
        await wallet.client.get(f"{MOUNT}/cards/{serial}/{wrong}/pass.pkpass"),
    ]
    assert {r.status_code for r in responses} == {404}
    assert len({r.content for r in responses}) == 1
    assert (await wallet.service.get_card(serial)).platforms == frozenset()


async def test_deleted_card_page_is_404(wallet: Wallet) -> None:
    serial = (await wallet.service.issue_card("coffee")).card.serial
    await wallet.service.delete_card(serial)
    assert (await wallet.client.get(wallet.page_path(serial))).status_code == 404


async def test_pkpass_download(wallet: Wallet) -> None:
    serial = (await wallet.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    response = await wallet.client.get(wallet.page_path(serial) + "/pass.pkpass")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="{serial}.pkpass"'
    verified = verify_pkpass(response.content, ca=wallet.pki.root_cert.read_bytes())
    assert verified.pass_json["serialNumber"] == serial
    assert verified.pass_json["webServiceURL"] == PUBLIC_URL + MOUNT


def test_card_page_url_is_the_share_url() -> None:
    config = web_config()
    url = card_page_url(config, "113772")
    assert url == f"{PUBLIC_URL}{MOUNT}/cards/113772/{rq.page_secret(SECRET_KEY, '113772')}"


# -- images -------------------------------------------------------------------------------------


async def test_images_are_content_addressed_and_immutable(
    wallet: Wallet, coffee: CardTemplate
) -> None:
    name = images.image_name(coffee, "hero", 3)
    response = await wallet.client.get(f"{MOUNT}/images/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.content == images.google_hero(coffee, 3)
    etag = response.headers["etag"]
    again = await wallet.client.get(f"{MOUNT}/images/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    logo = await wallet.client.get(f"{MOUNT}/images/{images.image_name(coffee, 'program-logo')}")
    assert logo.status_code == 200


UNKNOWN_IMAGES = (
    "coffee/v1/0000000000000000-r1/hero-3.png",  # another design
    "coffee/v9/{digest}-r1/hero-3.png",  # unpublished version
    "nosuch/v1/{digest}-r1/hero-3.png",
    "coffee/v1/{digest}-r1/hero-99.png",
    "coffee/v1/{digest}-r1/../../etc/passwd",
    "coffee/v1/{digest}-r1/hero-3.gif",
    "x",
)


async def test_unknown_images_are_404(wallet: Wallet, coffee: CardTemplate) -> None:
    digest = images.image_name(coffee, "hero", 0).split("/")[2].split("-")[0]
    for name in UNKNOWN_IMAGES:
        response = await wallet.client.get(f"{MOUNT}/images/{name.format(digest=digest)}")
        assert response.status_code == 404, name


# -- the page, rendered directly ------------------------------------------------------------------


def _card(template: CardTemplate, **changes: object) -> Card:
    values: dict[str, object] = {
        "serial": "113772",
        "template_id": template.id,
        "template_version": template.version,
        "created_at": datetime(2026, 5, 1, tzinfo=UTC),
        "authentication_token": "t" * 32,
    }
    values.update(changes)
    return Card.model_validate(values)


LINKS = CardPageLinks(stamp_grid="/g.png", logo="/l.png", apple_pass="/p.pkpass")


def test_holder_input_is_escaped(coffee: CardTemplate) -> None:
    card = _card(coffee, holder=Holder(name='<script>alert("x")</script>'), message="<b>hi</b>")
    html = render_card_page(coffee, card, LINKS)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<b>hi</b>" not in html


def test_redeemed_voucher_shows_its_date_and_no_qr(coffee: CardTemplate) -> None:
    from passkit_stamps.model import Voucher, VoucherKind

    voucher = Voucher(
        code="ABCDEF1234",
        kind=VoucherKind.REWARD,
        title="Free coffee",
        issued_at=datetime(2026, 5, 2, tzinfo=UTC),
        redeemed_at=datetime(2026, 5, 12, 9, tzinfo=UTC),
        reward_at=8,
    )
    html = render_card_page(coffee, _card(coffee, vouchers=(voucher,)), LINKS)
    assert "Redeemed on 12 May 2026" in html
    assert 'class="qr"' not in html
    assert "No rewards ready yet." in html


def test_voided_card_has_a_notice_and_no_wallet_buttons(coffee: CardTemplate) -> None:
    html = render_card_page(coffee, _card(coffee, state="voided"), LINKS)
    assert "This card is no longer valid." in html
    assert "Add to Apple Wallet" not in html


def test_google_button_only_with_a_link(coffee: CardTemplate) -> None:
    links = CardPageLinks(stamp_grid="/g.png", google_save="https://pay.google.com/gp/v/save/x")
    html = render_card_page(coffee, _card(coffee), links)
    assert "Save to Google Wallet" in html
    assert 'href="https://pay.google.com/gp/v/save/x"' in html


def test_page_colours_are_readable(coffee: CardTemplate, salon: CardTemplate) -> None:
    from passkit_stamps.model import Color

    for template in (coffee, salon):
        ctx = page_context(template, _card(template), LINKS)
        bg = template.design.background_color
        for key in ("foreground", "label"):
            value = ctx["colors"][key]
            colour = Color(int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
            assert colour.contrast(bg) >= 4.5
    assert readable_on(Color(255, 255, 255), Color(250, 250, 250)) == "#000000"
    assert readable_on(Color(0, 0, 0), Color(10, 10, 10)) == "#ffffff"


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"public_url": "ftp://x"}, "invalid public URL"),
        ({"public_url": "stamps.example.com"}, "invalid public URL"),
        ({"public_url": "http://stamps.example.com"}, "plain HTTP"),
        ({"public_url": "https://x.example/v1", "mount_path": ""}, "ends in /v1"),
        ({"mount_path": "/v1"}, "ends in /v1"),
        ({"mount_path": "wallet"}, "invalid mount path"),
        ({"mount_path": "/wallet/"}, "invalid mount path"),
        ({"secret_key": b"short"}, "secret_key"),
        ({"device_log_size": 0}, "device_log_size"),
    ],
)
def test_bad_config_is_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(WebConfigError, match=message):
        web_config(**overrides)


def test_config_urls() -> None:
    config = WebConfig(public_url="http://127.0.0.1:8000/", secret_key=b"k" * 16, allow_http=True)
    assert config.web_service_url == "http://127.0.0.1:8000"
    assert config.image_base_url == "http://127.0.0.1:8000/images"
    assert web_config().web_service_url == PUBLIC_URL + MOUNT
