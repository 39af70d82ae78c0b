"""The OpenAPI 3.1 document, built from the operation table and the pydantic types the handlers
use (JSON Schema 2020-12, which OpenAPI 3.1 takes as is)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..model import SERIAL_PATTERN
from .models import Problem
from .problems import PROBLEM_MEDIA_TYPE

if TYPE_CHECKING:
    from .app import Operation

API_VERSION = "1"
_REF = "#/components/schemas/{model}"

#: Which problem statuses each kind of operation can answer.
_ALWAYS = (400, 401, 403, 422, 429)


def _problem_statuses(op: Operation) -> list[int]:
    statuses = set(_ALWAYS)
    if "{" in op.path or op.body is not None or op.query is not None:
        statuses.add(404)
    if op.body is not None:
        statuses.add(413)
    if op.method != "GET":
        statuses.update((404, 409))
    if op.response is None:  # the export's filter names a template
        statuses.add(404)
    return sorted(statuses)


def _strip_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value: never JSON null."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            schema = merged
    if schema.get("default") is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def build_document(operations: Sequence[Operation], *, server: str | None = None) -> bytes:
    """The document as JSON bytes (built once per mount point and cached by the app)."""
    Mode = Literal["validation", "serialization"]
    models: list[tuple[type[BaseModel], Mode]] = [(Problem, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.query is not None:
            models.append((op.query, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    keyed, top = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(keyed[(model, mode)])  # type: ignore[index]

    problem_content = {PROBLEM_MEDIA_TYPE: {"schema": ref(Problem, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters: list[dict[str, Any]] = []
        if "{serial}" in op.path:
            parameters.append(
                {
                    "name": "serial",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": f"^{SERIAL_PATTERN}$"},
                    "description": "the card's serial (its number)",
                }
            )
        if "{campaign_id}" in op.path:
            parameters.append(
                {
                    "name": "campaign_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                    "description": "the broadcast's id",
                }
            )
        if op.query is not None:
            query_schema = op.query.model_json_schema(ref_template=_REF, mode="validation")
            schemas.update(query_schema.get("$defs", {}))
            required = set(query_schema.get("required", ()))
            for name, prop in query_schema["properties"].items():
                prop = _strip_null({k: v for k, v in prop.items() if k != "title"})
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if prop.get("type") == "array":
                    param.update(style="form", explode=True)
                if "description" in prop:
                    param["description"] = prop["description"]
                parameters.append(param)
        if op.idempotent:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": "a repeated key answers the first result and changes "
                    "nothing again (same operation, card and arguments, else 409)",
                }
            )
        responses: dict[str, Any] = {}
        if op.response is not None:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": ref(op.response, "serialization")}},
            }
        else:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        for status in _problem_statuses(op):
            responses[str(status)] = {"description": _DESCRIPTIONS[status]}
            responses[str(status)]["content"] = problem_content
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "description": f"Role: {op.role.value}"
            + (" (or manager)." if op.role.value == "staff" else "."),
            "tags": list(op.tags),
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "passkit-stamps till API",
            "version": API_VERSION,
            "description": "Stamp cards from tills and back offices. Keys: "
            "`passkit-stamps api-keys create`. Errors are RFC 9457 problem details.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "pks_<id>_<secret>"}
            },
        },
        "security": [{"apiKey": []}],
    }
    if server:
        document["servers"] = [{"url": server}]
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


_DESCRIPTIONS = {
    400: "Malformed request (not JSON, unknown query parameter)",
    401: "No, unknown, wrong or revoked API key",
    403: "The key's role may not do this",
    404: "No such card, template or voucher",
    409: "The card's state refuses it, or the idempotency key was used otherwise",
    413: "Request body too large",
    422: "A field breaks its rule (the problem's errors name each)",
    429: "Over the key's rate, or too many refused keys from this address; see Retry-After",
}
