"""Save links: signature, claims, length and the skinny fallback; service-account loading."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from walletfixtures import *  # noqa: F403  (the pytest fixtures)
from walletfixtures import make_card

from passkit_stamps.errors import GoogleAuthError, GoogleConfigError
from passkit_stamps.google.auth import ServiceAccount, load_service_account_info
from passkit_stamps.google.builders import GoogleSettings, build_loyalty_class, build_loyalty_object
from passkit_stamps.google.savelink import (
    MAX_LINK_LENGTH,
    SAVE_URL,
    SaveLinkSigner,
    save_link,
)
from passkit_stamps.model import CardTemplate

NOW = 1_740_830_400


def decode(url: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    assert url.startswith(SAVE_URL)
    token = url.removeprefix(SAVE_URL)
    return jwt.decode(token, key.public_key(), algorithms=["RS256"], audience="google")  # type: ignore[no-any-return]


@pytest.fixture
def account(sa_info: dict[str, str]) -> ServiceAccount:
    return ServiceAccount.load(sa_info)


def small_object(template: CardTemplate, settings: GoogleSettings) -> dict[str, Any]:
    obj = build_loyalty_object(template, make_card(template, 2, name=None), settings)
    obj["textModulesData"] = obj["textModulesData"][:2]  # small enough for a full link
    return obj


def test_full_link_verifies_with_the_public_key(
    coffee_t: CardTemplate,
    settings: GoogleSettings,
    account: ServiceAccount,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    obj = small_object(coffee_t, settings)
    link = save_link(account, obj, origins=["https://shop.example"], clock=lambda: NOW)
    assert not link.skinny and not link.requires_insert
    assert len(link.url) <= MAX_LINK_LENGTH
    claims = decode(link.url, rsa_key)
    assert claims["iss"] == account.email
    assert claims["aud"] == "google"
    assert claims["typ"] == "savetowallet"
    assert claims["iat"] == NOW
    assert claims["origins"] == ["https://shop.example"]
    assert claims["payload"] == {"loyaltyObjects": [obj]}
    header = jwt.get_unverified_header(link.jwt)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    assert (link.object_id, link.class_id) == (obj["id"], obj["classId"])


def test_payload_is_compact_json(
    coffee_t: CardTemplate, settings: GoogleSettings, account: ServiceAccount
) -> None:
    link = save_link(account, small_object(coffee_t, settings))
    segment = link.jwt.split(".")[1]
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()
    assert ", " not in raw.replace('", "', "") and '": ' not in raw
    assert json.loads(raw)["payload"]


def test_long_object_gives_a_skinny_link(
    salon_t: CardTemplate,
    settings: GoogleSettings,
    account: ServiceAccount,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    obj = build_loyalty_object(salon_t, make_card(salon_t, 3, vouchers=4), settings)
    link = save_link(account, obj)
    assert link.skinny and link.requires_insert
    assert len(link.url) <= MAX_LINK_LENGTH
    payload = decode(link.url, rsa_key)["payload"]
    assert payload == {"loyaltyObjects": [{"id": obj["id"], "classId": obj["classId"]}]}


def test_links_never_exceed_the_limit_and_switch_exactly_at_it(
    template: CardTemplate, settings: GoogleSettings, account: ServiceAccount
) -> None:
    obj = small_object(template, settings)
    full = SaveLinkSigner(account, max_length=10_000, clock=lambda: NOW).link(obj)
    n = len(full.url)
    at = SaveLinkSigner(account, max_length=n, clock=lambda: NOW).link(obj)
    below = SaveLinkSigner(account, max_length=n - 1, clock=lambda: NOW).link(obj)
    assert not at.skinny and len(at.url) == n
    assert below.skinny and len(below.url) <= n - 1


def test_every_sample_card_gets_a_working_link(
    template: CardTemplate,
    settings: GoogleSettings,
    account: ServiceAccount,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signer = SaveLinkSigner(account)
    for stamps in (0, template.stamps_required):
        for vouchers in (0, 5):
            obj = build_loyalty_object(
                template, make_card(template, stamps, vouchers=vouchers), settings
            )
            link = signer.link(obj)
            assert len(link.url) <= MAX_LINK_LENGTH
            objects = decode(link.url, rsa_key)["payload"]["loyaltyObjects"]
            assert objects[0]["id"] == obj["id"]
            assert (objects[0] == obj) is not link.skinny


def test_class_can_ride_along(
    coffee_t: CardTemplate,
    settings: GoogleSettings,
    account: ServiceAccount,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    obj = small_object(coffee_t, settings)
    cls = {
        "id": obj["classId"],
        "issuerName": "x",
        "programName": "y",
        "reviewStatus": "UNDER_REVIEW",
    }
    link = SaveLinkSigner(account, max_length=5000).link(obj, loyalty_class=cls)
    assert decode(link.url, rsa_key)["payload"]["loyaltyClasses"] == [cls]
    big = build_loyalty_class(coffee_t, settings)
    assert SaveLinkSigner(account).link(obj, loyalty_class=big).skinny


@pytest.mark.parametrize(
    "origin",
    [
        "shop.example",
        "ftp://shop.example",
        "https://shop.example/page",
        "https://shop.example?x=1",
        "https://",
        "https://shop example",
    ],
)
def test_bad_origins_are_refused(account: ServiceAccount, origin: str) -> None:
    with pytest.raises(GoogleConfigError, match="invalid origin"):
        SaveLinkSigner(account, origins=[origin])


def test_object_without_ids_is_refused(account: ServiceAccount) -> None:
    with pytest.raises(GoogleConfigError, match="'id' and 'classId'"):
        save_link(account, {"id": "1.a"})


def test_even_skinny_too_long_is_an_error(
    coffee_t: CardTemplate, settings: GoogleSettings, account: ServiceAccount
) -> None:
    with pytest.raises(GoogleConfigError, match="even a skinny"):
        save_link(account, small_object(coffee_t, settings), max_length=500)


# -- service-account loading ------------------------------------------------------------------


def test_load_from_file_dict_and_environment(
    sa_file: Path, sa_info: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServiceAccount.load(sa_file).email == sa_info["client_email"]
    assert ServiceAccount.load(str(sa_file)).private_key_id == sa_info["private_key_id"]
    monkeypatch.delenv("PASSKIT_STAMPS_GOOGLE_CREDENTIALS", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa_file))
    assert load_service_account_info() == sa_info
    monkeypatch.setenv(
        "PASSKIT_STAMPS_GOOGLE_CREDENTIALS", json.dumps({**sa_info, "client_email": "p@x"})
    )
    assert load_service_account_info()["client_email"] == "p@x"  # the project's variable wins


def test_no_credentials_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASSKIT_STAMPS_GOOGLE_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(GoogleAuthError, match="no Google service account"):
        load_service_account_info()


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{}", "missing type, client_email, private_key"),
        ("PATCH:type=authorized_user", "not 'service_account'"),
        (
            "PATCH:private_key=-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "unreadable private key",
        ),
        ("PATCH:private_key=EC", "not RSA"),
    ],
)
def test_bad_key_files(tmp_path: Path, sa_info: dict[str, str], content: str, match: str) -> None:
    if content.startswith("PATCH:"):
        key, value = content.removeprefix("PATCH:").split("=", 1)
        content = json.dumps({**sa_info, key: _ec_pem() if value == "EC" else value})
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(GoogleAuthError, match=match):
        ServiceAccount.load(path)


def test_missing_and_oversized_key_files(tmp_path: Path) -> None:
    with pytest.raises(GoogleAuthError, match="not found"):
        ServiceAccount.load(tmp_path / "nope.json")
    big = tmp_path / "big.json"
    big.write_text(" " * 70_000)
    with pytest.raises(GoogleAuthError, match="too large"):
        ServiceAccount.load(big)


def test_key_never_in_repr(account: ServiceAccount, sa_info: dict[str, str]) -> None:
    assert "PRIVATE" not in repr(account) and sa_info["private_key"][40:80] not in repr(account)
