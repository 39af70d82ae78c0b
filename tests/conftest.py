"""Fixtures shared by every test package: templates, the development PKI, and THE store
fixture (SQLite and PostgreSQL, from store_backends) with a service on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from passkit_stamps.model import CardTemplate
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from store_backends import BACKENDS, open_test_store

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


START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store on each backend (PostgreSQL: skipped with a reason when not configured)."""
    async with open_test_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(
    store: Store, clock: Clock, coffee: CardTemplate, salon: CardTemplate
) -> StampService:
    """A service with the coffee (8 stamps, <= 3 per visit) and salon templates published
    (tests/web overrides it with a clock in the past)."""
    svc = StampService(store, clock=clock)
    await svc.publish_template(coffee)
    await svc.publish_template(salon)
    return svc
