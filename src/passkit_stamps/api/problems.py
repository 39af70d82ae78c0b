"""Library errors as RFC 9457 problem details: a stable ``type`` URI and an HTTP status per
error class (the most specific class in the hierarchy that is listed here wins). Never a 5xx:
every library error is the caller's to act on (or, for a store conflict, to retry)."""

from __future__ import annotations

import math
import re

from pydantic import ValidationError
from starlette.responses import Response

from .. import errors as e
from .models import InvalidField, Problem

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Problem type URIs are URNs: stable names, not pages to fetch (docs/merchant.md lists them).
TYPE_PREFIX = "urn:passkit-stamps:problem:"

#: (error class, status, title). Looked up along the raised error's MRO.
_STATUSES: tuple[tuple[type[e.PasskitStampsError], int, str], ...] = (
    (e.ApiKeyError, 401, "API key refused"),
    (e.ApiPermissionError, 403, "Not allowed for this key's role"),
    (e.ApiRateLimitError, 429, "Too many requests"),
    (e.RequestTooLargeError, 413, "Request body too large"),
    (e.RequestError, 400, "Malformed request"),
    (e.CardNotFoundError, 404, "Card not found"),
    (e.TemplateNotFoundError, 404, "Template not found"),
    (e.ApiKeyNotFoundError, 404, "API key not found"),
    (e.NotFoundError, 404, "Not found"),
    (e.CardInputError, 422, "Invalid card input"),
    (e.InvalidStampCountError, 422, "Invalid stamp count"),
    (e.ApiKeyInputError, 422, "Invalid API key input"),
    (e.TemplateError, 422, "Invalid template"),
    (e.TextTemplateError, 422, "Text template failed"),
    (e.StampLimitError, 409, "Stamp limit"),
    (e.CardInactiveError, 409, "Card inactive"),
    (e.VoucherError, 409, "Voucher cannot be redeemed"),
    (e.CardError, 409, "Card operation refused"),
    (e.IdempotencyConflictError, 409, "Idempotency key conflict"),
    (e.RegistrationLimitError, 409, "Registration limit"),
    (e.StoreError, 409, "Store conflict, retry"),
    (e.PasskitStampsError, 400, "Request refused"),
)
_BY_CLASS = {cls: (status, title) for cls, status, title in _STATUSES}

#: The type of a request that failed its body/query/header schema.
INVALID_INPUT = TYPE_PREFIX + "invalid-input"


def problem_type(cls: type[BaseException]) -> str:
    """The stable type URI of a library error class: its name in kebab case, less ``-error``
    (``CardNotFoundError`` -> ``urn:passkit-stamps:problem:card-not-found``)."""
    words = re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__.removesuffix("Error")).lower()
    return TYPE_PREFIX + words


def status_of(exc: e.PasskitStampsError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        found = _BY_CLASS.get(cls)
        if found is not None:
            return found
    return 400, "Request refused"  # pragma: no cover - PasskitStampsError is listed


def problem_types() -> list[tuple[str, int, str]]:
    """(type URI, status, title) of every mapped error, for the docs and the tests."""
    return [(problem_type(cls), status, title) for cls, status, title in _STATUSES]


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem.model_dump_json(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def error_response(exc: e.PasskitStampsError) -> Response:
    status, title = status_of(exc)
    detail = " ".join(str(exc).split())[:1000] or title
    errors = None
    problems = getattr(exc, "problems", ())
    if problems:
        errors = [InvalidField(field=p.place, rule=p.message) for p in problems[:50]]
    headers: dict[str, str] = {}
    if isinstance(exc, e.ApiKeyError):
        headers["WWW-Authenticate"] = 'Bearer realm="passkit-stamps"'
    if isinstance(exc, e.ApiRateLimitError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    problem = Problem(
        type=problem_type(type(exc)), title=title, status=status, detail=detail, errors=errors
    )
    return problem_response(problem, headers)


def validation_response(exc: ValidationError, where: str) -> Response:
    """A body, query or header that failed its schema: 422 naming each field and rule."""
    fields = []
    for err in exc.errors(include_url=False, include_input=False)[:50]:
        loc = ".".join(str(p) for p in (where, *err["loc"]))
        fields.append(InvalidField(field=loc, rule=err["msg"]))
    names = ", ".join(f.field for f in fields[:5])
    problem = Problem(
        type=INVALID_INPUT,
        title="Invalid input",
        status=422,
        detail=f"invalid {where}: {names}",
        errors=fields,
    )
    return problem_response(problem)
