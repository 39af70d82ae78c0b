"""``pass.json`` and ``<lang>.lproj/pass.strings`` for a stamp card (Apple's ``storeCard`` style).

Pure functions of a template and a card: no clock, no files, no network.

Layout of the pass (field keys are unique across the pass and never change between updates, so an
update compares like with like and each ``changeMessage`` fires only when its own value changes):

==================  ==================  =========================================================
place               key                 value
==================  ==================  =========================================================
secondaryFields     ``progress``        "3 / 8" (``progress_value``); changeMessage notifies
secondaryFields     ``next_reward``     "Free coffee in 5", or "All rewards earned"
auxiliaryFields     ``holder``          the holder's name (only when known)
auxiliaryFields     ``vouchers_ready``  number of unredeemed vouchers; changeMessage notifies
backFields          ``vouchers``        each unredeemed voucher with its redeem code (when any)
backFields          ``message``         the personal message, "" when none; changeMessage "%@"
backFields          ``terms``, ``how_to_earn``, ``link_<n>``, ``website``
==================  ==================  =========================================================

``notify=False`` (a change the notification budget or the policy made silent) leaves every
``changeMessage`` out: Apple alerts the holder when a field with one changes value, whatever the
push said, so a silent update must not carry them.

The strip image (the stamp grid) sits behind the primary fields, so the pass has none: progress
is a secondary field, which the Apple Watch (which shows no strip) also displays.

Localization, the Apple way: pass.json holds every localizable text in the card's language (the
template's default when the card has none), and each ``<lang>.lproj/pass.strings`` maps those
texts, used as keys, to the language's text. Every language file has the same keys. A text that is
empty, or whose default wording is shared by two texts translated differently, gets a symbolic
key (``"<field>.<part>"``) instead, so no translation is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import PassBuildError
from ..model import (
    BarcodeFormat,
    Card,
    CardState,
    CardTemplate,
    card_text,
    localized,
    progress,
    text_context,
)

__all__ = [
    "BARCODE_FORMATS",
    "MIN_AUTHENTICATION_TOKEN_LENGTH",
    "PassContent",
    "build_pass_json",
    "check_web_service_url",
    "compose_pass",
    "encode_pass_strings",
    "pass_strings",
]

BARCODE_FORMATS: Mapping[BarcodeFormat, str] = {
    BarcodeFormat.QR: "PKBarcodeFormatQR",
    BarcodeFormat.PDF417: "PKBarcodeFormatPDF417",
    BarcodeFormat.AZTEC: "PKBarcodeFormatAztec",
    BarcodeFormat.CODE128: "PKBarcodeFormatCode128",
}

MIN_AUTHENTICATION_TOKEN_LENGTH = 16  # Apple's minimum for authenticationToken

_UTF16_BOM = b"\xff\xfe"


# -- the web service URL ---------------------------------------------------------------------------


def check_web_service_url(url: str, *, allow_http: bool = False) -> str:
    """Return ``url`` when Wallet can use it as ``webServiceURL``; raise ``PassBuildError`` if not.

    The device appends ``/v1/...`` itself, so a URL ending in ``/v1`` would be called as
    ``/v1/v1/...``. Plain ``http`` works only on development devices: refused unless
    ``allow_http``.
    """
    if not isinstance(url, str) or not url.strip():
        raise PassBuildError("web service URL is empty")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise PassBuildError(f"web service URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PassBuildError(
            f"web service URL {url!r} must be an absolute https:// URL, e.g. "
            "https://passes.example.com/apple"
        )
    if parts.scheme == "http" and not allow_http:
        raise PassBuildError(
            f"web service URL {url!r} uses plain http, which Wallet accepts only on development "
            "devices: use https (or allow_http=True / --allow-http while testing)"
        )
    if parts.username or parts.password:
        raise PassBuildError(f"web service URL {url!r} must not contain a user name or password")
    if parts.query or parts.fragment:
        raise PassBuildError(
            f"web service URL {url!r} must not have a query or fragment: the device appends "
            "path segments to it"
        )
    if parts.path.rstrip("/").endswith("/v1"):
        raise PassBuildError(
            f"web service URL {url!r} ends in /v1: give the URL without it, the device appends "
            "/v1/... itself"
        )
    return url


def _check_token(token: str) -> str:
    if len(token) < MIN_AUTHENTICATION_TOKEN_LENGTH:
        raise PassBuildError(
            f"authentication token is {len(token)} characters long; Apple requires at least "
            f"{MIN_AUTHENTICATION_TOKEN_LENGTH}"
        )
    # It travels in an HTTP header ("Authorization: ApplePass <token>").
    if not token.isascii() or not token.isprintable() or " " in token:
        raise PassBuildError("authentication token must be printable ASCII without spaces")
    return token


# -- localizable texts -----------------------------------------------------------------------------


class _Strings:
    """The localizable texts of one pass: key (as written in pass.json) -> text per language."""

    def __init__(self, base: str, languages: tuple[str, ...]) -> None:
        self.base = base
        self.languages = languages
        self.entries: dict[str, dict[str, str]] = {}

    def key(self, texts: Mapping[str, str], symbol: str) -> str:
        """The pass.json value for a text given in every language."""
        default = texts[self.base]
        key = default
        known = self.entries.get(key)
        if not default or (known is not None and known != texts):
            key = symbol  # keep both translations: a key of its own
            if key in self.entries and self.entries[key] != texts:
                raise PassBuildError(f"localizable text key {key!r} used twice")  # pragma: no cover
        self.entries[key] = dict(texts)
        return key

    def encoded(self) -> dict[str, bytes]:
        return {
            lang: encode_pass_strings({k: v[lang] for k, v in self.entries.items()})
            for lang in self.languages
        }


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )


def encode_pass_strings(entries: Mapping[str, str]) -> bytes:
    """A ``pass.strings`` file: ``"key" = "value";`` lines, UTF-16 little-endian with a BOM.

    Apple reads .strings files as UTF-16 (UTF-8 breaks non-ASCII text on some iOS versions).
    Lines are sorted by key so the bytes are deterministic.
    """
    lines = "".join(f'"{_escape(k)}" = "{_escape(v)}";\n' for k, v in sorted(entries.items()))
    return _UTF16_BOM + lines.encode("utf-16-le")


# -- composing the pass ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PassContent:
    """pass.json as a dict and the encoded ``pass.strings`` per language (``{"en": b"..."}``)."""

    pass_json: dict[str, Any]
    strings: dict[str, bytes]


def _iso8601(when: datetime) -> str:
    """W3C/ISO 8601 with an explicit offset; naive datetimes are UTC (as the store keeps them)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _field(key: str, label: str | None, value: Any, change: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "value": value}
    if label is not None:
        out["label"] = label
    if change is not None:
        out["changeMessage"] = change
    return out


def compose_pass(
    template: CardTemplate,
    card: Card,
    *,
    pass_type_identifier: str,
    team_identifier: str,
    web_service_url: str | None = None,
    allow_http: bool = False,
    notify: bool = True,
) -> PassContent:
    """pass.json and pass.strings of ``card``, computed together (they share their keys).
    ``notify``: whether the change this pass carries alerts the holder (else no field has a
    ``changeMessage``)."""
    if card.template_id != template.id or card.template_version != template.version:
        raise PassBuildError(
            f"card {card.serial} belongs to template {card.template_id}@v{card.template_version}, "
            f"not {template.key}"
        )
    for name, value in (
        ("pass type identifier", pass_type_identifier),
        ("team identifier", team_identifier),
    ):
        if not value or not value.strip():
            raise PassBuildError(f"{name} is empty")
    languages = template.languages
    base = card.language if card.language in template.texts else template.default_language
    contexts = {lang: text_context(template, card, lang) for lang in languages}
    strings = _Strings(base, languages)

    def label(name: str, symbol: str) -> str:
        return strings.key({lang: template.label(name, lang) for lang in languages}, symbol)

    # card_text: a text that fails at serving time becomes a fallback, never an error
    def rendered(name: str, symbol: str) -> str:
        return strings.key(
            {lang: card_text(template, name, lang, contexts[lang]) for lang in languages},
            symbol,
        )

    body = rendered  # terms, how_to_earn: required texts per language, rendered alike

    p = progress(template, card)

    def change(make: Callable[[], str]) -> str | None:
        # Not even registered in pass.strings when silent: the pass has no such text.
        return make() if notify else None

    change_progress = change(lambda: label("progress_change_message", "progress.changeMessage"))
    secondary = [
        _field(
            "progress",
            label("progress_label", "progress.label"),
            rendered("progress_value", "progress.value"),
            change_progress,
        ),
        _field(
            "next_reward",
            label("next_reward_label", "next_reward.label"),
            rendered("next_reward_value", "next_reward.value")
            if p.next_reward is not None
            else rendered("all_rewards_earned", "next_reward.value"),
        ),
    ]

    auxiliary = []
    if card.holder.name:
        auxiliary.append(_field("holder", label("holder_label", "holder.label"), card.holder.name))
    vouchers_change = change(
        lambda: strings.key(
            {lang: f"{template.label('vouchers_label', lang)}: %@" for lang in languages},
            "vouchers_ready.changeMessage",
        )
    )
    ready = card.vouchers_ready
    auxiliary.append(
        _field(
            "vouchers_ready",
            label("vouchers_label", "vouchers_ready.label"),
            len(ready),
            vouchers_change,
        )
    )

    back: list[dict[str, Any]] = []
    if ready:
        lines = []
        for v in ready:
            line = f"{v.title}: {v.code}"
            lines.append(f"{line}\n{v.description}" if v.description else line)
        back.append(
            _field("vouchers", label("vouchers_label", "vouchers.label"), "\n\n".join(lines))
        )
    # Always present, so that the first message changes a value (and notifies) rather than adding
    # a field; Apple requires a value, and an empty string is a valid one.
    back.append(
        _field(
            "message",
            label("message_label", "message.label"),
            card.message or "",
            "%@" if notify else None,
        )
    )
    back.append(
        _field(
            "how_to_earn",
            label("how_to_earn_label", "how_to_earn.label"),
            body("how_to_earn", "how_to_earn.value"),
        )
    )
    back.append(_field("terms", label("terms_label", "terms.label"), body("terms", "terms.value")))
    for i, link in enumerate(template.links):
        title = strings.key(
            {lang: localized(link.title, lang, template.default_language) for lang in languages},
            f"link_{i}.label",
        )
        back.append(_field(f"link_{i}", title, link.url))
    if template.website:
        back.append(_field("website", template.organization_name, template.website))

    style: dict[str, Any] = {"secondaryFields": secondary, "auxiliaryFields": auxiliary}
    style["backFields"] = back

    design = template.design
    data: dict[str, Any] = {
        "formatVersion": 1,
        "passTypeIdentifier": pass_type_identifier,
        "teamIdentifier": team_identifier,
        "serialNumber": card.serial,
        "organizationName": template.organization_name,
        "description": template.description,
        "backgroundColor": design.background_color.apple(),
        "foregroundColor": design.foreground_color.apple(),
        "labelColor": design.label_color.apple(),
        "barcodes": [
            {
                "format": BARCODE_FORMATS[template.barcode_format],
                "message": card.serial,
                "messageEncoding": "iso-8859-1",
                "altText": card.serial,
            }
        ],
        "storeCard": style,
    }
    if design.logo is None:
        # Without a logo image the top left of the pass would be empty.
        data["logoText"] = template.organization_name
    if web_service_url is not None:
        data["webServiceURL"] = check_web_service_url(web_service_url, allow_http=allow_http)
        data["authenticationToken"] = _check_token(card.authentication_token)
    if card.state is CardState.VOIDED:
        data["voided"] = True
    expires = card.expires_at
    if expires is None and card.state is CardState.EXPIRED:
        # Expired without a recorded date: any past date makes Wallet show it as expired.
        expires = card.last_stamp_at or card.created_at
    if expires is not None:
        data["expirationDate"] = _iso8601(expires)
    return PassContent(pass_json=data, strings=strings.encoded())


def build_pass_json(
    template: CardTemplate,
    card: Card,
    *,
    pass_type_identifier: str,
    team_identifier: str,
    web_service_url: str | None = None,
    allow_http: bool = False,
    notify: bool = True,
) -> dict[str, Any]:
    """The ``pass.json`` of ``card`` as a dict (a ``storeCard``). See the module docstring."""
    return compose_pass(
        template,
        card,
        pass_type_identifier=pass_type_identifier,
        team_identifier=team_identifier,
        web_service_url=web_service_url,
        allow_http=allow_http,
        notify=notify,
    ).pass_json


def pass_strings(template: CardTemplate, card: Card) -> dict[str, bytes]:
    """``{"<lang>": <UTF-16 pass.strings bytes>}``, one per template language, same keys in each."""
    return compose_pass(
        template, card, pass_type_identifier="pass.strings", team_identifier="strings"
    ).strings
