"""LoyaltyClass and LoyaltyObject contents."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from walletfixtures import *  # noqa: F403  (the pytest fixtures)
from walletfixtures import ISSUER, make_card

from passkit_stamps.errors import GoogleConfigError
from passkit_stamps.google.builders import (
    CLEARABLE_OBJECT_FIELDS,
    MAX_TEXT_MODULES,
    GoogleSettings,
    build_loyalty_class,
    build_loyalty_object,
    patch_body,
    skinny_object,
)
from passkit_stamps.google.ids import escape
from passkit_stamps.images import image_name
from passkit_stamps.model import CardState, CardTemplate, text_context
from passkit_stamps.templating import render_text


def modules(obj: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {m["id"]: m for m in obj["textModulesData"]}


def translations(value: dict) -> dict[str, str]:  # type: ignore[type-arg]
    out = {value["defaultValue"]["language"]: value["defaultValue"]["value"]}
    out.update({t["language"]: t["value"] for t in value.get("translatedValues", [])})
    return out


# -- class ------------------------------------------------------------------------------------


def test_class_core_fields(template: CardTemplate, settings: GoogleSettings) -> None:
    cls = build_loyalty_class(template, settings)
    assert cls["id"] == f"{ISSUER}.{escape(template.id)}"
    assert cls["issuerName"] == template.organization_name
    assert cls["programName"] == template.name
    assert cls["reviewStatus"] == "UNDER_REVIEW"
    assert cls["multipleDevicesAndHoldersAllowedStatus"] == "ONE_USER_ALL_DEVICES"
    assert cls["hexBackgroundColor"] == template.design.background_color.hex()
    assert cls["programLogo"]["sourceUri"]["uri"] == (
        "https://img.example/cards/" + image_name(template, "program-logo")
    )
    assert cls["heroImage"]["sourceUri"]["uri"].endswith(image_name(template, "hero", 0))
    assert cls["callbackOptions"] == {"url": "https://stamps.example/google/callback"}


def test_class_names_are_localized_for_every_language(
    template: CardTemplate, settings: GoogleSettings
) -> None:
    cls = build_loyalty_class(template, settings)
    for key, value in (
        ("localizedIssuerName", template.organization_name),
        ("localizedProgramName", template.name),
    ):
        names = translations(cls[key])
        assert set(names) == set(template.languages)
        assert set(names.values()) == {value}
        assert cls[key]["defaultValue"]["language"] == template.default_language


def test_class_links_and_homepage(
    salon_t: CardTemplate, coffee_t: CardTemplate, settings: GoogleSettings
) -> None:
    for template in (salon_t, coffee_t):
        cls = build_loyalty_class(template, settings)
        if template.website:
            assert cls["homepageUri"]["uri"] == template.website
        else:
            assert "homepageUri" not in cls
        uris = cls.get("linksModuleData", {}).get("uris", [])
        assert [u["uri"] for u in uris] == [link.url for link in template.links]
        for uri in uris:
            assert "." not in uri["id"]
            assert set(translations(uri["localizedDescription"])) == set(template.languages)


def test_class_without_callback_has_no_callback_options(template: CardTemplate) -> None:
    cls = build_loyalty_class(template, GoogleSettings(ISSUER, "https://img.example/"))
    assert "callbackOptions" not in cls


def test_class_card_face_shows_progress_modules(
    template: CardTemplate, settings: GoogleSettings
) -> None:
    cls = build_loyalty_class(template, settings)
    rows = cls["classTemplateInfo"]["cardTemplateOverride"]["cardRowTemplateInfos"]
    paths = [
        item["firstValue"]["fields"][0]["fieldPath"]
        for row in rows
        for item in row["twoItems"].values()
    ]
    obj = build_loyalty_object(template, make_card(template, 2), settings)
    ids = set(modules(obj))
    assert paths == ["object.textModulesData['progress']", "object.textModulesData['reward']"]
    assert {"progress", "reward"} <= ids


# -- object -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "google"),
    [
        (CardState.ACTIVE, "ACTIVE"),
        (CardState.COMPLETED, "COMPLETED"),
        (CardState.VOIDED, "INACTIVE"),
        (CardState.EXPIRED, "EXPIRED"),
    ],
)
def test_object_state(
    template: CardTemplate, settings: GoogleSettings, state: CardState, google: str
) -> None:
    obj = build_loyalty_object(template, make_card(template, 1, state=state), settings)
    assert obj["state"] == google


def test_object_points_barcode_and_ids(template: CardTemplate, settings: GoogleSettings) -> None:
    card = make_card(template, 3, vouchers=3, redeemed=1, serial="A-77")
    obj = build_loyalty_object(template, card, settings)
    assert obj["id"] == f"{ISSUER}.A-77"
    assert obj["classId"] == f"{ISSUER}.{escape(template.id)}"
    assert obj["loyaltyPoints"]["balance"] == {"string": f"3/{template.stamps_required}"}
    assert obj["loyaltyPoints"]["label"] == template.label("progress_label")
    assert obj["secondaryLoyaltyPoints"]["balance"] == {"int": 2}
    assert obj["accountId"] == "A-77"
    assert obj["accountName"] == "Ada Lovelace"
    expected = {"qr": "QR_CODE", "pdf417": "PDF_417", "aztec": "AZTEC", "code128": "CODE_128"}
    assert obj["barcode"] == {
        "type": expected[template.barcode_format.value],
        "value": "A-77",
        "alternateText": "A-77",
    }


def test_object_hero_follows_progress(template: CardTemplate, settings: GoogleSettings) -> None:
    urls = [
        build_loyalty_object(template, make_card(template, n), settings)["heroImage"]["sourceUri"][
            "uri"
        ]
        for n in range(template.stamps_required + 1)
    ]
    assert len(set(urls)) == len(urls)
    assert urls[2] == "https://img.example/cards/" + image_name(template, "hero", 2)


def test_object_texts_and_vouchers(salon_t: CardTemplate, settings: GoogleSettings) -> None:
    card = make_card(salon_t, 3, vouchers=2, message="See you soon")
    mods = modules(build_loyalty_object(salon_t, card, settings))
    context = text_context(salon_t, card, "en")
    assert mods["progress"]["body"] == render_text(salon_t.label("progress_value"), context)
    assert "3" in mods["progress"]["body"] and "10" in mods["progress"]["body"]
    assert mods["reward"]["body"] == render_text(salon_t.label("next_reward_value"), context)
    assert "2" in mods["reward"]["body"]
    assert mods["message"]["body"] == "See you soon"
    assert mods["terms"]["body"] == salon_t.texts["en"].terms
    assert {m["id"] for m in mods.values()} >= {"voucher-CODE0000", "voucher-CODE0001"}
    assert "Code: CODE0001" in mods["voucher-CODE0001"]["body"]
    assert all("." not in module_id for module_id in mods)


def test_object_in_the_cards_language(salon_t: CardTemplate, settings: GoogleSettings) -> None:
    obj = build_loyalty_object(salon_t, make_card(salon_t, 5, language="de"), settings)
    assert obj["loyaltyPoints"]["label"] == "Stempel"
    assert modules(obj)["terms"]["body"] == salon_t.texts["de"].terms
    assert obj["heroImage"]["contentDescription"]["defaultValue"]["language"] == "de"


def test_all_rewards_earned(template: CardTemplate, settings: GoogleSettings) -> None:
    card = make_card(template, template.stamps_required)
    obj = build_loyalty_object(template, card, settings)
    assert modules(obj)["reward"]["body"] == template.label("all_rewards_earned")


def test_many_vouchers_keep_every_code_within_ten_modules(
    template: CardTemplate, settings: GoogleSettings
) -> None:
    card = make_card(template, 1, vouchers=15, message="hello")
    obj = build_loyalty_object(template, card, settings)
    assert len(obj["textModulesData"]) == MAX_TEXT_MODULES
    text = " ".join(m["body"] for m in obj["textModulesData"])
    for voucher in card.vouchers:
        assert voucher.code in text
    assert {"terms", "earn", "progress", "reward", "message"} <= set(modules(obj))


def test_valid_time_interval_from_expiry(template: CardTemplate, settings: GoogleSettings) -> None:
    cest = timezone(timedelta(hours=2))
    card = make_card(template, expires_at=datetime(2026, 6, 30, 23, 59, 59, tzinfo=cest))
    obj = build_loyalty_object(template, card, settings)
    assert obj["validTimeInterval"] == {"end": {"date": "2026-06-30T21:59:59Z"}}
    naive = make_card(template, expires_at=datetime(2026, 1, 1))
    assert build_loyalty_object(template, naive, settings)["validTimeInterval"]["end"]["date"] == (
        "2026-01-01T00:00:00Z"
    )
    assert "validTimeInterval" not in build_loyalty_object(template, make_card(template), settings)


def test_builders_are_deterministic(template: CardTemplate, settings: GoogleSettings) -> None:
    card = make_card(template, 4, vouchers=1)
    assert build_loyalty_object(template, card, settings) == build_loyalty_object(
        template, card, settings
    )
    assert build_loyalty_class(template, settings) == build_loyalty_class(template, settings)


def test_card_of_another_template_is_refused(
    coffee_t: CardTemplate, salon_t: CardTemplate, settings: GoogleSettings
) -> None:
    with pytest.raises(GoogleConfigError, match="belongs to template"):
        build_loyalty_object(coffee_t, make_card(salon_t), settings)


def test_patch_body_clears_fields_the_object_lost(
    coffee_t: CardTemplate, settings: GoogleSettings
) -> None:
    obj = build_loyalty_object(coffee_t, make_card(coffee_t, name=None), settings)
    body = patch_body(obj, CLEARABLE_OBJECT_FIELDS)
    assert body["accountName"] is None and body["validTimeInterval"] is None
    assert body["loyaltyPoints"] == obj["loyaltyPoints"]
    assert skinny_object(obj) == {"id": obj["id"], "classId": obj["classId"]}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"issuer_id": "abc"}, "issuer id"),
        ({"image_base_url": "http://img.example/"}, "image base URL"),
        ({"image_base_url": "img.example"}, "image base URL"),
        ({"image_base_url": "https://img.example/a b"}, "image base URL"),
        ({"callback_url": "http://cb.example/"}, "callback URL"),
        ({"country_code": "USA"}, "country code"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    values = {"issuer_id": ISSUER, "image_base_url": "https://img.example/", **kwargs}
    with pytest.raises(GoogleConfigError, match=match):
        GoogleSettings(**values)


def test_country_code(template: CardTemplate) -> None:
    settings = GoogleSettings(ISSUER, "https://img.example", country_code="de")
    assert build_loyalty_class(template, settings)["countryCode"] == "DE"


def test_a_failing_text_falls_back_instead_of_failing(
    template: CardTemplate, settings: GoogleSettings
) -> None:
    lang = template.default_language
    bad = template.texts[lang].model_copy(
        update={"next_reward_value": "{{ remainig }}", "how_to_earn": "{{ 1 // 0 }}Ask us."}
    )
    broken = template.model_copy(update={"texts": {**template.texts, lang: bad}})
    mods = modules(build_loyalty_object(broken, make_card(broken, 3), settings))
    assert mods["reward"]["body"] == render_text(
        "{{ next_reward }} in {{ remaining }}", text_context(broken, make_card(broken, 3))
    )
    assert mods["earn"]["body"] == "Ask us."


def test_junk_google_settings_are_config_errors() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from passkit_stamps.errors import PasskitStampsError

    junk = (
        st.none()
        | st.integers()
        | st.text(max_size=20)
        | st.binary(max_size=5)
        | st.lists(st.integers(), max_size=2)
    )

    @settings(max_examples=200, deadline=None)
    @given(issuer=junk, base=junk | st.just("https://img.example.com"), cb=junk, cc=junk)
    def check(issuer: object, base: object, cb: object, cc: object) -> None:
        with contextlib.suppress(PasskitStampsError):
            GoogleSettings(
                issuer_id=issuer,  # type: ignore[arg-type]
                image_base_url=base,  # type: ignore[arg-type]
                callback_url=cb,  # type: ignore[arg-type]
                country_code=cc,  # type: ignore[arg-type]
            )

    check()
