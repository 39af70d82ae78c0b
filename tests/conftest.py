"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from passkit_stamps.model import CardTemplate

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return TEMPLATES


@pytest.fixture(scope="session")
def coffee() -> CardTemplate:
    return CardTemplate.load(TEMPLATES / "coffee")


@pytest.fixture(scope="session")
def salon() -> CardTemplate:
    return CardTemplate.load(TEMPLATES / "salon")


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A complete development PKI (root, WWDR, Pass Type ID cert, .p12), made once per run."""
    from passkit_stamps.runtime.devpki import make_dev_pki

    return make_dev_pki(tmp_path_factory.mktemp("pki"))
