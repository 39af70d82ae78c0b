"""The app over a real uvicorn server on 127.0.0.1, and the card page in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from conftest import ROOT  # tests/conftest.py
from passkit_stamps.apple.verify import verify_pkpass
from passkit_stamps.model import Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.web.app import create_app
from passkit_stamps.web.config import WebConfig

from .conftest import MOUNT, SECRET_KEY
from .device import Device

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BUILD = ROOT / "build"


@dataclass
class Served:
    base: str  # http://127.0.0.1:<port>
    config: WebConfig
    service: StampService


@pytest.fixture
async def served(store, dev_pki: DevPKI, coffee, salon) -> AsyncIterator[Served]:  # type: ignore[no-untyped-def]
    from .conftest import PastClock

    service = StampService(store, clock=PastClock())
    await service.publish_template(coffee)
    await service.publish_template(salon)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    config = WebConfig(public_url=base, mount_path=MOUNT, secret_key=SECRET_KEY, allow_http=True)
    app = create_app(service, dev_pki.credentials(), config)
    parent = Starlette(routes=[Mount(MOUNT, app=app)])
    server = uvicorn.Server(
        uvicorn.Config(parent, log_level="warning", lifespan="off", access_log=False)
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield Served(base, config, service)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


async def test_a_real_server_serves_the_protocol(served: Served, dev_pki: DevPKI) -> None:
    serial = (await served.service.issue_card("coffee", Holder(name="Ada"))).card.serial
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        page = await client.get(MOUNT + served.config.card_page_path(serial))
        assert page.status_code == 200
        download = await client.get(MOUNT + served.config.card_page_path(serial) + "/pass.pkpass")
        device = Device(client, dev_pki.root_cert.read_bytes())
        installed = device.install(download.content)
        assert installed.web_service_url == served.base + MOUNT
        assert await device.register(installed) == 201
        assert await device.changed_serials(
            installed.web_service_url, installed.pass_type_identifier
        ) == [serial]
        assert (await device.fetch(installed)).status_code == 200
        assert (await device.fetch(installed)).status_code == 304
        await served.service.add_stamps(serial, 1)
        changed = await device.sync(installed.web_service_url, installed.pass_type_identifier)
        assert serial in changed
        verify_pkpass(changed[serial], ca=dev_pki.root_cert.read_bytes())
        head = await device.pass_raw(
            installed.web_service_url,
            installed.pass_type_identifier,
            serial,
            authorization=f"ApplePass {installed.token}",
            method="HEAD",
        )
        assert head.status_code == 200
        assert int(head.headers["content-length"]) > 0
        assert await device.unregister(installed) == 200


async def _chromium(*args: str, user_data: Path) -> bytes:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data}",
        "--window-size=390,844",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0
    return out


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the page, not the backend
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium SKIPPED: /usr/bin/chromium is not installed"
)
async def test_card_page_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    change = await served.service.issue_card("coffee", Holder(name="Ada Lovelace"))
    serial = change.card.serial
    for n in (3, 3, 3):
        await served.service.add_stamps(serial, n)
    voucher = (await served.service.get_card(serial)).card.vouchers_ready[0]
    url = served.base + MOUNT + served.config.card_page_path(serial)
    dom = (await _chromium("--dump-dom", url, user_data=tmp_path / "a")).decode()
    assert "Ada Lovelace" in dom
    assert "1 / 8" in dom
    assert "Free coffee in 7 stamps" in dom
    assert voucher.code in dom
    assert "Add to Apple Wallet" in dom
    assert 'alt="1 of 8 stamps collected"' in dom
    assert 'alt="Bean There Coffee logo"' in dom
    BUILD.mkdir(exist_ok=True)
    shot = BUILD / "card-page.png"
    shot.unlink(missing_ok=True)
    await _chromium(f"--screenshot={shot}", url, user_data=tmp_path / "b")
    assert shot.stat().st_size > 10_000  # a real page with images, kept as a CI artifact
