"""Running the app with uvicorn: ``passkit-stamps serve`` and ``passkit-stamps demo``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..apple.credentials import SigningCredentials
from ..errors import WebConfigError
from ..web.config import GoogleWebConfig, WebConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..delivery.email import SmtpConfig
    from ..delivery.runner import DeliveryConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What ``serve`` was given (see :mod:`passkit_stamps.cli.serve`)."""

    db: str | None = None
    public_url: str | None = None
    mount_path: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Loaded by the caller (``passkit-stamps serve`` through the CLI's one credential loader);
    # the demo makes development credentials instead.
    credentials: SigningCredentials | None = None
    secret_key: bytes | None = None
    allow_http: bool = False
    google_issuer_id: str | None = None
    google_service_account: Path | None = None
    google_origins: tuple[str, ...] = ()
    demo: bool = False
    demo_dir: Path = Path("demo")
    templates_dir: Path = Path("templates")
    #: Notified updates per card per 24 h (``--notification-budget``).
    notification_budget: int = 3
    #: Run the delivery worker in this process (``--no-worker`` turns it off), with these
    #: settings (APNs, Google; the demo makes its own: a fake APNs on loopback).
    worker: bool = True
    delivery: DeliveryConfig | None = None
    #: E-mail to card holders through this SMTP server (``--smtp-url``), sent by the
    #: in-process worker with links to this app's card pages; None: e-mails stay queued.
    smtp: SmtpConfig | None = None
    #: Server processes sharing the port (``--workers``; SO_REUSEPORT, Linux and BSD), each with
    #: its own store pool; the store keeps them consistent (docs/deployment.md).
    workers: int = 1
    #: Serve the till API (``--api``) under ``<mount path>/api`` with its defaults
    #: (:class:`passkit_stamps.api.ApiConfig`; docs/merchant.md).
    api: bool = False
    #: Bind with SO_REUSEPORT (set in each process of ``workers``).
    reuse_port: bool = False


def web_config(options: ServeOptions, credentials: SigningCredentials) -> WebConfig:
    """The app's configuration from the options."""
    if not options.public_url:
        raise WebConfigError("--public-url is required (the HTTPS address devices reach)")
    if options.secret_key is None:
        # Not derived from the signing key: certificates are renewed yearly, and every shared
        # card page URL would change with them.
        raise WebConfigError(
            "--secret-key is required: a stable random key for card page URLs "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    google = None
    if options.google_issuer_id:
        account = None
        if options.google_service_account is not None:
            from ..google.auth import ServiceAccount

            account = ServiceAccount.load(options.google_service_account)
        google = GoogleWebConfig(
            issuer_id=options.google_issuer_id,
            service_account=account,
            origins=tuple(options.google_origins),
        )
    return WebConfig(
        public_url=options.public_url,
        mount_path=options.mount_path,
        secret_key=options.secret_key,
        allow_http=options.allow_http,
        google=google,
    )


def mounted(app: Starlette, mount_path: str) -> Starlette:
    """``app`` as ``serve`` runs it: under ``mount_path`` (``/wallet``) when one is given, so a
    proxy forwards the public path unchanged (``/wallet/v1/...`` reaches ``/v1/...`` of the app,
    which sees ``root_path`` ``/wallet``); nothing answers outside the prefix. At the root
    without one. The app's lifespan (closing the Google client) runs inside the parent's."""
    if not mount_path:
        return app
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    from ..web.asgiguard import RequestGuard

    @contextlib.asynccontextmanager
    async def lifespan(parent: Starlette) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    return Starlette(
        routes=[Mount(mount_path, app=app)],
        lifespan=lifespan,
        # The parent's own 404s and slash redirects build URLs too: non-UTF-8 queries are 400.
        middleware=[Middleware(RequestGuard)],
    )


def demo_secret_key(demo_dir: Path) -> bytes:
    """The demo's page key, made once and kept in ``demo_dir`` (stable URLs across restarts)."""
    path = demo_dir / "secret.key"
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) >= 16:
            return key
    key = secrets.token_bytes(32)
    demo_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def run(options: ServeOptions) -> None:
    """Serve until interrupted (on uvloop where it is installed); with ``workers`` > 1, in that
    many processes on one port."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if options.workers > 1:
        _run_workers(options)
        return
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(options))


def _run_workers(options: ServeOptions) -> None:
    """Fork ``workers`` processes, each serving on its own SO_REUSEPORT socket bound to the same
    port (the kernel spreads connections); forward SIGINT/SIGTERM to them and wait. Forked (not
    spawned): the loaded signing credentials are not picklable, and no loop or thread runs yet.
    One process ending with an error stops the others."""
    import multiprocessing
    import signal

    if options.demo:
        raise WebConfigError("--workers cannot be used with the demo (one SQLite file)")
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=run, args=(_one_of(options, n),), daemon=False)
        for n in range(options.workers)
    ]
    for child in children:
        child.start()

    asked: list[int] = []  # the signal this process was stopped with

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    def asked_to_stop(signum: int, frame: object) -> None:
        asked.append(signum)
        stop(signum, frame)

    signal.signal(signal.SIGTERM, asked_to_stop)
    signal.signal(signal.SIGINT, asked_to_stop)
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(0.2)
            if child.exitcode not in (None, 0):
                stop(signal.SIGTERM, None)
    # uvicorn re-raises the SIGTERM it shut down on: a child ending by it is a clean stop when
    # this process asked for one; any other end (or one nobody asked for) is a failure.
    clean = (0, -signal.SIGTERM) if asked else (0,)
    failed = [c.exitcode for c in children if c.exitcode not in clean]
    if failed:
        raise SystemExit(1)


def _one_of(options: ServeOptions, n: int) -> ServeOptions:
    """The options of process ``n`` of ``workers``: the shared port with SO_REUSEPORT, and its
    own metrics listener on the metrics port + n (each process counts its own deliveries; one
    port shared by all would answer with a random process's counters)."""
    from dataclasses import replace

    delivery = options.delivery
    if delivery is not None and delivery.metrics_address is not None:
        host, port = delivery.metrics_address
        delivery = replace(delivery, metrics_address=(host, port + n if port else 0))
    return replace(options, workers=1, reuse_port=True, delivery=delivery)


def _reuse_port_socket(host: str, port: int) -> object:
    """A listening socket with SO_REUSEPORT: several processes bind the same port."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed: uvicorn only picks it in ``uvicorn.run``, and :func:`serve`
    runs the server inside our own loop (next to the demo's push logger)."""
    try:
        import uvloop
    except ImportError:  # e.g. on Windows
        return None
    return uvloop.new_event_loop


async def serve(options: ServeOptions, *, ready: asyncio.Event | None = None) -> None:
    """Open the store, build the app and run uvicorn (and, for the demo, the push logger)."""
    from dataclasses import replace

    import uvicorn

    from ..delivery.email import EmailDelivery, with_email
    from ..delivery.runner import running_worker
    from ..service import StampService
    from ..store.store import Store
    from ..web.app import create_app
    from .demo import demo_delivery, prepare_demo
    from .headlimit import uvicorn_limits

    stack = contextlib.AsyncExitStack()
    if options.demo:
        from .devpki import make_dev_pki

        options.demo_dir.mkdir(parents=True, exist_ok=True)
        pki = make_dev_pki(Path("certs.example") / "dev")
        credentials = pki.credentials()
        public_url = options.public_url or f"http://{options.host}:{options.port}"
        config = WebConfig(
            public_url=public_url,
            mount_path=options.mount_path,
            secret_key=options.secret_key or demo_secret_key(options.demo_dir),
            allow_http=True,
        )
        db = options.db or f"sqlite:///{options.demo_dir / 'passkit-stamps.db'}"
    else:
        if not options.db:
            raise WebConfigError("--db is required (sqlite:///file.db or postgresql://...)")
        if options.credentials is None:
            raise WebConfigError("signing credentials are required (--p12 or --cert/--key, --wwdr)")
        credentials = options.credentials
        config = web_config(options, credentials)
        db = options.db
    for warning in credentials.warnings:
        logger.warning("%s", warning)

    store = await Store.open(db)
    try:
        service = StampService(store, notification_budget=options.notification_budget)
        api = None
        if options.api:
            from ..api.config import ApiConfig

            api = ApiConfig()
            logger.info("till API at %s/api (OpenAPI: %s/api/openapi.json)", *[config.base_url] * 2)
        app = create_app(service, credentials, config, api=api)
        email = None
        if options.smtp is not None:
            email = EmailDelivery(options.smtp, config.card_page_url)
        if options.demo:
            serials = await prepare_demo(service, options.templates_dir)
            if options.worker:
                delivery = await stack.enter_async_context(demo_delivery(pki))
                if options.delivery is not None:  # --metrics
                    delivery = replace(delivery, metrics_address=options.delivery.metrics_address)
                delivery = with_email(delivery, service, email)
                await stack.enter_async_context(running_worker(service, delivery))
            _print_demo(config, serials, db)
        elif options.worker and options.delivery is not None:
            delivery = with_email(options.delivery, service, email)
            await stack.enter_async_context(running_worker(service, delivery))
        server = uvicorn.Server(
            uvicorn.Config(
                mounted(app, config.mount_path),
                host=options.host,
                port=options.port,
                log_level="info",
                # Request paths carry secrets (card page secrets, device library identifiers):
                # never write them to an access log.
                access_log=False,
                proxy_headers=True,
                server_header=False,
                lifespan="on",  # closes the Google REST client on shutdown
                # Request heads over 16 KiB get a 431 (uvicorn's httptools has no limit).
                **uvicorn_limits(),
            )
        )
        if ready is not None:
            asyncio.get_running_loop().create_task(_signal_ready(server, ready))
        if options.reuse_port:
            sock = _reuse_port_socket(options.host, options.port)
            await server.serve(sockets=[sock])  # type: ignore[list-item]
        else:
            await server.serve()
    finally:
        await stack.aclose()  # the worker stops before the store closes
        await store.close()


async def _signal_ready(server: object, ready: asyncio.Event) -> None:
    while not getattr(server, "started", False):
        await asyncio.sleep(0.02)
    ready.set()


def _print_demo(config: WebConfig, serials: list[str], db: str) -> None:
    lines = [
        "",
        "passkit-stamps demo: development certificates (Wallet will not open these passes;",
        "`passkit-stamps verify` and the tests do). Open a card page:",
    ]
    for serial in serials:
        url = config.card_page_url(serial)
        lines.append(f"  {serial}: {url}")
        lines.append(f"  {' ' * len(serial)}  .pkpass: {url}/pass.pkpass")
    lines.append(f"Web service URL of the passes: {config.web_service_url}")
    lines.append(f"Stamp a card from another shell: passkit-stamps stamp --db {db} <serial>")
    lines.append("(pushes go to a fake APNs on this machine; the log shows each). Ctrl-C stops.")
    print("\n".join(lines), flush=True)
