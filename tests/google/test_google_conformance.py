"""Every class and object the library emits validates against Google's published schema plus the
rules the schema cannot express — and the validator itself catches each kind of defect."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from schema import assert_valid, json_schema, referenced_modules, validation_errors
from walletfixtures import *  # noqa: F403  (the pytest fixtures)
from walletfixtures import ISSUER, NOW, make_card

from passkit_stamps.google.builders import (
    CLEARABLE_OBJECT_FIELDS,
    GoogleSettings,
    build_loyalty_class,
    build_loyalty_object,
)
from passkit_stamps.model import CardState, CardTemplate


def test_the_discovery_document_converts() -> None:
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    loyalty_object = schema["$defs"]["LoyaltyObject"]
    assert loyalty_object["additionalProperties"] is False
    assert loyalty_object["properties"]["barcode"] == {"$ref": "#/$defs/Barcode"}
    assert schema["$defs"]["Money"]["properties"]["micros"]["pattern"] == "^-?[0-9]+$"


def test_class_conforms(template: CardTemplate, settings: GoogleSettings) -> None:
    assert_valid(build_loyalty_class(template, settings), "LoyaltyClass")
    assert_valid(
        build_loyalty_class(
            template, GoogleSettings(ISSUER, "https://i.example", country_code="US")
        ),
        "LoyaltyClass",
    )


@pytest.mark.parametrize("state", list(CardState))
@pytest.mark.parametrize("progress", ["none", "some", "all"])
def test_object_conforms(
    template: CardTemplate, settings: GoogleSettings, state: CardState, progress: str
) -> None:
    stamps = {"none": 0, "some": template.stamps_required // 2, "all": template.stamps_required}
    for language in template.languages:
        for extra in (
            {},
            {"vouchers": 2, "message": "Thank you!", "expires_at": NOW},
            {"vouchers": 14, "redeemed": 3, "name": None},
        ):
            card = make_card(template, stamps[progress], state=state, language=language, **extra)
            obj = build_loyalty_object(template, card, settings)
            assert_valid(obj, "LoyaltyObject")
            assert referenced_modules(build_loyalty_class(template, settings)) <= {
                m["id"] for m in obj["textModulesData"]
            }


def test_serials_needing_escapes_conform(template: CardTemplate, settings: GoogleSettings) -> None:
    obj = build_loyalty_object(template, make_card(template, serial="a_b.c-9"), settings)
    assert obj["id"] == f"{ISSUER}.a__b.c-9"
    assert_valid(obj, "LoyaltyObject")


# -- the validator must catch what Google refuses ---------------------------------------------


def _object(template: CardTemplate, settings: GoogleSettings) -> dict[str, Any]:
    return build_loyalty_object(template, make_card(template, 2), settings)


def _mutations() -> list[tuple[str, Any, str]]:
    def set_(path: list[Any], value: Any) -> Any:
        def apply(resource: dict[str, Any]) -> None:
            target = resource
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    def delete(key: str) -> Any:
        return lambda resource: resource.pop(key)

    return [
        ("unknown field", set_(["stampCount"], 3), "Additional properties"),
        ("unknown nested field", set_(["barcode", "colour"], "red"), "Additional properties"),
        ("wrong type", set_(["accountId"], 42), "is not of type 'string'"),
        ("bad enum", set_(["state"], "GONE"), "is not one of"),
        ("deprecated enum alias", set_(["state"], "active"), "deprecated enum value"),
        ("deprecated barcode alias", set_(["barcode", "type"], "qrCode"), "deprecated enum"),
        ("unspecified enum", set_(["state"], "STATE_UNSPECIFIED"), "unspecified enum"),
        ("missing state", delete("state"), "required field 'state'"),
        ("missing classId", delete("classId"), "required field 'classId'"),
        (
            "two balance kinds",
            set_(["loyaltyPoints", "balance"], {"string": "1", "int": 1}),
            "exactly one balance kind",
        ),
        ("no balance kind", set_(["loyaltyPoints", "balance"], {}), "required field 'balance'"),
        (
            "image with both sources",
            set_(["heroImage", "privateImageId"], "abc"),
            "exactly one of sourceUri",
        ),
        ("image without source", set_(["heroImage"], {}), "exactly one of sourceUri"),
        ("http image", set_(["heroImage", "sourceUri", "uri"], "http://x.example/a.png"), "https"),
        ("read-only field", set_(["hasUsers"], True), "read-only"),
        ("read-only class reference", set_(["classReference"], {}), "read-only"),
        ("deprecated field", set_(["kind"], "walletobjects#loyaltyObject"), "deprecated field"),
        ("deprecated version", set_(["version"], "1"), "deprecated field"),
        ("bad id characters", set_(["id"], f"{ISSUER}.a b"), "not <issuerId>"),
        ("id without issuer", set_(["id"], "serial-1"), "not <issuerId>"),
        ("dotted module id", set_(["textModulesData", 0, "id"], "a.b"), "must not contain dots"),
        (
            "int64 not digits",
            set_(["loyaltyPoints", "balance"], {"money": {"micros": "1.5", "currencyCode": "EUR"}}),
            "does not match",
        ),
        (
            "too many messages",
            set_(
                ["messages"],
                [
                    {"header": "h", "body": "b", "id": f"m{i}", "messageType": "TEXT"}
                    for i in range(11)
                ],
            ),
            "more than 10",
        ),
        ("message without body", set_(["messages"], [{"header": "h"}]), "required field 'body'"),
        ("duplicate module ids", set_(["textModulesData", 1, "id"], "progress"), "duplicate"),
    ]


@pytest.mark.parametrize(("name", "mutate", "message"), _mutations(), ids=lambda v: str(v)[:30])
def test_validator_catches(
    coffee_t: CardTemplate, settings: GoogleSettings, name: str, mutate: Any, message: str
) -> None:
    obj = copy.deepcopy(_object(coffee_t, settings))
    assert not validation_errors(obj, "LoyaltyObject")
    mutate(obj)
    problems = validation_errors(obj, "LoyaltyObject")
    assert any(message in p for p in problems), (name, problems)


def test_validator_catches_class_defects(coffee_t: CardTemplate, settings: GoogleSettings) -> None:
    cls = build_loyalty_class(coffee_t, settings)
    for key, value, message in [
        ("reviewStatus", "underReview", "deprecated enum value"),
        ("hexBackgroundColor", "brown", "not #rrggbb"),
        ("review", {"comments": "ok"}, "read-only"),
        ("allowMultipleUsersPerObject", True, "deprecated field"),
        ("programLogo", None, "required field 'programLogo'"),
    ]:
        broken = {**cls, key: value}
        problems = validation_errors(broken, "LoyaltyClass")
        assert any(message in p for p in problems), (key, problems)


def test_patch_bodies_only_add_nulls(coffee_t: CardTemplate, settings: GoogleSettings) -> None:
    obj = _object(coffee_t, settings)
    assert set(CLEARABLE_OBJECT_FIELDS) <= set(
        json_schema()["$defs"]["LoyaltyObject"]["properties"]
    )
    assert not validation_errors(obj, "LoyaltyObject")
