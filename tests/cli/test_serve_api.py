"""``serve --api`` (issue 13): the real command mounts the till API under ``<mount>/api``, in
one process and with ``--workers N``; a key made with ``api-keys create`` works against it, the
OpenAPI document answers under the mount path. Without ``--api`` nothing answers there."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from passkit_stamps.model import CardTemplate
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store

from .served_process import cli, free_port, fresh_database, running

SECRET_HEX = "cd" * 16
MOUNT = "/wallet"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/serve.db"
        return
    async with fresh_database() as url:
        yield url


async def _publish(db: str, template: CardTemplate) -> None:
    store = await Store.open(db)
    try:
        await StampService(store).publish_template(template)
    finally:
        await store.close()


def _serve_args(db: str, port: int, dev_pki: DevPKI, *extra: str) -> list[str]:
    return [
        "serve", "--db", db, "--public-url", f"http://127.0.0.1:{port}", "--allow-http",
        "--mount-path", MOUNT, "--p12", str(dev_pki.signer_p12), "--wwdr",
        str(dev_pki.wwdr_cert), "--secret-key", SECRET_HEX, "--port", str(port), *extra,
    ]  # fmt: skip


def _env(dev_pki: DevPKI, **more: str) -> dict[str, str]:
    # No APNs here: the in-process worker runs with no platform (nothing leaves the machine).
    return (
        dict(
            os.environ,
            PASSKIT_STAMPS_P12_PASSWORD=dev_pki.p12_password,
            PASSKIT_STAMPS_NO_APPLE="1",
        )
        | more
    )


async def test_serve_api_mounts_the_till_api(
    database: str, dev_pki: DevPKI, coffee: CardTemplate, tmp_path: Path
) -> None:
    await _publish(database, coffee)
    key = cli("api-keys", "create", "--role", "manager", "--name", "till 1", "--db", database)
    auth = {"Authorization": f"Bearer {key.strip()}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    postgres = database.startswith("postgresql")
    # SQLite: the flag, one process. PostgreSQL: the environment variable, two processes.
    workers = 2 if postgres else 1
    args = _serve_args(database, port, dev_pki, "--workers", str(workers))
    env = _env(dev_pki, PASSKIT_STAMPS_API="1") if postgres else _env(dev_pki)
    if not postgres:
        args.append("--api")
    with running(args, log=tmp_path / "serve.log", env=env, cwd=tmp_path, port=port) as process:
        # A new connection per request: with --workers 2 both processes answer.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=base + MOUNT + "/api", timeout=20, limits=limits
        ) as api:
            for _ in range(4):
                document = await api.get("/openapi.json")
                assert document.status_code == 200, document.text
                assert document.json()["openapi"].startswith("3.1")
            issued = await api.post(
                "/cards",
                json={"template_id": "coffee", "holder": {"name": "Ada"}},
                headers=auth | {"Idempotency-Key": "serve-api-1"},
            )
            assert issued.status_code == 201, issued.text
            card = issued.json()["card"]
            assert card["card_page_url"].startswith(base + MOUNT + "/")
            for _ in range(3):
                stamped = await api.post(f"/cards/{card['serial']}/stamps", headers=auth)
                assert stamped.status_code == 200, stamped.text
            found = await api.get(f"/cards/{card['serial']}", headers=auth)
            assert found.json()["stamps"] == 3
            refused = await api.get(f"/cards/{card['serial']}")
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
            page = await api.get(card["card_page_url"])
            assert page.status_code == 200  # the web app beside it
            outside = await api.get(base + "/api/openapi.json")
            assert outside.status_code == 404  # only under the mount path
        if workers > 1:
            children = subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            assert len(children) == workers


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_serve_without_api_serves_no_api(
    database: str, dev_pki: DevPKI, coffee: CardTemplate, tmp_path: Path
) -> None:
    await _publish(database, coffee)
    port = free_port()
    args = _serve_args(database, port, dev_pki, "--no-worker")
    with running(args, log=tmp_path / "serve.log", env=_env(dev_pki), cwd=tmp_path, port=port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            assert (await client.get(MOUNT + "/api/openapi.json")).status_code == 404
            assert (await client.get(MOUNT + "/enrol/coffee")).status_code == 200
