"""``create_app``: the mountable Starlette app (Apple web service, images, card pages, Google).

The app is a plain ASGI application. Mount it under any prefix in Starlette or FastAPI
(``Mount("/wallet", app=create_app(...))``), run it alone with uvicorn, or route to it from
Django's ASGI handler; the passes it serves carry ``webServiceURL`` = public URL + mount path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..apple.bundle import PassBuilder
from ..errors import RequestError, RequestTooLargeError
from .apple import AppleWebService
from .asgiguard import RequestGuard
from .config import GoogleWebConfig, WebConfig
from .context import WebContext
from .devicelog import DeviceLog
from .enrol import EnrolmentPages
from .imageroutes import ImageRoutes
from .pages import CardPages

if TYPE_CHECKING:
    from ..api.config import ApiConfig
    from ..apple.credentials import SigningCredentials
    from ..service import StampService

__all__ = ["GoogleWebConfig", "WebConfig", "create_app", "web_context"]


async def _bad_request(request: Request, exc: Exception) -> Response:
    return Response(f"{exc}\n", status_code=400, media_type="text/plain")


async def _too_large(request: Request, exc: Exception) -> Response:
    return Response(f"{exc}\n", status_code=413, media_type="text/plain")


def create_app(
    service: StampService,
    credentials: SigningCredentials,
    config: WebConfig,
    *,
    builder: PassBuilder | None = None,
    api: ApiConfig | None = None,
) -> Starlette:
    """The web app for ``service``, signing passes with ``credentials``.

    ``api``: also serve the till JSON API under ``/api`` (:func:`passkit_stamps.api.create_api`;
    off when None). Its card URLs use ``config`` unless the ApiConfig names its own.

    ``builder`` defaults to a :class:`~passkit_stamps.apple.bundle.PassBuilder` with
    ``web_service_url=config.web_service_url`` (pass your own to share its cache).
    """
    if builder is None:
        builder = PassBuilder(
            credentials, web_service_url=config.web_service_url, allow_http=config.allow_http
        )
    ctx = WebContext(
        service=service,
        credentials=credentials,
        builder=builder,
        config=config,
        device_log=DeviceLog(config.device_log_size),
    )
    routes: list[BaseRoute] = []
    routes += AppleWebService(ctx).routes()
    routes += ImageRoutes(ctx).routes()
    routes += CardPages(ctx).routes()
    routes += EnrolmentPages(ctx).routes()  # /enrol/<template id> (web/enrol.py)
    if config.google is not None:
        from .google import GoogleRuntime

        ctx.google = GoogleRuntime(ctx, config.google)
        routes += ctx.google.routes()
    if api is not None:
        import dataclasses

        from starlette.routing import Mount

        from ..api import create_api

        api = api if api.web is not None else dataclasses.replace(api, web=config)
        routes.append(Mount("/api", app=create_api(service, api)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        ctx.device_log.flush_suppressed()  # what a flood suppressed is not lost at shutdown
        if ctx.google is not None:
            await ctx.google.aclose()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RequestTooLargeError: _too_large, RequestError: _bad_request},
        # A query string that is not UTF-8 is a 400, not a UnicodeDecodeError in Starlette.
        middleware=[Middleware(RequestGuard)],
    )
    app.state.passkit_stamps = ctx
    return app


def web_context(app: Starlette) -> WebContext:
    """The shared state of an app made by :func:`create_app` (device log, config, builder)."""
    ctx = getattr(app.state, "passkit_stamps", None)
    if not isinstance(ctx, WebContext):
        raise TypeError("not an app made by passkit_stamps.web.create_app")
    return ctx
