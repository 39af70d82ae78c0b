"""The API under a real uvicorn server on loopback, in a thread with its own event loop (the
store is opened in that loop), for tests that speak HTTP to it (schemathesis)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from passkit_stamps.api import ApiConfig, create_api
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.service import StampService
from store_backends import open_test_store

from .conftest import PastClock

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    base_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    serials: list[str] = field(default_factory=list)
    vouchers: list[str] = field(default_factory=list)
    error: BaseException | None = None


@contextlib.contextmanager
def running_api(kind: str, tmp_path: Path, **config: Any) -> Iterator[Served]:
    """Serve the API (at the root) on a free loopback port; seeded with the coffee and
    salon templates, a staff and a manager key, and a few cards (one with a voucher)."""
    served = Served()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_test_store(kind, tmp_path) as store:
            service = StampService(store, clock=PastClock())
            for name in ("coffee", "salon"):
                await service.publish_template(CardTemplate.load(ROOT / "templates" / name))
            for role in ("staff", "manager"):
                served.keys[role] = (await service.create_api_key(role, role)).secret
            for i in range(3):
                change = await service.issue_card("coffee", Holder(name=f"Holder {i}"))
                served.serials.append(change.card.serial)
            full = await service.add_stamps(served.serials[0], 3)
            full = await service.add_stamps(served.serials[0], 3)
            full = await service.add_stamps(served.serials[0], 2)
            served.vouchers.extend(v.code for v in full.card.vouchers)
            holder["api"] = create_api(service, ApiConfig(**config))
            yield

    async def root(scope: Any, receive: Any, send: Any) -> None:
        # The API at the server's root: a parent router's own 404s (a Mount's path pattern
        # does not match a decoded newline) would be the parent's answers, not the API's.
        if scope["type"] == "lifespan":
            await parent(scope, receive, send)
        else:
            await holder["api"](scope, receive, send)

    parent = Starlette(lifespan=lifespan)
    server = uvicorn.Server(
        uvicorn.Config(root, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:
            served.error = exc
        finally:
            ready.set()

    holder["thread"] = thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(5)
        raise RuntimeError(f"the API server did not start: {served.error!r}")
    port = server.servers[0].sockets[0].getsockname()[1]
    served.base_url = f"http://127.0.0.1:{port}"
    try:
        yield served
    finally:
        server.should_exit = True
        thread.join(30)
