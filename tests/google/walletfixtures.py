"""Fixtures and helpers for the Google tests: sample templates, cards, keys.

There is deliberately no ``conftest.py`` here and no ``__init__.py``: a package named ``google``
would shadow google-auth, and a second top-level ``conftest`` module would replace the root one
that other test packages import. Test modules take the fixtures with
``from walletfixtures import *``.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from passkit_stamps.google.builders import GoogleSettings
from passkit_stamps.model import (
    Card,
    CardState,
    CardTemplate,
    Holder,
    Voucher,
    VoucherKind,
)

#: What ``from walletfixtures import *`` gives a test module: the fixtures. Pytest finds them
#: by their ``name=``; the ``_fixture`` attribute names keep them from clashing with test
#: parameters of the same name.
__all__ = [
    "coffee_t_fixture",
    "rsa_key_fixture",
    "sa_file_fixture",
    "sa_info_fixture",
    "salon_t_fixture",
    "settings_fixture",
    "template_fixture",
]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


ISSUER = "3388000000012345678"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def png(width: int, height: int, color: tuple[int, int, int] = (120, 80, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def espresso_template() -> CardTemplate:
    return CardTemplate.from_mapping(
        {
            "id": "espresso_bar",
            "version": 1,
            "name": "Free Coffee",
            "organization_name": "Espresso Bar",
            "description": "Coffee stamp card",
            "stamps_required": 8,
            "rewards": [{"at": 8, "title": "Free coffee"}],
            "design": {
                "background_color": "#3b2314",
                "foreground_color": "#ffffff",
                "label_color": "#f0d9b5",
                "icon": png(660, 660),
            },
            "texts": {
                "en": {
                    "terms": "One stamp per coffee. {{ organization }} may end the program.",
                    "how_to_earn": "Show this card when you pay.",
                }
            },
        }
    )


def studio_template() -> CardTemplate:
    return CardTemplate.from_mapping(
        {
            "id": "salon-studio",
            "version": 3,
            "name": "Free Beauty Service",
            "organization_name": "Studio Schön",
            "description": "Salon stamp card",
            "stamps_required": 10,
            "rewards": [
                {"at": 5, "title": {"en": "Free hair wash", "de": "Gratis Haarwäsche"}},
                {"at": 10, "title": {"en": "Free haircut", "de": "Gratis Haarschnitt"}},
            ],
            "barcode_format": "pdf417",
            "design": {
                "background_color": "#20124d",
                "foreground_color": "#ffffff",
                "label_color": "#d9c8ff",
                "icon": png(700, 700),
            },
            "texts": {
                "en": {"terms": "Valid in all studios.", "how_to_earn": "One stamp per visit."},
                "de": {
                    "terms": "Gültig in allen Studios.",
                    "how_to_earn": "Ein Stempel je Besuch.",
                },
            },
            "expiry": {"kind": "days_after_issue", "days": 365},
            "website": "https://studio.example/",
            "links": [
                {"title": {"en": "Book", "de": "Buchen"}, "url": "https://studio.example/book"}
            ],
        }
    )


TEMPLATE_MAKERS: dict[str, Callable[[], CardTemplate]] = {
    "coffee": lambda: CardTemplate.load(TEMPLATES / "coffee"),
    "salon": lambda: CardTemplate.load(TEMPLATES / "salon"),
    # Built here: an id with "_" (escaped in the class id), PDF417, expiry, German second.
    "espresso": espresso_template,
    "studio": studio_template,
}


@pytest.fixture(scope="session", name="coffee_t")
def coffee_t_fixture() -> CardTemplate:
    return TEMPLATE_MAKERS["coffee"]()


@pytest.fixture(scope="session", name="salon_t")
def salon_t_fixture() -> CardTemplate:
    return TEMPLATE_MAKERS["salon"]()


@pytest.fixture(scope="session", params=list(TEMPLATE_MAKERS), name="template")
def template_fixture(request: pytest.FixtureRequest) -> CardTemplate:
    return TEMPLATE_MAKERS[request.param]()


@pytest.fixture(scope="session", name="settings")
def settings_fixture() -> GoogleSettings:
    return GoogleSettings(
        issuer_id=ISSUER,
        image_base_url="https://img.example/cards/",
        callback_url="https://stamps.example/google/callback",
    )


@pytest.fixture(scope="session", name="rsa_key")
def rsa_key_fixture() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session", name="sa_info")
def sa_info_fixture(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    return service_account_info(rsa_key)


@pytest.fixture(name="sa_file")
def sa_file_fixture(tmp_path: Path, sa_info: dict[str, str]) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(sa_info))
    return path


def make_card(
    template: CardTemplate,
    stamps: int = 0,
    *,
    serial: str = "113772",
    state: CardState = CardState.ACTIVE,
    vouchers: int = 0,
    redeemed: int = 0,
    name: str | None = "Ada Lovelace",
    expires_at: datetime | None = None,
    language: str | None = None,
    message: str | None = None,
) -> Card:
    made = [
        Voucher(
            code=f"CODE{i:04d}",
            kind=VoucherKind.REWARD,
            title=f"Reward {i}",
            description="Ask at the counter" if i % 2 else "",
            issued_at=NOW,
            redeemed_at=NOW if i < redeemed else None,
            reward_at=template.rewards[-1].at,
        )
        for i in range(vouchers)
    ]
    return Card(
        serial=serial,
        template_id=template.id,
        template_version=template.version,
        holder=Holder(name=name),
        stamps=stamps,
        vouchers=tuple(made),
        created_at=NOW,
        state=state,
        authentication_token=secrets.token_hex(16),
        expires_at=expires_at,
        language=language,
        message=message,
    )


def service_account_info(
    key: rsa.RSAPrivateKey, token_uri: str = "https://oauth2.example/token"
) -> dict[str, str]:
    """A service-account key file's contents with a self-generated key (never a real one)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "stamps-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "wallet@stamps-test.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
