"""Helpers for tests that run the real command line in its own process: free ports on
127.0.0.1, a command run to completion, a long-running command (``serve``, ``worker``) started
and stopped with SIGTERM, a PostgreSQL database of its own (the CLI takes a URL, not a
search_path)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

POSTGRES = os.environ.get("PASSKIT_STAMPS_TEST_POSTGRES_URL")
CLI = [sys.executable, "-m", "passkit_stamps"]


#: Every port :func:`free_port` handed out in this process. The kernel picks a port at random
#: for each bind to port 0 and a port is released as soon as it is found, so two calls made
#: before anything listens (``free_port(), free_port()``) would name the same port once in some
#: 14,000 pairs: one is never handed out twice.
_GIVEN: set[int] = set()


def free_port(count: int = 1) -> int:
    """A port on 127.0.0.1 that is free, with the ``count - 1`` ports after it free too (none
    of them handed out by an earlier call)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port + count > 65536 or not _GIVEN.isdisjoint(range(port, port + count)):
                continue
            others = []
            try:
                for extra in range(1, count):
                    other = socket.socket()
                    others.append(other)
                    other.bind(("127.0.0.1", port + extra))
            except OSError:
                continue
            finally:
                for other in others:
                    other.close()
            _GIVEN.update(range(port, port + count))
            return port
    raise RuntimeError("no free ports")


def cli(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``passkit-stamps ARGS`` to completion; its stdout (it must succeed)."""
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port}: " + log.read_text())


@contextlib.contextmanager
def running(
    args: list[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``passkit-stamps ARGS`` in its own process (stdout and stderr to ``log``), until the
    block ends: then SIGTERM, and it must stop cleanly. With ``port``: started once it listens."""
    with log.open("wb") as out:
        process = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=out, stderr=out)
        try:
            if port is not None:
                wait_for_port(port, process, log)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # uvicorn re-raises the SIGTERM it handled once shut down: a clean stop either way.
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own, dropped afterwards (skips without PostgreSQL)."""
    if not POSTGRES:
        pytest.skip("PostgreSQL: PASSKIT_STAMPS_TEST_POSTGRES_URL not set")
    import asyncpg

    name = "pks_cli_" + secrets.token_hex(4)
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
