"""LoyaltyClass and LoyaltyObject resources for Google Wallet, built from a template and a card.

Pure and deterministic: the same template, card and settings give the same dict, so an unchanged
card produces an identical PATCH body.

Design choices (see docs/google.md):

* **One class per template, not per version.** The class holds what the program looks like
  (names, logo, colour, links); the rules of a version (stamps required, rewards) show on the
  object. Cards of v1 and v2 stay in one program in the holder's wallet, and a new version does not
  need a new class review. The class is built from the newest published version.
* **Images by URL.** Google fetches images from public URLs and caches them, so every URL is the
  configured base URL plus the images module's content-addressed name: a changed picture gets a
  new URL and Google never shows a stale one.
* **Texts in the card's language** on the object (keeps it small enough for a full Save link);
  the class carries the issuer and program names for every language of the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import GoogleConfigError
from ..images import image_name
from ..model import (
    BarcodeFormat,
    Card,
    CardState,
    CardTemplate,
    Voucher,
    card_text,
    localized,
    progress,
    text_context,
)
from .ids import check_issuer_id, class_id, module_id, object_id

Resource = dict[str, Any]

#: Google's barcode types for the template's barcode formats.
BARCODE_TYPES: Mapping[BarcodeFormat, str] = {
    BarcodeFormat.QR: "QR_CODE",
    BarcodeFormat.PDF417: "PDF_417",
    BarcodeFormat.AZTEC: "AZTEC",
    BarcodeFormat.CODE128: "CODE_128",
}

#: Google's object states for the card states.
OBJECT_STATES: Mapping[CardState, str] = {
    CardState.ACTIVE: "ACTIVE",
    CardState.COMPLETED: "COMPLETED",
    CardState.VOIDED: "INACTIVE",
    CardState.EXPIRED: "EXPIRED",
}

#: Google shows at most 10 text modules; the library never sends more.
MAX_TEXT_MODULES = 10

#: Object fields the builder leaves out when empty. A PATCH keeps fields it does not mention, so
#: :func:`patch_body` sends these as ``null`` to delete a stale value (an expiry that was lifted,
#: a holder name that was removed).
CLEARABLE_OBJECT_FIELDS = ("accountName", "validTimeInterval")
CLEARABLE_CLASS_FIELDS = ("callbackOptions", "homepageUri", "linksModuleData", "heroImage")

# Module ids (plain letters: no dots, nothing to escape): the class's card template references
# the first two by these names.
PROGRESS = "progress"
NEXT_REWARD = "reward"
MESSAGE = "message"
HOW_TO_EARN = "earn"
TERMS = "terms"


@dataclass(frozen=True)
class GoogleSettings:
    """Issuer-wide settings for building Google resources.

    ``image_base_url`` is the public HTTPS address under which the images module's names are
    served (Google fetches them when a pass is saved). ``callback_url`` receives save/delete
    callbacks when set.
    """

    issuer_id: str
    image_base_url: str
    callback_url: str | None = None
    country_code: str | None = None

    def __post_init__(self) -> None:
        check_issuer_id(self.issuer_id)
        _check_https(self.image_base_url, "image base URL")
        if self.callback_url is not None:
            _check_https(self.callback_url, "callback URL")
        if self.country_code is not None and not (
            len(self.country_code) == 2
            and self.country_code.isascii()
            and self.country_code.isalpha()
        ):
            raise GoogleConfigError(f"invalid country code {self.country_code!r}: use e.g. 'US'")

    def image_url(self, name: str) -> str:
        """The public URL of a content-addressed image name."""
        return f"{self.image_base_url.rstrip('/')}/{name.lstrip('/')}"


def _check_https(url: str, what: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.netloc
        or any(c.isspace() for c in url)
    ):
        raise GoogleConfigError(f"invalid {what} {url!r}: Google needs a public https:// URL")


# -- small value builders ---------------------------------------------------------------------


def _localized(
    default: str, language: str, translations: Mapping[str, str] | None = None
) -> Resource:
    value: Resource = {"defaultValue": {"language": language, "value": default}}
    others = [
        {"language": lang, "value": text}
        for lang, text in (translations or {}).items()
        if lang != language
    ]
    if others:
        value["translatedValues"] = others
    return value


def _image(url: str, description: str, language: str) -> Resource:
    return {"sourceUri": {"uri": url}, "contentDescription": _localized(description, language)}


def _text(name: str, header: str, body: str) -> Resource:
    return {"id": module_id(name), "header": header, "body": body}


# -- the class --------------------------------------------------------------------------------


def build_loyalty_class(template: CardTemplate, settings: GoogleSettings) -> Resource:
    """The LoyaltyClass for ``template`` (shared by every version of the template)."""
    lang = template.default_language
    every_language = dict.fromkeys(template.languages)
    resource: Resource = {
        "id": class_id(settings.issuer_id, template.id),
        "issuerName": template.organization_name,
        "localizedIssuerName": _localized(
            template.organization_name,
            lang,
            dict.fromkeys(every_language, template.organization_name),
        ),
        "programName": template.name,
        "localizedProgramName": _localized(
            template.name, lang, dict.fromkeys(every_language, template.name)
        ),
        "programLogo": _image(
            settings.image_url(image_name(template, "program-logo")),
            template.organization_name,
            lang,
        ),
        # The empty grid: what a new card looks like (each object shows its own progress).
        "heroImage": _image(
            settings.image_url(image_name(template, "hero", 0)), template.name, lang
        ),
        "hexBackgroundColor": template.design.background_color.hex(),
        "reviewStatus": "UNDER_REVIEW",
        "multipleDevicesAndHoldersAllowedStatus": "ONE_USER_ALL_DEVICES",
        "classTemplateInfo": _class_template_info(),
    }
    if settings.country_code:
        resource["countryCode"] = settings.country_code.upper()
    if settings.callback_url:
        resource["callbackOptions"] = {"url": settings.callback_url}
    if template.website:
        resource["homepageUri"] = {
            "uri": template.website,
            "description": template.organization_name,
        }
    if template.links:
        resource["linksModuleData"] = {
            "uris": [
                {
                    "id": module_id(f"link-{i}"),
                    "uri": link.url,
                    "description": localized(link.title, lang, lang),
                    "localizedDescription": _localized(
                        localized(link.title, lang, lang),
                        lang,
                        {other: localized(link.title, other, lang) for other in template.languages},
                    ),
                }
                for i, link in enumerate(template.links)
            ]
        }
    return resource


def _class_template_info() -> Resource:
    # The card face: one row with the progress and the next reward, both read from the object's
    # text modules so they follow the card's language and progress.
    def item(module: str) -> Resource:
        return {"firstValue": {"fields": [{"fieldPath": f"object.textModulesData['{module}']"}]}}

    return {
        "cardTemplateOverride": {
            "cardRowTemplateInfos": [
                {"twoItems": {"startItem": item(PROGRESS), "endItem": item(NEXT_REWARD)}}
            ]
        }
    }


# -- the object -------------------------------------------------------------------------------


def build_loyalty_object(template: CardTemplate, card: Card, settings: GoogleSettings) -> Resource:
    """The LoyaltyObject for ``card`` (issued from ``template``)."""
    if card.template_id != template.id:
        raise GoogleConfigError(
            f"card {card.serial} belongs to template {card.template_id!r}, not {template.id!r}"
        )
    lang = card.language if card.language in template.texts else template.default_language
    context = text_context(template, card, lang)
    p = progress(template, card)

    def label(key: str) -> str:  # a text that fails becomes a fallback, never an error
        return card_text(template, key, lang, context)

    balance = f"{p.stamps}/{p.required}"
    resource: Resource = {
        "id": object_id(settings.issuer_id, card.serial),
        "classId": class_id(settings.issuer_id, template.id),
        "state": OBJECT_STATES[card.state],
        "loyaltyPoints": {"label": label("progress_label"), "balance": {"string": balance}},
        "secondaryLoyaltyPoints": {
            "label": label("vouchers_label"),
            "balance": {"int": len(card.vouchers_ready)},
        },
        "accountId": card.serial,
        "barcode": {
            "type": BARCODE_TYPES[template.barcode_format],
            "value": card.serial,
            "alternateText": card.serial,
        },
        "heroImage": _image(
            settings.image_url(image_name(template, "hero", p.stamps)),
            f"{label('progress_label')}: {balance}",
            lang,
        ),
    }
    if card.holder.name:
        resource["accountName"] = card.holder.name

    next_body = (
        label("next_reward_value") if p.next_reward is not None else label("all_rewards_earned")
    )
    modules = [
        _text(
            PROGRESS,
            label("progress_label"),
            label("progress_value"),
        ),
        _text(NEXT_REWARD, label("next_reward_label"), next_body),
    ]
    if card.message:
        modules.append(_text(MESSAGE, label("message_label"), card.message))
    tail = [
        _text(
            HOW_TO_EARN,
            label("how_to_earn_label"),
            card_text(template, "how_to_earn", lang, context),
        ),
        _text(TERMS, label("terms_label"), card_text(template, "terms", lang, context)),
    ]
    modules.extend(
        _voucher_modules(card.vouchers_ready, MAX_TEXT_MODULES - len(modules) - len(tail))
    )
    modules.extend(tail)
    resource["textModulesData"] = modules

    if card.expires_at is not None:
        resource["validTimeInterval"] = {"end": {"date": _iso(card.expires_at)}}
    return resource


def build_message(template: CardTemplate, card: Card, message_id: str | None) -> Resource | None:
    """The card's current message as Google's ``addMessage`` wants it (``id``, ``header``: the
    template's message label in the card's language, ``body``), or None when the card has no
    message. The id is the one stored with the message (``CardState.message_id``), so adding
    it again on a retried delivery adds nothing new. ``messageType`` is the client's choice
    (``TEXT_AND_NOTIFY`` only for a notified change: :meth:`WalletClient.add_message`)."""
    if not card.message:
        return None
    lang = card.language if card.language in template.texts else template.default_language
    header = card_text(template, "message_label", lang, text_context(template, card, lang))
    ident = message_id or f"message-{card.serial}"
    return {"id": ident[:64], "header": header[:200] or template.name, "body": card.message}


def _voucher_body(v: Voucher) -> str:
    return f"{v.description}\nCode: {v.code}" if v.description else f"Code: {v.code}"


def _voucher_modules(vouchers: tuple[Voucher, ...], slots: int) -> list[Resource]:
    """One text module per voucher ready to redeem, with its redeem code. When there are more
    vouchers than free slots, the last slot lists the rest, so no code is ever hidden."""
    if not vouchers or slots <= 0:
        return []
    if len(vouchers) <= slots:
        return [_text(f"voucher-{v.code}", v.title, _voucher_body(v)) for v in vouchers]
    shown = [_text(f"voucher-{v.code}", v.title, _voucher_body(v)) for v in vouchers[: slots - 1]]
    rest = vouchers[slots - 1 :]
    body = "\n".join(f"{v.title}: {v.code}" for v in rest)
    return [*shown, _text("vouchers-more", f"+{len(rest)}", body)]


def _iso(moment: datetime) -> str:
    # Google wants ISO 8601 extended format; a naive datetime is taken as UTC (the library stores
    # UTC throughout).
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- PATCH bodies -----------------------------------------------------------------------------


def patch_body(resource: Mapping[str, Any], clearable: tuple[str, ...]) -> Resource:
    """``resource`` as a PATCH body: fields the builder left out are sent as ``null`` so Google
    deletes stale values (PATCH keeps any field it is not told about)."""
    body: Resource = dict(resource)
    for name in clearable:
        body.setdefault(name, None)
    return body


def skinny_object(resource: Mapping[str, Any]) -> Resource:
    """The object reduced to what a skinny Save link carries: its id and class id."""
    return {"id": resource["id"], "classId": resource["classId"]}
