"""The enrolment page in headless Chromium on a phone-sized viewport (390 x 844), over a real
server: the form, then (after enrolling) the card page it lands on."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from .conftest import MOUNT
from .test_served import BUILD, CHROMIUM, Served, _chromium, served

__all__ = ["served"]  # the fixture, imported for this module's tests


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the page, not the backend
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium SKIPPED: /usr/bin/chromium is not installed"
)
async def test_enrolment_page_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    url = served.base + MOUNT + "/enrol/coffee"
    dom = (await _chromium("--dump-dom", url, user_data=tmp_path / "a")).decode()
    assert "Get your card" in dom
    assert 'name="email"' in dom and 'name="name"' in dom
    assert "<h1>Free Coffee</h1>" in dom
    BUILD.mkdir(exist_ok=True)
    shot = BUILD / "enrol-page.png"
    shot.unlink(missing_ok=True)
    await _chromium(f"--screenshot={shot}", url, user_data=tmp_path / "b")
    assert shot.stat().st_size > 5_000
    # Enrol over HTTP as the browser would, then open the landing page in Chromium.
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        form = await client.get(MOUNT + "/enrol/coffee")
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        response = await client.post(
            MOUNT + "/enrol/coffee",
            data={"token": token.group(1), "language": "en", "name": "Ada", "email": "a@x.org"},
        )
    assert response.status_code == 303
    landing = served.base + response.headers["location"]
    dom = (await _chromium("--dump-dom", landing, user_data=tmp_path / "c")).decode()
    assert "Add to Apple Wallet" in dom and "Ada" in dom
    shot = BUILD / "enrol-landing.png"
    shot.unlink(missing_ok=True)
    await _chromium(f"--screenshot={shot}", landing, user_data=tmp_path / "d")
    assert shot.stat().st_size > 10_000
