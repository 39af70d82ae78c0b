"""Fixtures for the Google tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from walletfixtures import (
    ISSUER,
    espresso_template,
    sample_template,
    service_account_info,
    studio_template,
)

from passkit_stamps.google.builders import GoogleSettings
from passkit_stamps.model import CardTemplate


@pytest.fixture(scope="session")
def coffee_t() -> CardTemplate:
    return sample_template("coffee", espresso_template)


@pytest.fixture(scope="session")
def salon_t() -> CardTemplate:
    return sample_template("salon", studio_template)


@pytest.fixture(scope="session", params=["coffee", "salon"])
def template(request: pytest.FixtureRequest) -> CardTemplate:
    return sample_template(
        request.param, espresso_template if request.param == "coffee" else studio_template
    )


@pytest.fixture(scope="session")
def settings() -> GoogleSettings:
    return GoogleSettings(
        issuer_id=ISSUER,
        image_base_url="https://img.example/cards/",
        callback_url="https://stamps.example/google/callback",
    )


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def sa_info(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    return service_account_info(rsa_key)


@pytest.fixture
def sa_file(tmp_path: Path, sa_info: dict[str, str]) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(sa_info))
    return path
