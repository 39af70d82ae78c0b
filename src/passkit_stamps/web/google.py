"""Google Wallet in the web app: Save links on card pages and the save/delete callback.

Google POSTs a signed message to ``/google/callback`` when a holder saves or deletes a pass
(best effort, with retries). The app verifies it (``google.callbacks.verify_callback``),
drops repeated nonces, records ``pass_added`` / ``pass_removed`` (google) for the card, and
answers 200 at once; a message that fails verification gets 400 (retrying cannot fix it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..engine import Platform
from ..errors import (
    CallbackBusyError,
    CallbackReplayError,
    CallbackVerificationError,
    GoogleConfigError,
    NotFoundError,
    RequestError,
)
from ..google import ids
from ..google.builders import GoogleSettings, Resource, build_loyalty_class, build_loyalty_object
from ..google.callbacks import (
    CallbackEvent,
    CallbackEventType,
    MemoryNonceStore,
    verify_callback,
)
from ..google.client import WalletClient
from ..google.savelink import SaveLink, SaveLinkSigner
from . import requests as rq
from .config import GOOGLE_CALLBACK_PATH, GoogleWebConfig

if TYPE_CHECKING:
    from ..model import Card, CardTemplate
    from .context import WebContext

logger = logging.getLogger(__name__)


class GoogleRuntime:
    """Save-link signing and callback handling for one issuer."""

    def __init__(self, ctx: WebContext, google: GoogleWebConfig) -> None:
        self.ctx = ctx
        self.config = google
        self.settings = GoogleSettings(
            issuer_id=google.issuer_id,
            image_base_url=ctx.config.image_base_url,
            callback_url=ctx.config.google_callback_url if google.callbacks else None,
            country_code=google.country_code,
        )
        self.signer = (
            SaveLinkSigner(google.service_account, origins=google.origins)
            if google.service_account is not None
            else None
        )
        options = dict(google.callback_options)
        # One nonce store per app: Google retries deliveries, a retry must not count twice.
        options.setdefault("nonce_store", MemoryNonceStore())
        self._callback_options = options
        self._client: Any = google.wallet_client
        self._owns_client = False

    def routes(self) -> list[Route]:
        if not self.config.callbacks:
            return []
        return [Route(GOOGLE_CALLBACK_PATH, self.callback, methods=["POST"])]

    def save_link(self, template: CardTemplate, card: Card) -> str:
        """A "Save to Google Wallet" link for ``card`` (class included when it fits)."""
        return self._link(template, card)[0].url

    def _link(self, template: CardTemplate, card: Card) -> tuple[SaveLink, Resource, Resource]:
        if self.signer is None:
            raise GoogleConfigError("no Google service account configured")
        obj = build_loyalty_object(template, card, self.settings)
        cls = build_loyalty_class(template, self.settings)
        return self.signer.link(obj, loyalty_class=cls), obj, cls

    async def save_destination(self, template: CardTemplate, card: Card) -> str:
        """Where the card page's Save button sends the holder.

        A full link carries the object itself. A skinny one (the object was too large for a
        link) only names it, so the object must exist at Google first: it is inserted here,
        once, and remembered in the store (later changes reach Google by PATCH).
        """
        link, obj, cls = self._link(template, card)
        if link.skinny and await self.ctx.service.google_object(card.serial) is None:
            await self.wallet_client().upsert_object(obj, loyalty_class=cls)
            await self.ctx.service.save_google_object(
                card.serial, str(obj["id"]), str(obj["classId"]), str(obj["state"]),
                synced_at=datetime.now(UTC),
            )  # fmt: skip
        return link.url

    def wallet_client(self) -> WalletClient:
        """The REST client (made from the service account on first use)."""
        if self._client is None:
            if self.config.service_account is None:
                raise GoogleConfigError("inserting objects needs a Google service account")
            account = self.config.service_account
            base_url = self.config.api_base_url
            self._client = (
                WalletClient(account, base_url=base_url) if base_url else WalletClient(account)
            )
            self._owns_client = True
        return cast(WalletClient, self._client)

    async def aclose(self) -> None:
        """Close the REST client if the app made it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def serial_of(self, object_id: str) -> str | None:
        """The card serial behind one of our object ids (None for another issuer's id)."""
        prefix = self.settings.issuer_id + "."
        if not object_id.startswith(prefix):
            return None
        try:
            serial = ids.unescape(object_id[len(prefix) :])
        except ValueError:
            return None
        try:
            return rq.serial_number(serial)
        except RequestError:
            return None

    async def callback(self, request: Request) -> Response:
        body = await rq.read_body(
            request.stream(),
            rq.MAX_CALLBACK_BODY,
            content_length=request.headers.get("content-length"),
        )
        try:
            message = await self._verify(body)
        except CallbackReplayError:
            return Response(status_code=200)  # a retry of what we already recorded
        except CallbackBusyError:  # a flood: nothing was verified, Google retries later
            return Response(status_code=429, headers={"Retry-After": "1"})
        except CallbackVerificationError as exc:
            # The reason may quote the sender's values (repr, so one line): bound what is logged.
            reason = str(exc)
            logger.warning("refused a Google callback: %s", reason[:200])
            return Response(f"{reason[:1000]}\n", status_code=400, media_type="text/plain")
        serial = self.serial_of(message.object_id)
        if serial is None:
            logger.warning("Google callback for an unknown object id %r", message.object_id[:200])
            return Response(status_code=200)
        added = message.event_type is CallbackEventType.SAVE
        try:
            await self.ctx.service.record_platform(serial, Platform.GOOGLE, added)
        except NotFoundError:  # the card was deleted meanwhile: nothing to record
            logger.info("Google callback for deleted card %s", serial)
        return Response(status_code=200)

    async def _verify(self, body: bytes) -> CallbackEvent:
        return await verify_callback(body, self.settings.issuer_id, **self._callback_options)
