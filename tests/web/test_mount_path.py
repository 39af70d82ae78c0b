"""Issue 12 item 3: the app under a path prefix (``/wallet``), served two ways — by ``serve
--mount-path`` (runtime/serving.py, the real command in a subprocess) and mounted in a parent
Starlette app behind a proxy that forwards the path unchanged (the documented setup). Every
route answers under the prefix, none without it, and every link the page renders and every URL
a pass carries has the prefix."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.web.app import create_app
from passkit_stamps.web.config import WebConfig

from .device import Device

PREFIX = "/wallet"
SECRET_HEX = "cd" * 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(db: str, coffee: CardTemplate) -> str:
    store = await Store.open(db)
    try:
        service = StampService(store)
        await service.publish_template(coffee)
        serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
        await service.add_stamps(serial, 1)
        return serial
    finally:
        await store.close()


async def walk_every_route(
    client: httpx.AsyncClient, config: WebConfig, serial: str, ca: bytes
) -> None:
    """Every route of the app through ``client`` (whose base URL is the server's root)."""
    page_path = PREFIX + config.card_page_path(serial)
    page = await client.get(page_path)
    assert page.status_code == 200, page.text
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    own = [url for url in links if url.startswith("/")]
    assert own, links
    for url in own:  # images, the .pkpass: each with the prefix, each answering
        assert url.startswith(PREFIX + "/"), url
        assert (await client.get(url)).status_code == 200, url
    # The same routes without the prefix do not answer.
    assert (await client.get(config.card_page_path(serial))).status_code == 404
    assert (await client.post("/v1/log", json={"logs": []})).status_code == 404

    download = await client.get(page_path + "/pass.pkpass")
    assert download.status_code == 200
    device = Device(client, ca)
    installed = device.install(download.content)
    assert installed.web_service_url == config.public_url + PREFIX
    assert await device.register(installed) == 201
    pass_type = installed.pass_type_identifier
    assert await device.changed_serials(installed.web_service_url, pass_type) == [serial]
    assert (await device.fetch(installed)).status_code == 200
    assert (await device.log(installed.web_service_url, ["hello"])).status_code == 200
    assert await device.unregister(installed) == 200
    # The Google save route exists under the prefix (404: Google is not configured here).
    assert (await client.get(page_path + "/google")).status_code == 404


@pytest.fixture
def served_with_mount_path(
    dev_pki: DevPKI, coffee: CardTemplate, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """``passkit-stamps serve --mount-path /wallet`` on a seeded SQLite store: (base, serial)."""
    import asyncio

    db = f"sqlite:///{tmp_path / 'serve.db'}"
    serial = asyncio.run(_seed(db, coffee))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PASSKIT_STAMPS_P12_PASSWORD=dev_pki.p12_password)
    command = [
        sys.executable, "-m", "passkit_stamps", "serve", "--db", db,
        "--public-url", base, "--allow-http", "--mount-path", PREFIX,
        "--p12", str(dev_pki.signer_p12), "--wwdr", str(dev_pki.wwdr_cert),
        "--secret-key", SECRET_HEX, "--port", str(port),
    ]  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("serve did not start: " + log_path.read_text())
            yield base, serial
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_serve_mount_path_answers_every_route_under_the_prefix(
    served_with_mount_path: tuple[str, str], dev_pki: DevPKI
) -> None:
    base, serial = served_with_mount_path
    config = WebConfig(
        public_url=base,
        mount_path=PREFIX,
        secret_key=bytes.fromhex(SECRET_HEX),
        allow_http=True,
    )
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        await walk_every_route(client, config, serial, dev_pki.root_cert.read_bytes())


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # routing, not the backend
async def test_behind_a_proxy_that_keeps_the_prefix(
    store: Store, dev_pki: DevPKI, coffee: CardTemplate
) -> None:
    # The documented setup: the proxy forwards /wallet/... unchanged to a parent app that
    # mounts the wallet app at /wallet (Starlette's Mount, FastAPI's app.mount).
    service = StampService(store)
    await service.publish_template(coffee)
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.add_stamps(serial, 1)
    config = WebConfig(
        public_url="https://shop.example.com",
        mount_path=PREFIX,
        secret_key=bytes.fromhex(SECRET_HEX),
    )
    wallet = create_app(service, dev_pki.credentials(), config)
    parent = Starlette(routes=[Mount(PREFIX, app=wallet)])
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url=config.public_url) as client:
        await walk_every_route(client, config, serial, dev_pki.root_cert.read_bytes())


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_links_carry_the_configured_prefix_whatever_the_root_path(
    store: Store, dev_pki: DevPKI, coffee: CardTemplate
) -> None:
    # A proxy that strips the prefix in front of the app at the root of its server is not the
    # supported setup, but the page's links still follow the configured public prefix.
    service = StampService(store)
    await service.publish_template(coffee)
    serial = (await service.issue_card("coffee")).card.serial
    config = WebConfig(
        public_url="https://shop.example.com", mount_path=PREFIX, secret_key=b"k" * 32
    )
    app = create_app(service, dev_pki.credentials(), config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=config.public_url) as client:
        page = await client.get(config.card_page_path(serial))
    assert page.status_code == 200
    own = [u for u in re.findall(r'(?:src|href)="([^"]+)"', page.text) if u.startswith("/")]
    assert own
    assert all(url.startswith(PREFIX + "/") for url in own), own
