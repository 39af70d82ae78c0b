"""Google Wallet conformance: the published discovery schema as JSON Schema, plus the rules it
does not express.

The discovery document ``walletobjects.v1.json`` ships inside google-api-python-client (a test-only
dependency). :func:`json_schema` converts its ``schemas`` to a JSON Schema (draft 2020-12) with
one ``$defs`` entry per type, ``additionalProperties: false`` everywhere (Google rejects unknown
fields), enums, and patterns for int64 strings. :func:`rule_errors` adds what the document only
says in prose: required fields, exactly one balance kind, ``sourceUri`` xor ``privateImageId``,
id characters, no deprecated enum aliases, no deprecated or read-only fields, at most 10 messages
(and the library's own bound of 10 text modules).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import googleapiclient
import jsonschema

DISCOVERY = (
    Path(googleapiclient.__file__).parent
    / "discovery_cache"
    / "documents"
    / "walletobjects.v1.json"
)

#: Required fields per type (from the field descriptions: "Required. ...", and the reference).
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "LoyaltyClass": ("id", "issuerName", "programName", "programLogo", "reviewStatus"),
    "LoyaltyObject": ("id", "classId", "state"),
    "LocalizedString": ("defaultValue",),
    "TranslatedString": ("language", "value"),
    "ImageUri": ("uri",),
    "Uri": ("uri",),
    "Barcode": ("type", "value"),
    "LoyaltyPoints": ("balance",),
    "CallbackOptions": ("url",),
    "DateTime": ("date",),
    "Message": ("header", "body"),
}

# "This field is set by the platform" / "retrieved during a GET": the server owns these.
_READ_ONLY = re.compile(r"set by the platform|retrieved during a GET|[Oo]utput only")
_RESOURCE_ID = re.compile(r"^[0-9]+\.[A-Za-z0-9._-]+$")
_INT64 = r"^-?[0-9]+$"
_UINT64 = r"^[0-9]+$"
MAX_MESSAGES = 10
MAX_TEXT_MODULES = 10


@cache
def discovery() -> dict[str, Any]:
    return json.loads(DISCOVERY.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _convert_property(prop: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return {"$ref": f"#/$defs/{prop['$ref']}"}
    kind = prop.get("type")
    out: dict[str, Any]
    if kind == "string":
        out = {"type": "string"}
        fmt = prop.get("format")
        if fmt == "int64":
            out["pattern"] = _INT64
        elif fmt == "uint64":
            out["pattern"] = _UINT64
        elif fmt == "byte":
            out["pattern"] = r"^[A-Za-z0-9+/_-]*=*$"
        if "enum" in prop:
            out["enum"] = list(prop["enum"])
    elif kind == "integer":
        out = {"type": "integer"}
        if prop.get("format") == "int32":
            out.update(minimum=-(2**31), maximum=2**31 - 1)
        elif prop.get("format") == "uint32":
            out.update(minimum=0, maximum=2**32 - 1)
    elif kind == "number":
        out = {"type": "number"}
    elif kind == "boolean":
        out = {"type": "boolean"}
    elif kind == "array":
        out = {"type": "array", "items": _convert_property(prop["items"])}
    elif kind == "object":
        out = {"type": "object"}
        if "additionalProperties" in prop:
            out["additionalProperties"] = _convert_property(prop["additionalProperties"])
    else:
        raise ValueError(f"unknown discovery type {prop!r}")
    return out


@cache
def json_schema() -> dict[str, Any]:
    """The discovery schemas as one JSON Schema document (draft 2020-12) with ``$defs``."""
    defs: dict[str, Any] = {}
    for name, schema in discovery()["schemas"].items():
        defs[name] = {
            "type": "object",
            "properties": {
                key: _convert_property(prop) for key, prop in schema.get("properties", {}).items()
            },
            "additionalProperties": False,
        }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}


@cache
def _validator(type_name: str) -> jsonschema.Draft202012Validator:
    schema = {**json_schema(), "$ref": f"#/$defs/{type_name}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _walk(value: Any, type_name: str, path: str) -> Iterator[tuple[str, str, Any, str]]:
    """Yield ``(path, type name, value, 'object')`` for every typed object inside ``value``."""
    if not isinstance(value, Mapping):
        return
    yield path, type_name, value, "object"
    props = discovery()["schemas"][type_name].get("properties", {})
    for key, child in value.items():
        prop = props.get(key)
        if prop is None:
            continue
        if "$ref" in prop:
            yield from _walk(child, prop["$ref"], f"{path}.{key}")
        elif prop.get("type") == "array" and "$ref" in prop.get("items", {}):
            for i, item in enumerate(child if isinstance(child, list) else []):
                yield from _walk(item, prop["items"]["$ref"], f"{path}.{key}[{i}]")


def rule_errors(resource: Mapping[str, Any], type_name: str) -> list[str]:
    """Problems the discovery schema cannot express, as ``path: message`` strings."""
    errors: list[str] = []
    schemas = discovery()["schemas"]
    for path, name, obj, _ in _walk(resource, type_name, type_name):
        props = schemas[name].get("properties", {})
        for key in REQUIRED.get(name, ()):
            if obj.get(key) in (None, "", [], {}):
                errors.append(f"{path}: required field {key!r} missing")
        for key, value in obj.items():
            prop = props.get(key, {})
            if prop.get("deprecated"):
                errors.append(f"{path}.{key}: deprecated field")
            if _READ_ONLY.search(prop.get("description", "")):
                errors.append(f"{path}.{key}: read-only field")
            if "enum" in prop and value in prop["enum"]:
                index = prop["enum"].index(value)
                flags = prop.get("enumDeprecated", [])
                described = prop.get("enumDescriptions", [""] * len(prop["enum"]))[index]
                if (index < len(flags) and flags[index]) or "Deprecated" in described:
                    errors.append(f"{path}.{key}: deprecated enum value {value!r}")
                if value.endswith("_UNSPECIFIED"):
                    errors.append(f"{path}.{key}: unspecified enum value {value!r}")
        if name == "Image" and ("sourceUri" in obj) == ("privateImageId" in obj):
            errors.append(f"{path}: exactly one of sourceUri and privateImageId")
        if name == "LoyaltyPointsBalance":
            kinds = [k for k in ("string", "int", "double", "money") if k in obj]
            if len(kinds) != 1:
                errors.append(f"{path}: exactly one balance kind, got {kinds}")
        if name == "ImageUri" and not str(obj.get("uri", "")).startswith("https://"):
            errors.append(f"{path}.uri: image URIs must be public https:// URLs")
        if name in ("LoyaltyClass", "LoyaltyObject"):
            for key in ("id", "classId"):
                if key in obj and not _RESOURCE_ID.match(str(obj[key])):
                    errors.append(f"{path}.{key}: not <issuerId>.<[A-Za-z0-9._-]+>: {obj[key]!r}")
            if len(obj.get("messages", [])) > MAX_MESSAGES:
                errors.append(f"{path}.messages: more than {MAX_MESSAGES}")
            modules = obj.get("textModulesData", [])
            if len(modules) > MAX_TEXT_MODULES:
                errors.append(f"{path}.textModulesData: more than {MAX_TEXT_MODULES}")
            ids = [m.get("id") for m in modules if "id" in m]
            if len(ids) != len(set(ids)):
                errors.append(f"{path}.textModulesData: duplicate module ids")
            if "hexBackgroundColor" in obj and not re.fullmatch(
                r"#[0-9a-fA-F]{6}", str(obj["hexBackgroundColor"])
            ):
                errors.append(f"{path}.hexBackgroundColor: not #rrggbb")
        if name == "TextModuleData" and "." in str(obj.get("id", "")):
            errors.append(f"{path}.id: text module ids must not contain dots")
    return errors


def validation_errors(resource: Mapping[str, Any], type_name: str) -> list[str]:
    """Every schema and rule problem of ``resource`` (a ``LoyaltyClass`` or ``LoyaltyObject``)."""
    schema_errors = [
        f"{type_name}{''.join(f'[{p!r}]' for p in e.absolute_path)}: {e.message}"
        for e in _validator(type_name).iter_errors(resource)
    ]
    return schema_errors + rule_errors(resource, type_name)


def assert_valid(resource: Mapping[str, Any], type_name: str) -> None:
    problems = validation_errors(resource, type_name)
    assert not problems, "\n".join(problems)


def referenced_modules(loyalty_class: Mapping[str, Any]) -> set[str]:
    """The object text-module ids a class's card template shows."""
    text = json.dumps(loyalty_class.get("classTemplateInfo", {}))
    return set(re.findall(r"object\.textModulesData\['([^']+)'\]", text))
