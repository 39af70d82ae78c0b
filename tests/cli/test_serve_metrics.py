"""``serve --metrics HOST:PORT`` (issue 10): Prometheus text at exactly ``/metrics`` on a
listener of its own (not the public app); with ``--workers N`` each process has its own, on
PORT, PORT+1, ... (one port cannot carry N processes' counters)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from passkit_stamps.runtime.devpki import DevPKI

from .served_process import free_port, fresh_database, running
from .test_serve_api import MOUNT, _serve_args


def _env(dev_pki: DevPKI) -> dict[str, str]:
    return dict(
        os.environ, PASSKIT_STAMPS_P12_PASSWORD=dev_pki.p12_password, PASSKIT_STAMPS_NO_APPLE="1"
    )


async def _check_metrics(client: httpx.AsyncClient, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    answer = await client.get(base + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE passkit_outbox_depth gauge" in answer.text
    for other in ("/metrics/", "/metricsx", "/", MOUNT + "/metrics"):
        assert (await client.get(base + other)).status_code == 404, other


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_metrics_listener(workers: int, dev_pki: DevPKI, tmp_path: Path) -> None:
    async with fresh_database() as database:
        port, metrics = free_port(), free_port(workers)
        args = _serve_args(database, port, dev_pki, "--workers", str(workers))
        args += ["--metrics", f"127.0.0.1:{metrics}"]
        log = tmp_path / "serve.log"
        with running(args, log=log, env=_env(dev_pki), cwd=tmp_path, port=port):
            async with httpx.AsyncClient(timeout=20) as client:
                for n in range(workers):
                    await _check_metrics(client, metrics + n)
                # Not on the public app.
                public = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert public.status_code == 404
        for n in range(workers):
            assert f"metrics at http://127.0.0.1:{metrics + n}/metrics" in log.read_text()


async def test_serve_metrics_without_worker_says_so(dev_pki: DevPKI, tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    args = _serve_args(f"sqlite:///{tmp_path}/m.db", port, dev_pki, "--no-worker")
    args += ["--metrics", f"127.0.0.1:{metrics}"]
    log = tmp_path / "serve.log"
    with running(args, log=log, env=_env(dev_pki), cwd=tmp_path, port=port):
        pass
    assert "--metrics is ignored with --no-worker" in log.read_text()
