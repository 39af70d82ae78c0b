"""CLI commands: ``worker`` (the dispatcher on its own: N of them against one PostgreSQL) and
``outbox`` / ``outbox retry`` (what waits, what failed, re-queue parked rows).

Every option also comes from an environment variable ``PASSKIT_STAMPS_<OPTION>`` (e.g.
``PASSKIT_STAMPS_DB``, ``PASSKIT_STAMPS_APNS_KEY``, ``PASSKIT_STAMPS_P12_PASSWORD``), so
secrets need not appear on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._signing import signing_options
from ._web import web_config, web_options
from .broadcast import notification_budget_option

if TYPE_CHECKING:
    from ..delivery.email import EmailDelivery, SmtpConfig
    from ..delivery.runner import DeliveryConfig

ENV = "PASSKIT_STAMPS_"
_SIGNING = ("p12", "p12_password", "cert", "key", "key_password", "wwdr")


def _env(name: str) -> str:
    return ENV + name.upper().replace("-", "_")


def _address(value: str | None, option: str) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT", param_hint=option)
    return host, int(port)


def delivery_options(command: Any) -> Any:
    """The options of ``worker`` (APNs, Google, tuning, metrics, e-mail)."""
    return _delivery_options(command, google_account=True)


def email_options(command: Any) -> Any:
    """``--smtp-url`` and ``--email-from``: the e-mail channel (``worker`` and ``serve``)."""
    options = [
        click.option(
            "--smtp-url",
            envvar=_env("smtp_url"),
            metavar="URL",
            help="Send e-mails to card holders (card links, messages) through this SMTP server: "
            "smtp://[user:password@]host[:port]/?from=ADDRESS[&starttls=1], or smtps://... "
            "(TLS from the start). Without it e-mails stay queued (`passkit-stamps outbox`). "
            "Give it as PASSKIT_STAMPS_SMTP_URL: a password on a command line shows in `ps`.",
        ),
        click.option(
            "--email-from",
            envvar=_env("email_from"),
            metavar="ADDRESS",
            help="The e-mails' sender, e.g. 'Bean There <shop@example.com>', when the SMTP URL "
            "has no from=.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def smtp_config(url: str | None, sender: str | None) -> SmtpConfig | None:
    """The SMTP settings from ``--smtp-url`` / ``--email-from`` (None without a URL). A bad URL
    is an EmailConfigError naming the part, never quoting the URL (it may hold a password)."""
    if not url:
        if sender:
            raise click.UsageError("--email-from goes with --smtp-url")
        return None
    from ..delivery.email import SmtpConfig

    return SmtpConfig.from_url(url, sender=sender or None)


def serve_delivery_options(command: Any) -> Any:
    """The same for ``serve``, which has its own --google-issuer-id and
    --google-service-account (shared with the web app), plus --no-worker."""
    command = click.option(
        "--no-worker",
        envvar=_env("no_worker"),
        is_flag=True,
        help="Do not run the delivery worker in this process (run `passkit-stamps worker`).",
    )(command)
    return _delivery_options(command, google_account=False)


def _delivery_options(command: Any, *, google_account: bool) -> Any:
    path = click.Path(dir_okay=False, path_type=Path)
    google_pair = [
        click.option(
            "--google-issuer-id", envvar=_env("google_issuer_id"), help="Google issuer id."
        ),
        click.option(
            "--google-service-account",
            envvar=_env("google_service_account"),
            type=path,
            help="Google service account key file (JSON).",
        ),
    ]
    options = [
        click.option(
            "--pass-type-id",
            envvar=_env("pass_type_id"),
            help="The pass type identifier (APNs topic); default: the certificate's.",
        ),
        click.option("--apns-key", envvar=_env("apns_key"), type=path, help="APNs .p8 key."),
        click.option("--apns-key-id", envvar=_env("apns_key_id"), help="Its key id."),
        click.option("--team-id", envvar=_env("team_id"), help="Your team id."),
        click.option(
            "--apns-host",
            envvar=_env("apns_host"),
            default="api.push.apple.com:443",
            show_default=True,
            help="APNs HOST:PORT; another host for tests and proxies.",
        ),
        click.option(
            "--apns-ca", envvar=_env("apns_ca"), type=path, help="CA file to trust for APNs."
        ),
        click.option(
            "--no-apple", envvar=_env("no_apple"), is_flag=True, help="Do not push to Apple."
        ),
        *google_pair,
        click.option(
            "--google-image-base-url",
            envvar=_env("google_image_base_url"),
            help="Public HTTPS URL of the app's /images (default: --public-url + /images).",
        ),
        click.option(
            "--google-base-url",
            envvar=_env("google_base_url"),
            help="Google Wallet REST base URL (tests, proxies).",
        ),
        click.option(
            "--batch-size",
            envvar=_env("batch_size"),
            default=500,
            show_default=True,
            type=click.IntRange(1, 10_000),
        ),
        click.option(
            "--lease",
            envvar=_env("lease"),
            default=60.0,
            show_default=True,
            type=click.FloatRange(1, 3600),
            help="Seconds a claim holds its rows (a dead worker's rows come back after it).",
        ),
        click.option(
            "--poll-interval",
            envvar=_env("poll_interval"),
            default=1.0,
            show_default=True,
            type=click.FloatRange(0.01, 60),
            help="Seconds between polls for other processes' writes (SQLite).",
        ),
        click.option(
            "--max-attempts",
            envvar=_env("max_attempts"),
            default=12,
            show_default=True,
            type=click.IntRange(1, 1000),
            help="Attempts before a row is parked dead.",
        ),
        click.option(
            "--max-age",
            envvar=_env("max_age"),
            default=24.0,
            show_default=True,
            type=click.FloatRange(0.01, 24 * 365),
            help="Hours after which a failing row is parked dead.",
        ),
        click.option(
            "--metrics",
            envvar=_env("metrics"),
            help="Serve Prometheus text at http://HOST:PORT/metrics (off by default).",
        ),
    ]
    if not google_account:
        options = [o for o in options if o not in google_pair]
    for option in reversed(options):
        command = option(command)
    return command


#: The option names ``delivery_config`` reads.
WORKER_OPTIONS = _DELIVERY = (
    "pass_type_id",
    "apns_key",
    "apns_key_id",
    "team_id",
    "apns_host",
    "apns_ca",
    "no_apple",
    "google_issuer_id",
    "google_service_account",
    "google_image_base_url",
    "google_base_url",
    "batch_size",
    "lease",
    "poll_interval",
    "max_attempts",
    "max_age",
    "metrics",
)


def delivery_config(
    options: dict[str, Any],
    signing: dict[str, Any],
    *,
    public_url: str | None = None,
    credentials: Any = None,
) -> DeliveryConfig:
    """A :class:`DeliveryConfig` from the options (popped from ``options``)."""
    from datetime import timedelta

    from ..delivery.runner import AppleDelivery, DeliveryConfig, GoogleDelivery
    from ..service.delivery import RetryPolicy
    from .push import _host_port

    o = {name: options.pop(name, None) for name in _DELIVERY}
    apple = None
    if not o["no_apple"]:
        host, port = _host_port(o["apns_host"])
        token_given = any(o[n] is not None for n in ("apns_key", "apns_key_id", "team_id"))
        if token_given:
            from ..apple.apns import TokenAuth

            if None in (o["apns_key"], o["apns_key_id"], o["team_id"], o["pass_type_id"]):
                raise click.UsageError(
                    "token auth needs --apns-key FILE, --apns-key-id, --team-id and --pass-type-id"
                )
            auth = TokenAuth(o["apns_key"], key_id=o["apns_key_id"], team_id=o["team_id"])
            apple = AppleDelivery(
                token_auth=auth, topic=o["pass_type_id"], host=host, port=port, ca=o["apns_ca"]
            )
        else:
            if credentials is None:
                if signing.get("wwdr") is None and signing.get("p12") is None:
                    raise click.UsageError(
                        "APNs authentication: give the pass type's certificate (--p12 or "
                        "--cert/--key, with --wwdr) or a token key (--apns-key, --apns-key-id, "
                        "--team-id); --no-apple to deliver to Google only"
                    )
                from ._signing import load_signing_credentials

                credentials = load_signing_credentials(**signing)
            if o["pass_type_id"] and o["pass_type_id"] != credentials.pass_type_identifier:
                raise click.UsageError(
                    f"--pass-type-id {o['pass_type_id']} is not the certificate's pass type "
                    f"{credentials.pass_type_identifier}"
                )
            apple = AppleDelivery(credentials=credentials, host=host, port=port, ca=o["apns_ca"])
    google = None
    if o["google_issuer_id"]:
        from ..google.builders import GoogleSettings

        base = o["google_image_base_url"] or (
            public_url.rstrip("/") + "/images" if public_url else None
        )
        if not base:
            raise click.UsageError(
                "Google delivery needs --google-image-base-url (or --public-url)"
            )
        if o["google_service_account"] is None:
            raise click.UsageError("Google delivery needs --google-service-account FILE")
        google = GoogleDelivery(
            settings=GoogleSettings(issuer_id=o["google_issuer_id"], image_base_url=base),
            service_account=o["google_service_account"],
            base_url=o["google_base_url"],
        )
    return DeliveryConfig(
        apple=apple,
        google=google,
        batch_size=o["batch_size"],
        lease=timedelta(seconds=o["lease"]),
        poll_interval=o["poll_interval"],
        retry=RetryPolicy(max_attempts=o["max_attempts"], max_age=timedelta(hours=o["max_age"])),
        metrics_address=_address(o["metrics"], "--metrics"),
    )


@click.command("worker", context_settings={"auto_envvar_prefix": "PASSKIT_STAMPS"})
@click.option("--db", envvar=_env("db"), required=True, help="Store URL.")
@signing_options(_env)
@delivery_options
@email_options
@web_options
@notification_budget_option
def worker_command(
    db: str,
    public_url: str | None,
    mount_path: str,
    secret_key: str | None,
    allow_http: bool,
    smtp_url: str | None,
    email_from: str | None,
    notification_budget: int,
    **options: Any,
) -> None:
    """Deliver pass updates from the outbox (APNs pushes, Google objects, e-mails with
    --smtp-url) until stopped.

    Run as many as you like against one PostgreSQL store (rows are leased, never shared).
    The web app's URL options (--public-url, --mount-path, --secret-key) give Google its image
    URLs and the e-mails their card page links.
    """
    import logging

    signing = {name: options.pop(name) for name in _SIGNING}
    base = (public_url or "").rstrip("/") + mount_path
    config = delivery_config(options, signing, public_url=base or None)
    email = _email_delivery(smtp_url, email_from, public_url, mount_path, secret_key, allow_http)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_worker(db, config, notification_budget, email))


def _email_delivery(
    smtp_url: str | None,
    email_from: str | None,
    public_url: str | None,
    mount_path: str,
    secret_key: str | None,
    allow_http: bool,
) -> EmailDelivery | None:
    smtp = smtp_config(smtp_url, email_from)
    if smtp is None:
        return None
    web = web_config(public_url, mount_path, secret_key, allow_http)
    if web is None:
        raise click.UsageError(
            "e-mail (--smtp-url) needs the card page URL its links point to: --public-url and "
            "--secret-key (or PASSKIT_STAMPS_PUBLIC_URL and PASSKIT_STAMPS_SECRET_KEY), as "
            "`serve` has them"
        )
    from ..delivery.email import EmailDelivery

    return EmailDelivery(smtp, web.card_page_url)


async def _run_worker(
    db: str,
    config: DeliveryConfig,
    notification_budget: int = 3,
    email: EmailDelivery | None = None,
) -> None:
    import signal

    from ..delivery.email import with_email
    from ..delivery.runner import running_worker
    from ..service import StampService
    from ..store.store import Store

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await Store.open(db, create=False)
    try:
        service = StampService(store, notification_budget=notification_budget)
        async with running_worker(service, with_email(config, service, email)):
            await stop.wait()
    finally:
        await store.close()


@click.group("outbox", invoke_without_command=True)
@click.option("--db", envvar=_env("db"), required=True, help="Store URL.")
@click.pass_context
def outbox_group(ctx: click.Context, db: str) -> None:
    """Pending, retrying and dead pass updates per platform, and the age of the oldest."""
    ctx.obj = db
    if ctx.invoked_subcommand is None:
        stats = asyncio.run(_with_service(db, lambda s: s.outbox_stats()))
        now = datetime.now(UTC)
        click.echo(f"{'platform':10} {'pending':>9} {'retrying':>9} {'dead':>9}  oldest")
        for s in stats:
            age = _age((now - s.oldest).total_seconds()) if s.oldest else "-"
            click.echo(f"{s.platform:10} {s.pending:9d} {s.retrying:9d} {s.dead:9d}  {age}")
        if not stats:
            click.echo("(empty)")


@outbox_group.command("retry")
@click.option("--platform", help="Only this platform's dead rows (apple, google, ...).")
@click.pass_obj
def outbox_retry(db: str, platform: str | None) -> None:
    """Re-queue every dead (parked) row: attempts from zero, due now."""
    count = asyncio.run(_with_service(db, lambda s: s.retry_dead_deliveries(platform=platform)))
    click.echo(f"{count} dead row(s) re-queued")


@outbox_group.command("dead")
@click.option("--platform", help="Only this platform.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_obj
def outbox_dead(db: str, platform: str | None, limit: int) -> None:
    """List dead rows with their last error."""
    rows = asyncio.run(
        _with_service(db, lambda s: s.dead_deliveries(platform=platform, limit=limit))
    )
    for r in rows:
        click.echo(
            f"{r.id} {r.platform} {r.serial} {r.reason} attempts={r.attempts} "
            f"since={r.created_at.isoformat(timespec='seconds')} error={r.last_error or '-'}"
        )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _with_service(db: str, call: Any) -> Any:
    from ..service import StampService
    from ..store.store import Store

    store = await Store.open(db, create=False)
    try:
        return await call(StampService(store))
    finally:
        await store.close()


COMMANDS: list[click.Command] = [worker_command, outbox_group]
