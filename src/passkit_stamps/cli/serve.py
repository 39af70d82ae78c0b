"""CLI commands: ``serve`` (the web app under uvicorn) and ``demo`` (the same, all local).

Every option also comes from an environment variable ``PASSKIT_STAMPS_<OPTION>`` (e.g.
``PASSKIT_STAMPS_DB``, ``PASSKIT_STAMPS_PUBLIC_URL``, ``PASSKIT_STAMPS_P12_PASSWORD``), so
secrets need not appear on a command line.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import click

from ..errors import WebConfigError
from ._signing import load_signing_credentials, signing_options
from .broadcast import notification_budget_option
from .worker import (
    WORKER_OPTIONS,
    _address,
    delivery_config,
    email_options,
    serve_delivery_options,
    smtp_config,
)

ENV = "PASSKIT_STAMPS_"
_SIGNING_OPTIONS = ("p12", "p12_password", "cert", "key", "key_password", "wwdr")


def _env(name: str) -> str:
    return ENV + name.upper().replace("-", "_")


def _secret_key(value: str | None) -> bytes | None:
    """A secret key given as hex or base64 (at least 16 bytes)."""
    if value is None:
        return None
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(value)
        except (ValueError, binascii.Error):
            continue
        if len(key) >= 16:
            return key
    raise WebConfigError("--secret-key must be at least 16 bytes, written as hex or base64")


# Options that `serve` and `demo` share.
_host = click.option("--host", envvar=_env("host"), default="127.0.0.1", show_default=True)
_port = click.option("--port", envvar=_env("port"), default=8000, show_default=True, type=int)
_demo_dir = click.option(
    "--demo-dir",
    envvar=_env("demo_dir"),
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
_templates = click.option(
    "--templates",
    "templates_dir",
    envvar=_env("templates"),
    default="templates",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Sample templates the demo publishes.",
)


@click.command("serve")
@click.option("--db", envvar=_env("db"), help="Store URL: sqlite:///file.db or postgresql://...")
@notification_budget_option
@click.option(
    "--public-url",
    envvar=_env("public_url"),
    help="Public base URL devices reach (https://...); webServiceURL = it + mount path.",
)
@click.option(
    "--mount-path",
    envvar=_env("mount_path"),
    default="",
    show_default=True,
    help="Path the app is mounted under behind the proxy, e.g. /wallet.",
)
@_host
@_port
@signing_options(_env)
@click.option(
    "--secret-key",
    envvar=_env("secret_key"),
    help="Key for card page URLs (hex or base64, >= 16 bytes); keep it stable: changing it "
    "changes every card page URL. Required (the demo makes its own).",
)
@click.option(
    "--allow-http",
    envvar=_env("allow_http"),
    is_flag=True,
    help="Allow an http:// public URL (local testing only; devices need HTTPS).",
)
@click.option(
    "--google-issuer-id",
    envvar=_env("google_issuer_id"),
    help="Google Wallet issuer id (enables Save links and callbacks).",
)
@click.option(
    "--google-service-account",
    envvar=_env("google_service_account"),
    type=click.Path(dir_okay=False, path_type=Path),
    help="Google service account key file (JSON).",
)
@click.option(
    "--google-origin",
    "google_origins",
    envvar=_env("google_origins"),
    multiple=True,
    help="Web origin allowed to show the Save button (repeatable).",
)
@click.option(
    "--demo",
    is_flag=True,
    envvar=_env("demo"),
    help="Run the local demo (./demo, development certificates, sample cards).",
)
@_demo_dir
@_templates
@click.option(
    "--workers",
    envvar=_env("workers"),
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes sharing the port (SO_REUSEPORT); use a PostgreSQL store.",
)
@click.option(
    "--api/--no-api",
    envvar=_env("api"),
    default=False,
    show_default=True,
    help="Also serve the till JSON API under <mount path>/api (keys: `passkit-stamps "
    "api-keys create`; OpenAPI document at <mount path>/api/openapi.json).",
)
@serve_delivery_options
@email_options
def serve_command(**options: Any) -> None:
    """Serve the pass web service, images, card pages, enrolment pages and Google callbacks
    (and the till API with --api) with uvicorn, and deliver pass updates (APNs pushes, Google
    objects, and e-mails with --smtp-url) from this process unless --no-worker."""
    from ..runtime.serving import ServeOptions, run

    secret_key = _secret_key(options.pop("secret_key"))
    signing = {name: options.pop(name) for name in _SIGNING_OPTIONS}
    worker = not options.pop("no_worker")
    shared = ("google_issuer_id", "google_service_account")  # the web app's too
    delivery_settings = {
        name: options.pop(name) for name in WORKER_OPTIONS if name in options and name not in shared
    }
    smtp = smtp_config(options.pop("smtp_url"), options.pop("email_from"))
    for name, given in (("--metrics", delivery_settings.get("metrics")), ("--smtp-url", smtp)):
        if given and not worker:
            click.echo(
                f"Warning: {name} is ignored with --no-worker: it belongs to the delivery "
                f"worker (run `passkit-stamps worker {name} ...`).",
                err=True,
            )
    credentials = None
    delivery = None
    if options["demo"] and worker and delivery_settings.get("metrics"):
        # The demo makes its own delivery settings (a fake APNs); it takes only the metrics
        # listener from these.
        from ..delivery.runner import DeliveryConfig

        delivery = DeliveryConfig(
            metrics_address=_address(delivery_settings["metrics"], "--metrics")
        )
    if not options["demo"]:  # the demo makes development credentials
        credentials = load_signing_credentials(**signing)
        if worker:
            delivery_settings["google_issuer_id"] = options["google_issuer_id"]
            delivery_settings["google_service_account"] = options["google_service_account"]
            base = (options["public_url"] or "").rstrip("/") + options["mount_path"]
            delivery = delivery_config(
                delivery_settings, signing, public_url=base or None, credentials=credentials
            )
    run(
        ServeOptions(
            **options,
            secret_key=secret_key,
            credentials=credentials,
            worker=worker,
            delivery=delivery,
            smtp=smtp,
        )
    )


@click.command("demo")
@_host
@_port
@_demo_dir
@_templates
def demo_command(host: str, port: int, demo_dir: Path, templates_dir: Path) -> None:
    """Run the demo on this machine: no Apple or Google account needed (same as serve --demo)."""
    from ..runtime.serving import ServeOptions, run

    run(
        ServeOptions(
            host=host, port=port, demo=True, demo_dir=demo_dir, templates_dir=templates_dir
        )
    )


COMMANDS: list[click.Command] = [serve_command, demo_command]
