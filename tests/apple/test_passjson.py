"""pass.json and pass.strings of stamp cards."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from passkit_stamps.apple.passjson import (
    build_pass_json,
    check_web_service_url,
    encode_pass_strings,
    pass_strings,
)
from passkit_stamps.errors import PassBuildError
from passkit_stamps.model import (
    BarcodeFormat,
    Card,
    CardState,
    CardTemplate,
    Holder,
    Voucher,
    VoucherKind,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDS = {"pass_type_identifier": "pass.com.example.stamps", "team_identifier": "EXAMPLE123"}
TOKEN = "tok-0123456789abcdef"


def card_for(template: CardTemplate, **changes: Any) -> Card:
    values: dict[str, Any] = {
        "serial": "113772",
        "template_id": template.id,
        "template_version": template.version,
        "created_at": NOW,
        "authentication_token": TOKEN,
    }
    values.update(changes)
    return Card(**values)


def voucher(code: str = "REDEEM-42", title: str = "Free coffee", **changes: Any) -> Voucher:
    return Voucher(
        code=code, kind=VoucherKind.REWARD, title=title, issued_at=NOW, reward_at=8, **changes
    )


def all_fields(data: dict[str, Any]) -> list[dict[str, Any]]:
    style = data["storeCard"]
    groups = ("headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields")
    return [f for group in groups for f in style.get(group, [])]


def field(data: dict[str, Any], key: str) -> dict[str, Any]:
    matches = [f for f in all_fields(data) if f["key"] == key]
    assert len(matches) == 1, key
    return matches[0]


_LINE = re.compile(r'"((?:[^"\\]|\\.)*)" = "((?:[^"\\]|\\.)*)";\n')
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_strings(data: bytes) -> dict[str, str]:
    """Read a pass.strings file as Wallet would (strict: every line must match)."""
    assert data.startswith(b"\xff\xfe"), "UTF-16 LE byte order mark"
    text = data[2:].decode("utf-16-le")

    def unescape(s: str) -> str:
        return re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], s)

    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LINE.match(text, pos)
        assert m, f"malformed pass.strings at {text[pos : pos + 40]!r}"
        out[unescape(m.group(1))] = unescape(m.group(2))
        pos = m.end()
    return out


# -- pass.json ---------------------------------------------------------------------------------


def test_required_keys_style_and_identity(coffee: CardTemplate) -> None:
    data = build_pass_json(coffee, card_for(coffee), **IDS)
    assert data["formatVersion"] == 1
    assert data["passTypeIdentifier"] == "pass.com.example.stamps"
    assert data["teamIdentifier"] == "EXAMPLE123"
    assert data["serialNumber"] == "113772"
    assert data["organizationName"] == coffee.organization_name
    assert data["description"] == coffee.description
    styles = {"boardingPass", "coupon", "eventTicket", "generic", "storeCard"} & set(data)
    assert styles == {"storeCard"}
    assert "webServiceURL" not in data and "authenticationToken" not in data
    assert "voided" not in data and "expirationDate" not in data


def test_colours_are_apple_rgb(salon: CardTemplate) -> None:
    data = build_pass_json(salon, card_for(salon), **IDS)
    assert data["backgroundColor"] == "rgb(251, 239, 244)"
    assert data["foregroundColor"] == salon.design.foreground_color.apple()
    assert data["labelColor"] == salon.design.label_color.apple()
    for key in ("backgroundColor", "foregroundColor", "labelColor"):
        assert re.fullmatch(r"rgb\(\d{1,3}, \d{1,3}, \d{1,3}\)", data[key])


def test_logo_text_only_without_a_logo(coffee: CardTemplate) -> None:
    assert "logoText" not in build_pass_json(coffee, card_for(coffee), **IDS)
    no_logo = coffee.model_copy(update={"design": coffee.design.model_copy(update={"logo": None})})
    data = build_pass_json(no_logo, card_for(no_logo), **IDS)
    assert data["logoText"] == coffee.organization_name


@pytest.mark.parametrize(
    "card_changes",
    [
        {},
        {"holder": Holder(name="Ada Lovelace"), "stamps": 3},
        {"vouchers": (voucher(), voucher("CODE-7777", "Free cake")), "message": "Hi!"},
    ],
)
def test_field_keys_unique_and_change_messages(
    coffee: CardTemplate, salon: CardTemplate, card_changes: dict[str, Any]
) -> None:
    for template in (coffee, salon):
        data = build_pass_json(template, card_for(template, **card_changes), **IDS)
        keys = [f["key"] for f in all_fields(data)]
        assert len(keys) == len(set(keys))
        assert "primaryFields" not in data["storeCard"]  # the strip is behind them
        for f in all_fields(data):
            assert "value" in f
            if "changeMessage" in f:
                assert "%@" in f["changeMessage"]
        for key in ("progress", "vouchers_ready", "message"):
            assert "%@" in field(data, key)["changeMessage"]


def test_progress_and_next_reward_texts(coffee: CardTemplate, salon: CardTemplate) -> None:
    data = build_pass_json(coffee, card_for(coffee, stamps=3), **IDS)
    assert field(data, "progress")["value"] == "3 / 8"
    assert field(data, "progress")["label"] == "Stamps"
    assert field(data, "progress")["changeMessage"] == "Stamps: %@"
    assert field(data, "next_reward")["value"] == "Free coffee in 5 stamps"
    one = build_pass_json(coffee, card_for(coffee, stamps=7), **IDS)
    assert field(one, "next_reward")["value"] == "Free coffee in 1 stamp"
    done = build_pass_json(coffee, card_for(coffee, stamps=8), **IDS)
    assert field(done, "progress")["value"] == "8 / 8"
    assert field(done, "next_reward")["value"] == "All rewards earned"
    assert field(build_pass_json(salon, card_for(salon, stamps=6), **IDS), "progress")["value"] == (
        "6 of 10"
    )


def test_holder_field_only_when_the_name_is_known(coffee: CardTemplate) -> None:
    anonymous = build_pass_json(coffee, card_for(coffee), **IDS)
    assert "holder" not in {f["key"] for f in all_fields(anonymous)}
    named = build_pass_json(coffee, card_for(coffee, holder=Holder(name="Ada")), **IDS)
    assert field(named, "holder")["value"] == "Ada"


def test_vouchers_ready_with_redeem_codes(coffee: CardTemplate) -> None:
    redeemed = voucher("USED-000001", redeemed_at=NOW)
    coupon = Voucher(
        code="GIFT-1234",
        kind=VoucherKind.COUPON,
        title="Birthday cake",
        description="A slice on us",
        issued_at=NOW,
    )
    card = card_for(coffee, vouchers=(voucher(), redeemed, coupon))
    data = build_pass_json(coffee, card, **IDS)
    assert field(data, "vouchers_ready")["value"] == 2
    back = field(data, "vouchers")["value"]
    assert "Free coffee: REDEEM-42" in back
    assert "Birthday cake: GIFT-1234\nA slice on us" in back
    assert "USED-000001" not in back
    none = build_pass_json(coffee, card_for(coffee), **IDS)
    assert field(none, "vouchers_ready")["value"] == 0
    assert "vouchers" not in {f["key"] for f in all_fields(none)}


def test_message_field_is_always_present(coffee: CardTemplate) -> None:
    # The key set stays stable so sending the first message changes a value and notifies.
    empty = field(build_pass_json(coffee, card_for(coffee), **IDS), "message")
    assert empty["value"] == "" and empty["changeMessage"] == "%@"
    sent = build_pass_json(coffee, card_for(coffee, message="Happy birthday!"), **IDS)
    assert field(sent, "message")["value"] == "Happy birthday!"


def test_back_fields_terms_how_to_earn_links(salon: CardTemplate) -> None:
    data = build_pass_json(salon, card_for(salon), **IDS)
    assert field(data, "terms")["value"].startswith("One stamp per paid appointment")
    assert field(data, "how_to_earn")["label"] == "How to earn stamps"
    assert field(data, "link_0")["value"] == "https://studio-blume.example.com/booking"
    assert field(data, "website")["value"] == "https://studio-blume.example.com/"


@pytest.mark.parametrize(
    ("fmt", "apple"),
    [
        (BarcodeFormat.QR, "PKBarcodeFormatQR"),
        (BarcodeFormat.PDF417, "PKBarcodeFormatPDF417"),
        (BarcodeFormat.AZTEC, "PKBarcodeFormatAztec"),
        (BarcodeFormat.CODE128, "PKBarcodeFormatCode128"),
    ],
)
def test_barcode_per_format(coffee: CardTemplate, fmt: BarcodeFormat, apple: str) -> None:
    template = coffee.model_copy(update={"barcode_format": fmt})
    data = build_pass_json(template, card_for(template), **IDS)
    assert data["barcodes"] == [
        {
            "format": apple,
            "message": "113772",
            "messageEncoding": "iso-8859-1",
            "altText": "113772",
        }
    ]
    assert "barcode" not in data  # deprecated since iOS 9


# -- the web service ---------------------------------------------------------------------------


def test_web_service_url_and_token(coffee: CardTemplate) -> None:
    data = build_pass_json(
        coffee, card_for(coffee), web_service_url="https://passes.example.com/apple", **IDS
    )
    assert data["webServiceURL"] == "https://passes.example.com/apple"
    assert data["authenticationToken"] == TOKEN


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://passes.example.com/v1", "appends"),
        ("https://passes.example.com/apple/v1/", "appends"),
        ("http://passes.example.com/apple", "http"),
        ("ftp://passes.example.com/", "https://"),
        ("passes.example.com/apple", "https://"),
        ("https:///apple", "https://"),
        ("https://passes.example.com/apple?x=1", "query"),
        ("https://user:pw@passes.example.com/", "password"),
        ("https://passes.example.com:99999/", "malformed"),
        ("", "empty"),
    ],
)
def test_web_service_url_refused(coffee: CardTemplate, url: str, reason: str) -> None:
    with pytest.raises(PassBuildError, match=reason):
        build_pass_json(coffee, card_for(coffee), web_service_url=url, **IDS)


def test_http_allowed_for_development(coffee: CardTemplate) -> None:
    url = "http://127.0.0.1:8000/passes"
    data = build_pass_json(coffee, card_for(coffee), web_service_url=url, allow_http=True, **IDS)
    assert data["webServiceURL"] == url
    with pytest.raises(PassBuildError, match="appends"):
        check_web_service_url("http://127.0.0.1:8000/v1", allow_http=True)


@pytest.mark.parametrize(
    "token", ["short-token", "has a space in the token", "tök-0123456789abcdef"]
)
def test_bad_authentication_token_refused(coffee: CardTemplate, token: str) -> None:
    # model_copy skips validation: the builder checks again before putting it in a pass.
    card = card_for(coffee).model_copy(update={"authentication_token": token})
    with pytest.raises(PassBuildError, match="authentication token"):
        build_pass_json(coffee, card, web_service_url="https://passes.example.com/", **IDS)


# -- state ---------------------------------------------------------------------------------------


def test_voided_card(coffee: CardTemplate) -> None:
    data = build_pass_json(coffee, card_for(coffee, state=CardState.VOIDED), **IDS)
    assert data["voided"] is True


def test_expiration_date_iso8601_with_zone(coffee: CardTemplate) -> None:
    cet = timezone(timedelta(hours=1))
    data = build_pass_json(
        coffee, card_for(coffee, expires_at=datetime(2027, 1, 1, 1, 0, tzinfo=cet)), **IDS
    )
    assert data["expirationDate"] == "2027-01-01T00:00:00+00:00"
    naive = build_pass_json(coffee, card_for(coffee, expires_at=datetime(2027, 1, 1)), **IDS)
    assert naive["expirationDate"] == "2027-01-01T00:00:00+00:00"  # the store's naive = UTC
    parsed = datetime.fromisoformat(data["expirationDate"])
    assert parsed.tzinfo is not None


def test_expired_card_without_date_shows_as_expired(coffee: CardTemplate) -> None:
    card = card_for(coffee, state=CardState.EXPIRED, last_stamp_at=NOW - timedelta(days=400))
    data = build_pass_json(coffee, card, **IDS)
    assert datetime.fromisoformat(data["expirationDate"]) == NOW - timedelta(days=400)
    assert "voided" not in data


def test_card_of_another_template_refused(coffee: CardTemplate, salon: CardTemplate) -> None:
    with pytest.raises(PassBuildError, match="belongs to template salon@v1"):
        build_pass_json(coffee, card_for(salon), **IDS)
    with pytest.raises(PassBuildError, match="v2"):
        build_pass_json(coffee, card_for(coffee, template_version=2), **IDS)


def test_empty_identifiers_refused(coffee: CardTemplate) -> None:
    with pytest.raises(PassBuildError, match="team identifier"):
        build_pass_json(
            coffee, card_for(coffee), pass_type_identifier="pass.x", team_identifier=" "
        )


# -- localization --------------------------------------------------------------------------------


def localizable_strings(data: dict[str, Any]) -> list[str]:
    out = []
    for f in all_fields(data):
        if f["key"] == "website":  # labelled with the organization's name: not translated
            continue
        if f["key"] in ("holder", "message", "vouchers", "link_0", "vouchers_ready"):
            out.append(f["label"])
            continue
        out.extend(str(f[k]) for k in ("label", "value", "changeMessage") if k in f)
    return [s for s in out if s != "%@"]


def test_pass_strings_one_per_language_with_the_same_keys(salon: CardTemplate) -> None:
    card = card_for(salon, stamps=3, holder=Holder(name="Ada"), vouchers=(voucher(),))
    files = pass_strings(salon, card)
    assert set(files) == {"en", "de"}
    en, de = parse_strings(files["en"]), parse_strings(files["de"])
    assert set(en) == set(de)
    data = build_pass_json(salon, card, **IDS)
    for text in localizable_strings(data):
        assert text in en, text
    assert de["Stamps"] == "Stempel"
    assert de["3 of 10"] == "3 von 10"
    assert de["Stamps: %@"] == "Stempel: %@"
    assert de["Free hair treatment in 2"] == "Gratis Haarkur in 2"
    assert de["Book an appointment"] == "Termin buchen"
    assert en["Stamps"] == "Stamps"
    assert "Ada" not in en  # a name is not translated


def test_single_language_template_has_one_strings_file(coffee: CardTemplate) -> None:
    files = pass_strings(coffee, card_for(coffee))
    assert set(files) == {"en"}
    assert all(k == v for k, v in parse_strings(files["en"]).items())


def test_card_language_sets_the_pass_json_texts(salon: CardTemplate) -> None:
    card = card_for(salon, stamps=3, language="de")
    data = build_pass_json(salon, card, **IDS)
    assert field(data, "progress")["label"] == "Stempel"
    en = parse_strings(pass_strings(salon, card)["en"])
    assert en["Stempel"] == "Stamps"


def test_colliding_default_texts_get_symbolic_keys(salon: CardTemplate) -> None:
    # Same English wording for two labels that German translates differently.
    texts = dict(salon.texts)
    texts["en"] = texts["en"].model_copy(update={"holder_label": "Rewards ready"})
    template = salon.model_copy(update={"texts": texts})
    card = card_for(template, holder=Holder(name="Ada"))
    data = build_pass_json(template, card, **IDS)
    labels = {field(data, "holder")["label"], field(data, "vouchers_ready")["label"]}
    assert "Rewards ready" in labels
    symbolic = (labels - {"Rewards ready"}).pop()
    de = parse_strings(pass_strings(template, card)["de"])
    assert {de["Rewards ready"], de[symbolic]} == {"Mitglied", "Einlösbare Prämien"}


def test_pass_strings_escaping(salon: CardTemplate) -> None:
    tricky = 'Say "hi" \\ then\nnew line\ttab ünïcödé 🎉'
    raw = encode_pass_strings({tricky: tricky, "plain": "x"})
    assert raw.startswith(b"\xff\xfe")
    text = raw[2:].decode("utf-16-le")
    assert '\\"hi\\"' in text and "\\\\ then" in text and "\\n" in text and "\n" in text
    assert parse_strings(raw) == {tricky: tricky, "plain": "x"}
    # Through a template: terms with quotes and a line break survive in both languages.
    texts = dict(salon.texts)
    texts["de"] = texts["de"].model_copy(update={"terms": 'Keine "Barauszahlung".\nDanke'})
    template = salon.model_copy(update={"texts": texts})
    card = card_for(template)
    de = parse_strings(pass_strings(template, card)["de"])
    terms_key = field(build_pass_json(template, card, **IDS), "terms")["value"]
    assert de[terms_key] == 'Keine "Barauszahlung".\nDanke'


# -- issue 12: a text that fails at serving time is a fallback, never an error -------------------


def broken(template: CardTemplate, **texts: str) -> CardTemplate:
    """``template`` with texts that fail to render, bypassing validation (as a template stored
    before the publish-time checks existed would)."""
    lang = template.default_language
    bad = template.texts[lang].model_copy(update=texts)
    return template.model_copy(update={"texts": {**template.texts, lang: bad}})


def test_a_failing_text_falls_back_and_is_logged_once(
    coffee: CardTemplate, caplog: pytest.LogCaptureFixture
) -> None:
    template = broken(
        coffee,
        next_reward_value="{{ remainig }}",
        progress_value="{{ holder_name|truncate(1) }}",
        terms="Terms apply. {{ 1 // 0 }}",
    )
    for _ in range(2):
        data = build_pass_json(template, card_for(template, stamps=3), **IDS)
    # the built-in text of the language, and the merchant's text without the failing markup
    assert field(data, "next_reward")["value"] == "Free coffee in 5"
    assert field(data, "progress")["value"] == "3 / 8"
    assert field(data, "terms")["value"] == "Terms apply."
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 3
