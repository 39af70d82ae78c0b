"""``create_api``: the till and back-office JSON API, a mountable Starlette app.

Every operation is one row of :data:`OPERATIONS`-building :meth:`TillApi.operations`: method,
path, role, the pydantic types of its query, body and answer, and its handler. The routes AND the
OpenAPI document (:mod:`.openapi`) are made from that table, so they cannot drift apart.

Each request: the client address's budget of refused keys (429 with Retry-After, before the key
is looked at), the API key (``Authorization: Bearer pks_...``; 401, spending that budget), the
key's rate (429 with Retry-After), its role (403), the query and headers (422), the body (413
while reading past the limit, 400 when not JSON, 422 against its type), then one service call
with the key as the journal's actor. Library errors are RFC 9457 problems (:mod:`.problems`).

Answers are serialised from plain dicts by their model's schema (:func:`.models.wire`), and a
JSON body is parsed and validated in one pass (pydantic's parser; the bounded parser of
:mod:`passkit_stamps._boundedjson` only to say why a body was refused).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .. import _boundedjson as boundedjson
from ..errors import (
    ApiKeyError,
    ApiPermissionError,
    ApiRateLimitError,
    NotFoundError,
    PasskitStampsError,
    RequestError,
    RequestTooLargeError,
)
from ..model import Card, Holder
from ..service.apikeys import ApiKey, ApiRole
from ..web.asgiguard import RequestGuard
from ..web.requests import check_content_length
from . import models as m
from .config import ApiConfig
from .models import Problem
from .openapi import build_document
from .problems import error_response, problem_response, problem_type, validation_response
from .ratelimit import KeyFailureLimiter, KeyRateLimiter, address_key

if TYPE_CHECKING:
    from ..service import CardDetails, Change, JournalEntry, StampService

__all__ = ["ApiConfig", "Call", "Endpoint", "Operation", "TillApi", "create_api"]

OPENAPI_PATH = "/openapi.json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_AUTHORIZATION = 256
#: The request headers the API reads, by their names as ASGI gives them.
_AUTHORIZATION = b"authorization"
_CONTENT_LENGTH = b"content-length"
_IDEMPOTENCY_KEY = IDEMPOTENCY_HEADER.lower().encode()
_READ_HEADERS = frozenset((_AUTHORIZATION, _CONTENT_LENGTH, _IDEMPOTENCY_KEY))


@dataclass
class Call:
    """One authenticated request, parsed: what a handler gets."""

    request: Request
    key: ApiKey
    query: Any = None
    body: Any = None
    idempotency_key: str | None = None

    @property
    def serial(self) -> str:
        return str(self.request.path_params["serial"])


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One API operation: the row both the route and the OpenAPI document are made from."""

    operation_id: str
    method: str
    path: str
    summary: str
    role: ApiRole
    handler: Handler
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    #: The answer's type; None: a CSV stream.
    response: type[BaseModel] | None = None
    status: int = 200
    idempotent: bool = False
    tags: tuple[str, ...] = field(default=("cards",))


class TillApi:
    """The handlers, bound to a service and a configuration."""

    def __init__(
        self,
        service: StampService,
        config: ApiConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.config = config
        self.limiter = KeyRateLimiter(config.rate, config.burst, clock=clock)
        self.failures = KeyFailureLimiter(
            config.key_failures, config.key_failure_window, clock=clock
        )
        self._documents: dict[str, bytes] = {}

    # -- the table ------------------------------------------------------------------------------

    def operations(self) -> list[Operation]:
        staff, manager = ApiRole.STAFF, ApiRole.MANAGER
        return [
            Operation("issueCard", "POST", "/cards", "Issue a card", manager, self.issue,
                      body=m.IssueRequest, response=m.ChangeOut, status=201, idempotent=True),
            Operation("listCards", "GET", "/cards", "Search and list cards", manager,
                      self.list_cards, query=m.CardsQuery, response=m.CardPageOut),
            Operation("getCard", "GET", "/cards/{serial}", "Look up a card by serial", staff,
                      self.get_card, response=m.CardDetailsOut),
            Operation("findCardByBarcode", "GET", "/barcode",
                      "Look up a card by the scanned barcode of its pass", staff,
                      self.find_by_barcode, query=m.BarcodeQuery, response=m.CardDetailsOut),
            Operation("addStamps", "POST", "/cards/{serial}/stamps", "Stamp (add stamps)",
                      staff, self.add_stamps, body=m.StampRequest, body_required=False,
                      response=m.ChangeOut, idempotent=True),
            Operation("setStamps", "PUT", "/cards/{serial}/stamps", "Set the stamp count",
                      manager, self.set_stamps, body=m.SetStampsRequest, response=m.ChangeOut,
                      idempotent=True),
            Operation("redeemVoucher", "POST", "/vouchers/redeem",
                      "Redeem a voucher by its scanned code", staff, self.redeem,
                      body=m.RedeemRequest, response=m.ChangeOut, idempotent=True,
                      tags=("vouchers",)),
            Operation("issueCoupon", "POST", "/cards/{serial}/coupons", "Issue a coupon",
                      manager, self.issue_coupon, body=m.CouponRequest, response=m.ChangeOut,
                      idempotent=True),
            Operation("sendMessage", "POST", "/cards/{serial}/message",
                      "Put a message on the card and notify the holder", manager,
                      self.send_message, body=m.MessageRequest, response=m.ChangeOut,
                      idempotent=True),
            Operation("updateHolder", "PUT", "/cards/{serial}/holder",
                      "Replace the holder's details", manager, self.update_holder, body=Holder,
                      response=m.ChangeOut),
            Operation("voidCard", "POST", "/cards/{serial}/void", "Void the card", manager,
                      self.void, response=m.ChangeOut, idempotent=True),
            Operation("deleteCard", "DELETE", "/cards/{serial}",
                      "Delete the card (voided, holder erased; the journal stays)", manager,
                      self.delete, response=m.ChangeOut, idempotent=True),
            Operation("cardHistory", "GET", "/cards/{serial}/history", "The card's journal",
                      manager, self.history, response=m.HistoryOut),
            Operation("journal", "GET", "/journal", "The journal (Card Events)", manager,
                      self.journal, query=m.JournalQuery, response=m.JournalPageOut,
                      tags=("journal",)),
            Operation("broadcastDryRun", "POST", "/broadcasts/dry-run",
                      "What a broadcast would reach (sends nothing)", manager,
                      self.broadcast_dry_run, body=m.BroadcastRequest,
                      response=m.BroadcastReachOut, tags=("broadcasts",)),
            Operation("broadcast", "POST", "/broadcasts", "Send a broadcast", manager,
                      self.broadcast, body=m.BroadcastRequest, response=m.CampaignOut,
                      status=201, tags=("broadcasts",)),
            Operation("broadcastReport", "GET", "/broadcasts/{campaign_id}",
                      "A broadcast's report", manager, self.broadcast_report,
                      response=m.CampaignOut, tags=("broadcasts",)),
            Operation("exportCsv", "GET", "/export.csv", "The customer export (CSV, streamed)",
                      manager, self.export_csv, query=m.ExportQuery, response=None,
                      tags=("export",)),
        ]  # fmt: skip

    def routes(self) -> list[BaseRoute]:
        by_path: dict[str, dict[str, Operation]] = {}
        # The router tries the paths in order (no two overlap): the stamp first, then the rest
        # of a till's operations, then the back office's, the document last.
        hot = ("addStamps", "redeemVoucher", "getCard", "findCardByBarcode")
        for op in sorted(
            self.operations(),
            key=lambda op: hot.index(op.operation_id) if op.operation_id in hot else len(hot),
        ):
            by_path.setdefault(op.path, {})[op.method] = op
        routes: list[BaseRoute] = [
            Route(path, Endpoint(self, ops), methods=list(ops)) for path, ops in by_path.items()
        ]
        routes.append(Route(OPENAPI_PATH, self.openapi, methods=["GET"]))
        return routes

    # -- the request pipeline ------------------------------------------------------------------

    async def _run(self, op: Operation, request: Request) -> Response:
        headers = _request_headers(request.scope)
        client = request.scope.get("client")
        address = address_key(client[0] if client else None)
        wait = self.failures.wait(address)
        if wait:
            raise ApiRateLimitError(
                "too many refused API keys from this address: try again later",
                retry_after=wait,
            )
        try:
            key = await self._authenticate(headers.get(_AUTHORIZATION))
        except ApiKeyError:
            self.failures.failed(address)
            raise
        wait = self.limiter.take(key.id)
        if wait:
            raise ApiRateLimitError(
                f"API key {key.id} is over {self.config.rate:g} requests a second",
                retry_after=wait,
            )
        if op.role is ApiRole.MANAGER and key.role is not ApiRole.MANAGER:
            raise ApiPermissionError(f"{op.operation_id} needs a manager key")
        call = Call(request=request, key=key)
        if op.query is not None:
            try:
                call.query = op.query.model_validate(_query_values(request, op.query))
            except ValidationError as exc:
                return validation_response(exc, "query")
        elif request.scope.get("query_string"):
            raise RequestError(f"{op.operation_id} takes no query parameters")
        if op.idempotent:
            call.idempotency_key = headers.get(_IDEMPOTENCY_KEY)
        if op.body is not None:
            raw = await _read_body(
                request.receive, self.config.max_body, headers.get(_CONTENT_LENGTH)
            )
            call.body = _parse_body(op.body, raw, required=op.body_required)
            if isinstance(call.body, Response):
                return call.body
        return await op.handler(call)

    async def _authenticate(self, header: str | None) -> ApiKey:
        if header is None or len(header) > _MAX_AUTHORIZATION:
            raise ApiKeyError("an API key is required: Authorization: Bearer <key>")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiKeyError("an API key is required: Authorization: Bearer <key>")
        return await self.service.authenticate_api_key(token.strip())

    # -- answers --------------------------------------------------------------------------------

    def _urls(self, serial: str) -> tuple[str | None, str | None]:
        web = self.config.web
        if web is None:
            return None, None
        page = web.card_page_url(serial)
        return page, page + "/pass.pkpass"

    def _card(self, card: Card, *, live: bool = True) -> dict[str, Any]:
        page, pkpass = self._urls(card.serial) if live else (None, None)
        return {
            "serial": card.serial,
            "template_id": card.template_id,
            "template_version": card.template_version,
            "state": card.state,
            "stamps": card.stamps,
            "rounds_completed": card.rounds_completed,
            "holder": card.holder,
            "vouchers": list(card.vouchers),
            "message": card.message,
            "language": card.language,
            "created_at": card.created_at,
            "last_stamp_at": card.last_stamp_at,
            "expires_at": card.expires_at,
            "card_page_url": page,
            "pass_url": pkpass,
        }

    def _details(self, details: CardDetails) -> Response:
        p = details.progress
        out = self._card(details.card)
        out.update(
            template_name=details.template.name,
            required=p.required,
            remaining=p.remaining,
            current_reward=details.current_reward,
            next_reward=details.next_reward,
            platforms=sorted(details.platforms),
        )
        return _answer(m.CardDetailsOut, out)

    def _change(self, change: Change, *, status: int = 200, live: bool = True) -> Response:
        # The answer of every stamp: a dict serialised by ChangeOut's schema (models.wire).
        out = {
            "card": self._card(change.card, live=live),
            "events": [_event(e) for e in change.events],
            "notified": change.notified,
            "replayed": change.replayed,
        }
        return _answer(m.ChangeOut, out, status=status)

    # -- handlers -------------------------------------------------------------------------------

    async def issue(self, call: Call) -> Response:
        body: m.IssueRequest = call.body
        change = await self.service.issue_card(
            body.template_id,
            body.holder,
            version=body.version,
            serial=body.serial,
            language=body.language,
            idempotency_key=call.idempotency_key,
            actor=call.key.actor,
        )
        return self._change(change, status=201)

    async def list_cards(self, call: Call) -> Response:
        q: m.CardsQuery = call.query
        page = await self.service.list_cards(
            search=q.search,
            template_id=q.template,
            template_version=q.version,
            platform=q.platform,
            state=q.state,
            min_stamps=q.min_stamps,
            max_stamps=q.max_stamps,
            has_vouchers_ready=q.vouchers_ready,
            sort=q.sort,
            offset=q.offset,
            limit=q.limit,
            count_limit=10_000,
            cursor=q.cursor,
        )
        out = m.CardPageOut(
            items=[
                m.CardSummaryOut(
                    serial=s.serial,
                    holder=s.holder,
                    template_id=s.template_id,
                    template_version=s.template_version,
                    template_name=s.template_name,
                    stamps=s.stamps,
                    required=s.required,
                    state=s.state,
                    platforms=sorted(s.platforms),
                    created_at=s.created_at,
                    last_stamp_at=s.last_stamp_at,
                    vouchers_ready=s.vouchers_ready,
                )
                for s in page.items
            ],
            total=page.total,
            total_exact=page.total_exact,
            offset=page.offset,
            limit=page.limit,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
        return _json(out)

    async def get_card(self, call: Call) -> Response:
        return self._details(await self.service.get_card(call.serial))

    async def find_by_barcode(self, call: Call) -> Response:
        q: m.BarcodeQuery = call.query
        return self._details(await self.service.find_card_by_barcode(q.message))

    async def add_stamps(self, call: Call) -> Response:
        body: m.StampRequest = call.body
        change = await self.service.add_stamps(
            call.serial,
            body.count,
            code=body.code,
            idempotency_key=call.idempotency_key,
            actor=call.key.actor,
        )
        return self._change(change)

    async def set_stamps(self, call: Call) -> Response:
        body: m.SetStampsRequest = call.body
        change = await self.service.set_stamps(
            call.serial,
            body.stamps,
            code=body.code,
            idempotency_key=call.idempotency_key,
            actor=call.key.actor,
        )
        return self._change(change)

    async def redeem(self, call: Call) -> Response:
        body: m.RedeemRequest = call.body
        change = await self.service.redeem_voucher_by_code(
            body.code,
            serial=body.serial,
            idempotency_key=call.idempotency_key,
            actor=call.key.actor,
        )
        return self._change(change)

    async def issue_coupon(self, call: Call) -> Response:
        body: m.CouponRequest = call.body
        change = await self.service.issue_coupon(
            call.serial,
            body.title,
            description=body.description,
            idempotency_key=call.idempotency_key,
            actor=call.key.actor,
        )
        return self._change(change)

    async def send_message(self, call: Call) -> Response:
        body: m.MessageRequest = call.body
        change = await self.service.send_message(
            call.serial, body.text, idempotency_key=call.idempotency_key, actor=call.key.actor
        )
        return self._change(change)

    async def update_holder(self, call: Call) -> Response:
        change = await self.service.update_holder(call.serial, call.body, actor=call.key.actor)
        return self._change(change)

    async def void(self, call: Call) -> Response:
        change = await self.service.void_card(
            call.serial, idempotency_key=call.idempotency_key, actor=call.key.actor
        )
        return self._change(change)

    async def delete(self, call: Call) -> Response:
        change = await self.service.delete_card(
            call.serial, idempotency_key=call.idempotency_key, actor=call.key.actor
        )
        return self._change(change, live=False)

    async def history(self, call: Call) -> Response:
        found = await self.service.card_history(call.serial)
        return _answer(m.HistoryOut, {"items": [_event(e) for e in found]})

    async def journal(self, call: Call) -> Response:
        q: m.JournalQuery = call.query
        page = await self.service.journal(
            types=q.type,
            template_id=q.template,
            serial=q.serial,
            since=q.since,
            until=q.until,
            offset=q.offset,
            limit=q.limit,
            newest_first=q.order == "newest",
        )
        out = {
            "items": [_event(e) for e in page.items],
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
            "has_more": page.has_more,
        }
        return _answer(m.JournalPageOut, out)

    async def _broadcast(self, call: Call, *, dry_run: bool) -> Any:
        body: m.BroadcastRequest = call.body
        return await self.service.broadcast(
            body.message,
            search=body.search,
            template_id=body.template,
            template_version=body.version,
            platform=body.platform,
            state=body.state,
            min_stamps=body.min_stamps,
            max_stamps=body.max_stamps,
            has_vouchers_ready=body.vouchers_ready,
            dry_run=dry_run,
            actor=call.key.actor,
        )

    async def broadcast_dry_run(self, call: Call) -> Response:
        reach = await self._broadcast(call, dry_run=True)
        return _json(m.BroadcastReachOut.model_validate(reach, from_attributes=True))

    async def broadcast(self, call: Call) -> Response:
        return _campaign(await self._broadcast(call, dry_run=False), status=201)

    async def broadcast_report(self, call: Call) -> Response:
        raw = str(call.request.path_params["campaign_id"])
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise NotFoundError(f"no broadcast {raw!r:.40}")
        return _campaign(await self.service.campaign_report(int(raw)))

    async def export_csv(self, call: Call) -> Response:
        q: m.ExportQuery = call.query
        chunks = self.service.export_csv(template_id=q.template, state=q.state, bom=q.bom)
        # The first chunk is taken here: a refused filter is a problem answer, not a broken
        # stream (the header row comes after the filter is checked).
        first = await chunks.__anext__()

        async def body() -> AsyncIterator[bytes]:
            yield first.encode()
            async for chunk in chunks:
                yield chunk.encode()

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="cards.csv"',
                "Cache-Control": "no-store",
            },
        )

    async def openapi(self, request: Request) -> Response:
        root = str(request.scope.get("root_path", ""))
        document = self._documents.get(root)
        if document is None:
            document = build_document(self.operations(), server=root or None)
            self._documents[root] = document
        return Response(document, media_type="application/json")


class Endpoint:
    """The operations of one path, by method, as an ASGI app.

    An ASGI app rather than a request -> response function: Starlette's ``Route`` calls it as
    it is, without wrapping each request in a second exception handler (the app's own
    ``ExceptionMiddleware`` has the same handlers), which saves every stamp a few coroutines
    and closures."""

    def __init__(self, api: TillApi, ops: dict[str, Operation]) -> None:
        self.api = api
        self.ops = ops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        op = self.ops.get(method) or self.ops.get("GET" if method == "HEAD" else "")
        if op is None:  # pragma: no cover - Starlette answers 405 first
            raise HTTPException(405)
        response: Response
        try:
            response = await self.api._run(op, Request(scope, receive, send))
        except ValidationError as exc:  # pragma: no cover - parsed per part in _run
            response = validation_response(exc, "request")
        except PasskitStampsError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def _event(e: JournalEntry) -> dict[str, Any]:
    """An EventOut, as the dict :func:`_answer` serialises."""
    return {
        "id": e.id,
        "type": e.type,
        "at": e.at,
        "serial": e.serial,
        "template_id": e.template_id,
        "template_version": e.template_version,
        "template_name": e.template_name,
        "stamps": e.stamps,
        "required": e.required,
        "code": e.code,
        "reward": e.reward,
        "voucher_code": e.voucher_code,
        "data": dict(e.data),
        "actor": e.actor,
        "holder_name": e.holder_name,
        "holder_email": e.holder_email,
    }


def _campaign(report: Any, *, status: int = 200) -> Response:
    out = m.CampaignOut(
        id=report.id,
        message=report.message,
        state=report.state,
        cards=report.cards,
        notified=report.notified,
        silent=report.silent,
        created_at=report.created_at,
        finished_at=report.finished_at,
        actor=report.actor,
        platforms=[
            m.PlatformReportOut.model_validate(p, from_attributes=True) for p in report.platforms
        ],
    )
    return _json(out, status=status)


class JSONAnswer(Response):
    """A JSON answer whose body is already serialised: its two headers are set as they are
    (Starlette's ``init_headers`` looks for given ones first and builds them each call)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]


def _json(model: BaseModel, *, status: int = 200) -> Response:
    return JSONAnswer(model.model_dump_json().encode(), status)


def _answer(model: type[BaseModel], data: dict[str, Any], *, status: int = 200) -> Response:
    """``data`` (``model``'s fields) as ``model``'s JSON, without building the model."""
    body = m.wire(model).serializer.to_json(data)  # dump_json's defaults, without its wrapper
    return JSONAnswer(body, status)


def _request_headers(scope: Scope) -> dict[bytes, str]:
    """The headers the API reads, each its first value (as Starlette's ``Headers.get``), taken
    in one pass over the request's headers: a look-up per header scans them all each time.
    ASGI servers give header names in lower case."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _READ_HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read_body(receive: Receive, limit: int, content_length: str | None) -> bytes:
    """The request body, refused past ``limit`` bytes as :func:`..web.requests.read_body` does
    (when declared, or at the chunk that passes it: nothing beyond is kept), read from the
    ASGI messages as ``Request.stream()`` does but without its generator: a body that comes in
    one message, as a till's does, is taken as it is."""
    check_content_length(content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)  # one chunk: that very object, no copy
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _parse_body(model: type[BaseModel], raw: bytes, *, required: bool) -> Any:
    """The body as ``model``, or the 422 answer; RequestError when it is not a JSON object.

    One pass through pydantic's JSON parser, which is bounded too (nesting, and no request
    model holds deep or free-form values); only a refused body is parsed again, by the bounded
    parser, to tell malformed JSON (400) from a value that breaks its field's rule (422)."""
    if raw.strip():
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    data = _json_object(raw, required=required)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return validation_response(exc, "body")


def _query_values(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in request.query_params:
        info = model.model_fields.get(name)
        many = info is not None and "list" in str(info.annotation)
        values[name] = (
            request.query_params.getlist(name) if many else request.query_params.get(name)
        )
    return values


def _json_object(raw: bytes, *, required: bool) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise RequestError("a JSON object body is required")
        return {}
    try:
        value = boundedjson.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("request body is not UTF-8") from None
    except boundedjson.JSONLimitError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    except ValueError:
        raise RequestError("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise RequestError("request body must be a JSON object")
    return value


async def _http_problem(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as problems too (the document promises problem+json)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    title = {404: "Not found", 405: "Method not allowed"}.get(status, "Request refused")
    kind = problem_type(type("NotFoundError" if status == 404 else "RequestError", (), {}))
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return problem_response(
        Problem(type=kind, title=title, status=status, detail=title), headers=headers
    )


async def _library_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PasskitStampsError):
        return error_response(exc)
    raise exc  # pragma: no cover


def create_api(
    service: StampService,
    config: ApiConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The API app for ``service``. Mount it anywhere (``Mount("/api", app=create_api(...))``);
    its OpenAPI document is at ``<mount>/openapi.json``. ``clock``: the rate limits' seconds."""
    api = TillApi(service, config if config is not None else ApiConfig(), clock=clock)
    app = Starlette(
        routes=api.routes(),
        exception_handlers={HTTPException: _http_problem, PasskitStampsError: _library_error},
        middleware=[Middleware(RequestGuard)],
    )
    app.state.passkit_stamps_api = api
    return app
