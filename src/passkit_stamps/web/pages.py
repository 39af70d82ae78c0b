"""The card page and its .pkpass download, behind a per-card secret in the URL.

``/cards/<serial>/<secret>`` where the secret is an HMAC of the serial under the app's key
(:func:`passkit_stamps.web.requests.page_secret`). A wrong secret and an unknown serial give the
same 404, so the page cannot be used to find out which serials exist.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import images
from ..apple.media import PKPASS_MIME_TYPE
from ..engine import Platform
from ..errors import CardNotFoundError, GoogleWalletError, PasskitStampsError
from . import requests as rq
from .cardpage import CardPageLinks, render_card_page
from .config import IMAGES_PATH
from .context import WebContext

if TYPE_CHECKING:
    from ..service import CardDetails

logger = logging.getLogger(__name__)

_PAGE_HEADERS = {
    # The URL is the secret: keep it out of caches, referrers and frames.
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain")


class CardPages:
    """``GET /cards/{serial}/{secret}`` (HTML) and ``.../pass.pkpass`` (the signed pass)."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route("/cards/{serial}/{secret}", self.page, methods=["GET", "HEAD"]),
            Route("/cards/{serial}/{secret}/pass.pkpass", self.pkpass, methods=["GET"]),
            Route("/cards/{serial}/{secret}/google", self.google_save, methods=["GET"]),
        ]

    async def _card(self, request: Request) -> CardDetails | None:
        serial = request.path_params["serial"]
        secret = request.path_params["secret"]
        try:
            rq.serial_number(serial)
        except PasskitStampsError:
            return None
        if not rq.page_secret_valid(self.ctx.config.secret_key, serial, secret):
            return None
        try:
            return await self.ctx.service.get_card(serial)
        except CardNotFoundError:  # unknown or deleted
            return None

    async def page(self, request: Request) -> Response:
        details = await self._card(request)
        if details is None:
            return _not_found()
        card, template = details.card, details.template
        if Platform.WEB not in details.platforms:
            await self._record_web(card.serial)
        # The configured public prefix, not the request's root_path: a link is followed by the
        # browser through the proxy, which is where the mount path is defined.
        root = self.ctx.config.mount_path
        page_path = root + self.ctx.config.card_page_path(card.serial)
        logo = None
        if template.design.logo is not None:
            logo = root + IMAGES_PATH + "/" + images.image_name(template, "logo")
        links = CardPageLinks(
            stamp_grid=root + IMAGES_PATH + "/" + images.image_name(template, "hero", card.stamps),
            logo=logo,
            apple_pass=page_path + "/pass.pkpass",
            google_save=page_path + "/google" if self._google_ready() else None,
        )
        html = await run_in_threadpool(render_card_page, template, card, links)
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def pkpass(self, request: Request) -> Response:
        details = await self._card(request)
        if details is None:
            return _not_found()
        card, template = details.card, details.template
        data = await run_in_threadpool(self.ctx.builder.build, template, card)
        headers = dict(_PAGE_HEADERS)
        headers["Content-Disposition"] = f'attachment; filename="{card.serial}.pkpass"'
        return Response(data, headers=headers, media_type=PKPASS_MIME_TYPE)

    async def _record_web(self, serial: str) -> None:
        # Once: the service journals pass_added (web) the first time only anyway.
        with contextlib.suppress(CardNotFoundError):  # deleted between the two reads
            await self.ctx.service.record_platform(serial, Platform.WEB, True)

    def _google_ready(self) -> bool:
        return self.ctx.google is not None and self.ctx.google.signer is not None

    async def google_save(self, request: Request) -> Response:
        """The Save button: inserts the object when its link is skinny, then redirects to
        Google. Signing and any API call happen on the click, not on every page view."""
        details = await self._card(request)
        if details is None or not self._google_ready():
            return _not_found()
        try:
            url = await self.ctx.google.save_destination(details.template, details.card)
        except GoogleWalletError as exc:
            logger.warning("Google Save for card %s failed: %s", details.card.serial, exc)
            return Response(
                "Google Wallet cannot take this card right now; please try again later.\n",
                status_code=502,
                media_type="text/plain",
                headers=_PAGE_HEADERS,
            )
        return RedirectResponse(url, status_code=303, headers=_PAGE_HEADERS)
