"""``serve --workers 3`` on one PostgreSQL store (issue 11): three server processes behind one
port, a device talking to all of them, stamps from the CLI and from another process; the
protocol holds (every update reaches the device, no 5xx).

Cost: the first round's stamps come from the command line (one process per card, started
together); the three later rounds from this test's own process, a writer outside the servers
as the CLI is: each CLI process spends most of its time starting Python and importing, which
made twelve of them most of this test's time (about 9 s of CPU, 40 s on a loaded machine)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.web.config import WebConfig

from .device import Device

SECRET_HEX = "ab" * 16
POSTGRES = os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of its own (the CLI takes a URL, not a search_path)."""
    if not POSTGRES:
        pytest.skip("PostgreSQL: PASSKIT_STAMPS_TEST_POSTGRES_URL not set")
    import asyncpg

    name = "pks_workers_" + secrets.token_hex(4)
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def _cli(db: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "passkit_stamps", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_three_workers_one_port(
    database: str, dev_pki: DevPKI, coffee: CardTemplate, tmp_path: Path
) -> None:
    store = await Store.open(database)
    service = StampService(store)
    await service.publish_template(coffee)
    serials = [
        (await service.issue_card("coffee", Holder(name=f"W{i}"))).card.serial for i in range(3)
    ]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PASSKIT_STAMPS_P12_PASSWORD=dev_pki.p12_password)
    command = [
        sys.executable, "-m", "passkit_stamps", "serve", "--db", database,
        "--public-url", base, "--allow-http", "--no-worker", "--workers", "3",
        "--p12", str(dev_pki.signer_p12), "--wwdr", str(dev_pki.wwdr_cert),
        "--secret-key", SECRET_HEX, "--port", str(port),
    ]  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("serve did not start: " + log_path.read_text())
            await _protocol(base, database, serials, dev_pki, service)
            # Three server processes (the parent forks them) answer on the one port.
            children = subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
            ).stdout.split()
            assert len(children) == 3, log_path.read_text()
        finally:
            await store.close()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


async def _protocol(
    base: str, database: str, serials: list[str], dev_pki: DevPKI, service: StampService
) -> None:
    config = WebConfig(
        public_url=base, mount_path="", secret_key=bytes.fromhex(SECRET_HEX), allow_http=True
    )
    statuses: list[int] = []

    def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    async def hook(response: httpx.Response) -> None:
        record(response)

    # A new connection per request: the kernel spreads them over the three processes.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base, timeout=10, limits=limits, event_hooks={"response": [hook]}
    ) as client:
        device = Device(client, dev_pki.root_cert.read_bytes())
        for serial in serials:
            response = await client.get(config.card_page_path(serial) + "/pass.pkpass")
            assert response.status_code == 200
            installed = device.install(response.content)
            assert await device.register(installed) == 201
        await device.changed_serials(config.web_service_url, dev_pki.pass_type_identifier)
        for round_ in range(4):
            if round_ == 0:  # from the command line: a process each, started together
                await asyncio.gather(
                    *(asyncio.to_thread(_cli, database, "stamp", serial) for serial in serials)
                )
            else:  # from this process: another writer outside the servers
                for serial in serials:
                    await service.add_stamps(serial)
            await device.sync(config.web_service_url, dev_pki.pass_type_identifier)
        # Every update reaches the device. Usually in the round of its stamp; a change is listed
        # only once every older write transaction on the server has ended (docs/storage.md,
        # "Change ordering"), so on a busy shared server it may come with the next sync (the
        # next push): late, never lost.
        deadline = time.monotonic() + 15
        while True:
            progress = [_progress(device, serial) for serial in serials]
            if all(p.startswith("4") for p in progress) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
            await device.sync(config.web_service_url, dev_pki.pass_type_identifier)
        assert all(p.startswith("4") for p in progress), progress
    assert statuses and all(status < 500 for status in statuses)


def _progress(device: Device, serial: str) -> str:
    fields = device.passes[serial].verified.pass_json["storeCard"]["secondaryFields"]
    return str(next(f["value"] for f in fields if f["key"] == "progress"))
