"""At least once, crash-safe: the worker PROCESS is killed (SIGKILL) at random moments during a
burst of 1,000 changes (or more, until it was killed twice) and restarted; afterwards every
device got a push at or after its card's last change and every Google object equals its card's
final state. Three workers on one PostgreSQL store: nothing lost, duplicate pushes measured
(reported; target under 1%).

The fake APNs runs in this process (it records each push with its arrival time). Google: respx
cannot reach into another process, so a small stand-in of the REST API (google_stub.py) is
served over HTTP on 127.0.0.1 and the worker process uses it as its base URL: the Google half is
crash-tested through the same kills, with the same client code as production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from passkit_stamps.engine import Platform
from passkit_stamps.google.builders import GoogleSettings, build_loyalty_object
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.testing import FakeAPNs
from store_backends import open_test_store

from .google_stub import PREFIX, GoogleStub, serve_in_thread

ISSUER = "3388000000012345678"
IMAGES = "https://stamps.example.com/images"
PASS_TYPE = "pass.com.example.stamps"
WORKER = Path(__file__).with_name("worker_proc.py")


class TimedFakeAPNs(FakeAPNs):
    """The fake, noting when each push arrived (token, time.time())."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[str, float]] = []

    def _answer(self, connection: Any, stream_id: int, request: Any) -> None:
        path = dict(request.headers).get(b":path", b"")
        self.arrivals.append((path.rsplit(b"/", 1)[-1].decode(), time.time()))
        super()._answer(connection, stream_id, request)


class WorkerProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(self.config),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line.strip() == b"READY", line

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()


@pytest.fixture
async def apns(dev_pki: DevPKI) -> AsyncIterator[TimedFakeAPNs]:
    async with TimedFakeAPNs(client_ca_pem=dev_pki.wwdr_cert.read_bytes()) as fake:
        yield fake


@pytest.fixture
def google() -> AsyncIterator[tuple[GoogleStub, str]]:
    stub = GoogleStub()
    base, server = serve_in_thread(stub)
    yield stub, base + PREFIX  # type: ignore[misc]
    server.should_exit = True


async def _cards(service: StampService, n: int, *, google: bool = True) -> dict[str, str]:
    """n cards, each on one device (its push token) and saved to Google (when ``google``)."""
    tokens = {}
    for i in range(n):
        serial = (await service.issue_card("coffee", Holder(name=f"H{i}"))).card.serial
        token = os.urandom(32).hex()
        await service.register_device(f"device-{i}", token, PASS_TYPE, serial)
        if google:
            await service.record_platform(serial, Platform.GOOGLE, True)
        tokens[serial] = token
    return tokens


def _config(store: Store, opened_url: str, apns: FakeAPNs, pki: DevPKI, google_url: str | None):
    return {
        "db": opened_url,
        "connect_args": store.connect_args,
        "p12": str(pki.signer_p12),
        "p12_password": pki.p12_password,
        "wwdr": str(pki.wwdr_cert),
        "apns_host": apns.host,
        "apns_port": apns.port,
        "ca": str(apns.ca_file),
        "google_base_url": google_url,
        "issuer": ISSUER,
        "images": IMAGES,
        "lease": 2.0,
        "poll": 0.2,
        "batch": 100,
    }


async def _wait_drained(service: StampService, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await service.outbox_stats()
        if all(s.pending + s.retrying + s.dead == 0 for s in stats):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"outbox not drained: {await service.outbox_stats()}")


def _check_pushes(
    apns: TimedFakeAPNs, tokens: dict[str, str], last_change: dict[str, float]
) -> None:
    last_push: dict[str, float] = {}
    for token, at in apns.arrivals:
        last_push[token] = max(at, last_push.get(token, 0.0))
    late = [s for s, t in last_change.items() if last_push.get(tokens[s], 0.0) < t]
    assert not late, f"{len(late)} card(s) without a push after their last change: {late[:5]}"
    assert all(p.status == 200 for p in apns.pushes)


async def _check_google(service: StampService, stub: GoogleStub, serials: list[str]) -> None:
    template = CardTemplate.load(Path(__file__).resolve().parents[2] / "templates" / "coffee")
    settings = GoogleSettings(issuer_id=ISSUER, image_base_url=IMAGES)
    wrong = []
    for serial in serials:
        card = (await service.get_card(serial)).card
        expected = build_loyalty_object(template, card, settings)
        found = stub.objects.get(str(expected["id"]))
        if found is None or any(found.get(k) != v for k, v in expected.items()):
            wrong.append(serial)
    assert not wrong, f"{len(wrong)} Google object(s) not at their card's final state"


def _duplicates(
    arrivals: list[tuple[str, float]],
    changes: dict[str, list[tuple[float, float]]],
    tokens: dict[str, str],
    *,
    lenient: bool,
) -> int:
    """Pushes to a device that brought nothing new. Each change is (began, committed). Strict
    count: no change of the card committed between the previous push and this one (a push
    racing the commit it announces counts as a duplicate). Lenient count: no change of the card
    was under way or committed in that interval (the push cannot have carried anything)."""
    by_token: dict[str, list[float]] = {}
    for token, at in arrivals:
        by_token.setdefault(token, []).append(at)
    dup = 0
    for serial, token in tokens.items():
        spans = changes.get(serial, [])
        previous = 0.0
        for at in sorted(by_token.get(token, [])):
            if lenient:
                new = any(began <= at and done > previous for began, done in spans)
            else:
                new = any(previous < done <= at for _, done in spans)
            dup += not new
            previous = at
    return dup


async def _burst(
    service: StampService,
    serials: list[str],
    n: int,
    rng: random.Random,
    more: Callable[[], bool] = lambda: False,
) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """n changes to random cards, then more while ``more()`` says so (at most 10 n in all)."""
    last_start: dict[str, float] = {}
    done: dict[str, list[tuple[float, float]]] = {}
    i = 0
    while i < n or (more() and i < 10 * n):
        serial = rng.choice(serials)
        last_start[serial] = began = time.time()
        await service.add_stamps(serial, 1)
        done.setdefault(serial, []).append((began, time.time()))
        if i % 20 == 0:
            await asyncio.sleep(0.01)  # let the killer and the fake run
        i += 1
    return last_start, done


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_sigkill_during_a_burst_loses_nothing(
    backend: str,
    tmp_path: Path,
    dev_pki: DevPKI,
    coffee: CardTemplate,
    apns: TimedFakeAPNs,
    google: tuple[GoogleStub, str],
) -> None:
    stub, google_url = google
    rng = random.Random(int.from_bytes(os.urandom(4)))
    async with open_test_store(backend, tmp_path) as store:
        service = StampService(store)
        await service.publish_template(coffee)
        tokens = await _cards(service, 100)
        serials = list(tokens)
        worker = WorkerProcess(_config(store, store.url, apns, dev_pki, google_url))
        await worker.start()
        kills = 0
        stopping = asyncio.Event()

        async def killer() -> None:
            # Stopped by the event between rounds, never cancelled: a cancel inside kill()
            # (signal sent, exit not yet reaped) left a dead worker that looked alive, so no
            # worker was started again and the outbox never drained.
            nonlocal kills
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), rng.uniform(0.1, 0.6))
                    return
                await worker.kill()
                kills += 1
                await worker.start()

        killing = asyncio.create_task(killer())
        try:
            # The burst goes on past its 1,000 changes until the worker was killed twice: on a
            # fast machine the changes can end before the second kill (a kill, a restart of
            # about a second, then up to 0.6 s before the next).
            def more() -> bool:
                return kills < 2 and not killing.done()

            last_change, done = await _burst(service, serials, 1000, rng, more)
        finally:
            stopping.set()
            await killing  # ends its round: the worker it last started runs
        assert worker.proc is not None and worker.proc.returncode is None
        try:
            await _wait_drained(service, 40)
        finally:
            await worker.stop()
        changes = sum(len(spans) for spans in done.values())
        print(f"\n{backend}: {kills} kill(s), {len(apns.arrivals)} pushes for {changes} changes")
        assert kills >= 2
        _check_pushes(apns, tokens, last_change)
        await _check_google(service, stub, serials)


async def test_three_workers_on_postgresql_lose_nothing_and_rarely_repeat(
    tmp_path: Path, dev_pki: DevPKI, coffee: CardTemplate, apns: TimedFakeAPNs
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    async with open_test_store("postgresql", tmp_path) as store:
        service = StampService(store)
        await service.publish_template(coffee)
        tokens = await _cards(service, 100, google=False)
        serials = list(tokens)
        workers = [WorkerProcess(_config(store, store.url, apns, dev_pki, None)) for _ in range(3)]
        await asyncio.gather(*(w.start() for w in workers))
        try:
            last_change, done = await _burst(service, serials, 1000, rng)
            await _wait_drained(service, 40)
            await asyncio.sleep(0.5)  # pushes still in flight arrive
        finally:
            await asyncio.gather(*(w.stop() for w in workers))
        _check_pushes(apns, tokens, last_change)
        pushes = max(1, len(apns.arrivals))
        strict = _duplicates(apns.arrivals, done, tokens, lenient=False) / pushes
        lenient = _duplicates(apns.arrivals, done, tokens, lenient=True) / pushes
        print(
            f"\n3 workers: {len(apns.arrivals)} pushes; duplicates {lenient:.2%} "
            f"(strict count {strict:.2%})"
        )
        # The target: under 1%. Claims go per card and a push's acknowledgement takes the
        # changes it covered along (docs/push.md, "One round"): measured 0-0.2% on the loaded
        # development machine (1.3-2.2% before, when a card changed while its push was in
        # flight was claimed and pushed again at once by another worker).
        assert lenient < 0.01
        assert strict < 0.01
