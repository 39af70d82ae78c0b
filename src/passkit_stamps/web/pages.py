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
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .. import images
from ..engine import Platform
from ..errors import CardNotFoundError, PasskitStampsError
from ..model import Card, CardTemplate
from . import requests as rq
from .apple import PKPASS_TYPE
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
        root = request.scope.get("root_path", "")
        page_path = root + self.ctx.config.card_page_path(card.serial)
        logo = None
        if template.design.logo is not None:
            logo = root + IMAGES_PATH + "/" + images.image_name(template, "logo")
        links = CardPageLinks(
            stamp_grid=root + IMAGES_PATH + "/" + images.image_name(template, "hero", card.stamps),
            logo=logo,
            apple_pass=page_path + "/pass.pkpass",
            google_save=await self._google_link(template, card),
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
        return Response(data, headers=headers, media_type=PKPASS_TYPE)

    async def _record_web(self, serial: str) -> None:
        # Once: the service journals pass_added (web) the first time only anyway.
        with contextlib.suppress(CardNotFoundError):  # deleted between the two reads
            await self.ctx.service.record_platform(serial, Platform.WEB, True)

    async def _google_link(self, template: CardTemplate, card: Card) -> str | None:
        google = self.ctx.google
        if google is None or google.signer is None:
            return None
        try:
            return str(await run_in_threadpool(google.save_link, template, card))
        except PasskitStampsError as exc:  # the page still works without the button
            logger.warning("no Google Save link for card %s: %s", card.serial, exc)
            return None
