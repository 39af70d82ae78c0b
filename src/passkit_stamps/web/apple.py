"""Apple's pass web service, exactly as Wallet speaks it (paths relative to ``webServiceURL``).

=======  ===============================================================  ====================
POST     /v1/devices/{device}/registrations/{passType}/{serial}            201 new, 200 known
DELETE   /v1/devices/{device}/registrations/{passType}/{serial}            200
GET      /v1/devices/{device}/registrations/{passType}?passesUpdatedSince  200 list, 204 none
GET/HEAD /v1/passes/{passType}/{serial}                                     200 pass, 304
POST     /v1/log                                                            200
=======  ===============================================================  ====================

Authentication is ``Authorization: ApplePass <authenticationToken>`` (not on the list and log
endpoints). An unknown serial answers exactly like a wrong token (401), and costs the same: the
service reads a stand-in card at the same cost (``StampService.pass_state``) and the token is
compared against a dummy token of a real token's length (benchmarks/bench_oracle.py measures
it). A pass type other than the configured certificate's is 404.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..apple.media import PKPASS_MIME_TYPE
from ..engine import new_token
from ..errors import CardNotFoundError, RegistrationLimitError
from ..service.results import PassState
from . import requests as rq
from .context import WebContext

_UNAUTHORIZED = 401
_FORBIDDEN = 403
_NOT_FOUND = 404


def _empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


class AppleWebService:
    """The pass web service's endpoints over one :class:`WebContext`."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.pass_type_identifier = ctx.credentials.pass_type_identifier
        # Compared against when the serial is unknown, so both cases cost one comparison of
        # the same length (compare_digest's time depends on the lengths).
        self._dummy_token = new_token()

    def routes(self) -> list[Route]:
        registration = "/v1/devices/{device}/registrations/{pass_type}/{serial}"
        return [
            Route(registration, self.register, methods=["POST"]),
            Route(registration, self.unregister, methods=["DELETE"]),
            Route("/v1/devices/{device}/registrations/{pass_type}", self.serials, methods=["GET"]),
            Route("/v1/passes/{pass_type}/{serial}", self.latest_pass, methods=["GET", "HEAD"]),
            Route("/v1/log", self.log, methods=["POST"]),
        ]

    # -- shared checks ------------------------------------------------------------------------

    def _known_pass_type(self, request: Request) -> bool:
        value = request.path_params["pass_type"]
        return rq.is_pass_type_identifier(value) and value == self.pass_type_identifier

    async def _authorized(self, request: Request, serial: str) -> PassState | None:
        """The pass's state when the request carries its token; None otherwise (401)."""
        token = rq.apple_pass_token(request.headers.get("authorization"))
        state = await self.ctx.service.pass_state(serial)
        expected = state.authentication_token if state else self._dummy_token
        given = token if token is not None else ""
        if not rq.tokens_equal(expected, given) or state is None or token is None:
            return None
        return state

    # -- registrations ------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        device = rq.device_library_identifier(request.path_params["device"])
        if not self._known_pass_type(request):
            return _empty(_NOT_FOUND)
        serial = rq.serial_number(request.path_params["serial"])
        body = await rq.read_body(
            request.stream(),
            rq.MAX_REGISTER_BODY,
            content_length=request.headers.get("content-length"),
        )
        if await self._authorized(request, serial) is None:
            return _empty(_UNAUTHORIZED)
        push_token = rq.register_push_token(body)
        try:
            # New registrations journal pass_added (apple) in the same transaction.
            created = await self.ctx.service.register_device(
                device, push_token, self.pass_type_identifier, serial
            )
        except CardNotFoundError:  # a deleted card: still served (voided), not registrable
            return _empty(_UNAUTHORIZED)
        except RegistrationLimitError:
            # 403: the token was right and the server refuses one more device (Apple lists
            # only 200/201/401 here; Wallet takes any other status as a failed registration).
            # 401 would point whoever reads the device log at the token; 429 is for rates.
            return _empty(_FORBIDDEN)
        return _empty(201 if created else 200)

    async def unregister(self, request: Request) -> Response:
        device = rq.device_library_identifier(request.path_params["device"])
        if not self._known_pass_type(request):
            return _empty(_NOT_FOUND)
        serial = rq.serial_number(request.path_params["serial"])
        if await self._authorized(request, serial) is None:
            return _empty(_UNAUTHORIZED)
        # The last registration of a card journals pass_removed (apple); a device without
        # registrations is deleted.
        await self.ctx.service.unregister_device(device, self.pass_type_identifier, serial)
        return _empty(200)

    async def serials(self, request: Request) -> Response:
        device = rq.device_library_identifier(request.path_params["device"])
        if not self._known_pass_type(request):
            return _empty(_NOT_FOUND)
        since = rq.updated_since_tag(request.query_params.get("passesUpdatedSince"))
        updated = await self.ctx.service.serials_updated_since(
            device, self.pass_type_identifier, since
        )
        if not updated.serials:
            return _empty(204)
        # lastUpdated must be a string: an integer makes devices ignore the answer.
        return JSONResponse(
            {"serialNumbers": list(updated.serials), "lastUpdated": str(updated.last_updated)}
        )

    # -- the pass -----------------------------------------------------------------------------

    async def latest_pass(self, request: Request) -> Response:
        if not self._known_pass_type(request):
            return _empty(_NOT_FOUND)
        serial = rq.serial_number(request.path_params["serial"])
        now = datetime.now(UTC)  # before the read: see requests.last_modified
        state = await self._authorized(request, serial)
        if state is None:
            return _empty(_UNAUTHORIZED)
        headers = {
            "Last-Modified": rq.last_modified(state.last_modified, now),
            # The device must ask every time; the 304 keeps that cheap.
            "Cache-Control": "no-cache",
        }
        since = rq.if_modified_since(request.headers.get("if-modified-since"))
        if rq.not_modified(state.last_modified, since):
            return _empty(304, headers)
        # With the device's If-Modified-Since, a notified change it has not fetched keeps its
        # changeMessage even when silent changes followed. The signed-pass cache is keyed by
        # the content, changeMessage included, so the two variants are cached apart.
        found = await self.ctx.service.card_for_pass(
            self.pass_type_identifier, serial, held_since=since
        )
        if found is None:  # deleted between the two reads
            return _empty(_UNAUTHORIZED)
        headers["Last-Modified"] = rq.last_modified(found.last_modified, now)
        data = await run_in_threadpool(
            self.ctx.builder.build, found.template, found.card, notify=found.notified
        )
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(b"", headers=headers, media_type=PKPASS_MIME_TYPE)
        return Response(data, headers=headers, media_type=PKPASS_MIME_TYPE)

    # -- the device log -----------------------------------------------------------------------

    async def log(self, request: Request) -> Response:
        body = await rq.read_body(
            request.stream(), rq.MAX_LOG_BODY, content_length=request.headers.get("content-length")
        )
        messages = rq.log_messages(body)
        client = request.client.host if request.client else None
        self.ctx.device_log.add(messages, at=datetime.now(UTC), client=client)
        return _empty(200)
