"""The card's web page: the holder's card as a phone-friendly HTML page ("web version").

Pure rendering: (template, card, links) in, HTML out. Holder names and merchant texts are user
input, so the page template runs with autoescape on; the only markup inserted unescaped is the QR
code SVG that :mod:`segno` draws from a voucher code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jinja2
import segno
from markupsafe import Markup

from ..apple.media import PKPASS_MIME_TYPE
from ..model import (
    BUILTIN_LABELS,
    Card,
    CardState,
    CardTemplate,
    Color,
    card_text,
    localized,
    progress,
    text_context,
)

#: Labels only the page needs (the pass labels come from the template). Other languages take
#: English for these few words.
PAGE_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "card_number": "Card number",
        "stamps_alt": "{stamps} of {required} stamps collected",
        "logo_alt": "{organization} logo",
        "current_reward": "Reward reached",
        "redeem_code": "Redeem code",
        "qr_label": "QR code of the redeem code {code}",
        "show_at_counter": "Show this code at the counter.",
        "redeemed_at": "Redeemed on {date}",
        "redeemed_rewards": "Redeemed",
        "no_vouchers": "No rewards ready yet.",
        "add_to_apple": "Add to Apple Wallet",
        "save_to_google": "Save to Google Wallet",
        "wallet_heading": "Keep this card in your wallet",
        "state_voided": "This card is no longer valid.",
        "state_expired": "This card has expired.",
        "state_completed": "This card is complete. Thank you!",
        "valid_until": "Valid until",
        "last_stamp": "Last stamp",
        "links": "Links",
        # The heading when the card's language is not the template's: the template's name is
        # written in its default language only.
        "card_title": "Stamp card",
        "next_reward_in": "{reward} in {remaining} stamps",
        "next_reward_in_one": "{reward} in 1 stamp",
    },
    "de": {
        "card_number": "Kartennummer",
        "stamps_alt": "{stamps} von {required} Stempeln gesammelt",
        "logo_alt": "Logo von {organization}",
        "current_reward": "Prämie erreicht",
        "redeem_code": "Einlösecode",
        "qr_label": "QR-Code des Einlösecodes {code}",
        "show_at_counter": "Zeigen Sie diesen Code an der Kasse.",
        "redeemed_at": "Eingelöst am {date}",
        "redeemed_rewards": "Eingelöst",
        "no_vouchers": "Noch keine Prämien bereit.",
        "add_to_apple": "Zu Apple Wallet hinzufügen",
        "save_to_google": "In Google Wallet speichern",
        "wallet_heading": "Karte im Wallet speichern",
        "state_voided": "Diese Karte ist nicht mehr gültig.",
        "state_expired": "Diese Karte ist abgelaufen.",
        "state_completed": "Diese Karte ist voll. Vielen Dank!",
        "valid_until": "Gültig bis",
        "last_stamp": "Letzter Stempel",
        "links": "Links",
        "card_title": "Stempelkarte",
        "next_reward_in": "{reward} in {remaining} Stempeln",
        "next_reward_in_one": "{reward} in 1 Stempel",
    },
}

_MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "de": (
        "Januar", "Februar", "März", "April", "Mai", "Juni",
        "Juli", "August", "September", "Oktober", "November", "Dezember",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class CardPageLinks:
    """Where the page's images and buttons point (URLs, relative or absolute)."""

    stamp_grid: str
    logo: str | None = None
    apple_pass: str | None = None
    #: The "Save to Google Wallet" link; None hides the button (Google not configured).
    google_save: str | None = None


def page_label(key: str, language: str, **values: Any) -> str:
    """A page label in ``language`` (English when the language has none)."""
    text = PAGE_LABELS.get(language, PAGE_LABELS["en"]).get(key) or PAGE_LABELS["en"][key]
    return text.format(**values) if values else text


def format_date(moment: datetime, language: str) -> str:
    """A date as people write it: "12 May 2026", "12. Mai 2026" (UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    months = _MONTHS.get(language, _MONTHS["en"])
    if language == "de":
        return f"{moment.day}. {months[moment.month - 1]} {moment.year}"
    return f"{moment.day} {months[moment.month - 1]} {moment.year}"


@lru_cache(maxsize=512)
def qr_svg(data: str) -> Markup:
    """A QR code (never a Micro QR: phones' scanners read only full QR) as inline SVG."""
    code = segno.make(data, error="m", micro=False)
    svg = code.svg_inline(scale=1, border=2, omitsize=True, dark="#000", light="#fff")
    # segno draws only from the modules; the data itself never appears in the markup.
    return Markup(svg)


def readable_on(background: Color, preferred: Color) -> str:
    """``preferred`` when it reads on ``background`` (WCAG AA, 4.5:1), else black or white."""
    if preferred.contrast(background) >= 4.5:
        return preferred.hex()
    black, white = Color(0, 0, 0), Color(255, 255, 255)
    return black.hex() if black.contrast(background) >= white.contrast(background) else white.hex()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("passkit_stamps.web", "templates"),
        autoescape=True,  # holder names and merchant texts are user input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _next_reward_text(
    template: CardTemplate, lang: str, ctx: dict[str, Any], reward: str, remaining: int
) -> str:
    """The next reward and how many stamps it takes. The built-in label has no unit ("Gratis
    Haarkur in 3"; kept for passes), so the page says it with one unless the merchant wrote
    their own text."""
    if template.texts[lang].next_reward_value is not None or lang not in BUILTIN_LABELS:
        return card_text(template, "next_reward_value", lang, ctx)
    key = "next_reward_in_one" if remaining == 1 else "next_reward_in"
    return page_label(key, lang, reward=reward, remaining=remaining)


def page_context(
    template: CardTemplate, card: Card, links: CardPageLinks, *, language: str | None = None
) -> dict[str, Any]:
    """Everything the page shows, as plain values (also what tests check)."""
    lang = language or card.language or template.default_language
    if lang not in template.texts:
        lang = template.default_language
    ctx = text_context(template, card, lang)
    p = progress(template, card)

    def label(key: str) -> str:
        # As pass.json: a text that fails to render falls back (logged), never disappears.
        return card_text(template, key, lang, ctx)

    def title(value: Any) -> str:
        return localized(value, lang, template.default_language)

    design = template.design
    vouchers_ready = [
        {
            "title": v.title,
            "description": v.description,
            "code": v.code,
            "qr": qr_svg(v.code),
            "qr_label": page_label("qr_label", lang, code=v.code),
        }
        for v in card.vouchers
        if not v.redeemed
    ]
    redeemed = [
        {
            "title": v.title,
            "code": v.code,
            "status": page_label("redeemed_at", lang, date=format_date(v.redeemed_at, lang)),
        }
        for v in sorted(card.vouchers, key=lambda v: v.redeemed_at or v.issued_at, reverse=True)
        if v.redeemed_at is not None
    ][:10]
    state_notice = {
        CardState.VOIDED: page_label("state_voided", lang),
        CardState.EXPIRED: page_label("state_expired", lang),
        CardState.COMPLETED: page_label("state_completed", lang),
    }.get(card.state)
    next_reward = (
        _next_reward_text(template, lang, ctx, ctx["next_reward"], p.remaining)
        if p.next_reward
        else None
    )
    # The template's name is in its default language: other languages get a generic heading.
    name = template.name if lang == template.default_language else page_label("card_title", lang)
    return {
        "lang": lang,
        "name": name,
        "organization": template.organization_name,
        "colors": {
            "background": design.background_color.hex(),
            "foreground": readable_on(design.background_color, design.foreground_color),
            "label": readable_on(design.background_color, design.label_color),
        },
        "links": links,
        "pkpass_type": PKPASS_MIME_TYPE,
        "logo_alt": page_label("logo_alt", lang, organization=template.organization_name),
        "holder_label": label("holder_label"),
        "holder_name": card.holder.name,
        "card_number_label": page_label("card_number", lang),
        "serial": card.serial,
        "progress_label": label("progress_label"),
        "progress_value": label("progress_value"),
        "stamps": p.stamps,
        "required": p.required,
        "percent": p.percent,
        "stamps_alt": page_label("stamps_alt", lang, stamps=p.stamps, required=p.required),
        "next_reward_label": label("next_reward_label"),
        "next_reward": next_reward,
        "current_reward_label": page_label("current_reward", lang),
        "current_reward": title(p.current_reward.title) if p.current_reward else None,
        "all_rewards_earned": None if p.next_reward else label("all_rewards_earned"),
        "vouchers_label": label("vouchers_label"),
        "vouchers": vouchers_ready,
        "redeemed_label": page_label("redeemed_rewards", lang),
        "redeemed": redeemed,
        "no_vouchers": page_label("no_vouchers", lang),
        "redeem_code_label": page_label("redeem_code", lang),
        "show_at_counter": page_label("show_at_counter", lang),
        "wallet_heading": page_label("wallet_heading", lang),
        "add_to_apple": page_label("add_to_apple", lang),
        "save_to_google": page_label("save_to_google", lang),
        "state_notice": state_notice,
        "active": card.state is CardState.ACTIVE,
        "valid_until_label": page_label("valid_until", lang),
        "valid_until": (
            format_date(card.expires_at, lang)
            if card.expires_at and card.state is CardState.ACTIVE
            else None
        ),
        "last_stamp_label": page_label("last_stamp", lang),
        "last_stamp": format_date(card.last_stamp_at, lang) if card.last_stamp_at else None,
        "message_label": label("message_label"),
        "message": card.message,
        "how_to_earn_label": label("how_to_earn_label"),
        "how_to_earn": card_text(template, "how_to_earn", lang, ctx),
        "terms_label": label("terms_label"),
        "terms": card_text(template, "terms", lang, ctx),
        "links_label": page_label("links", lang),
        "website": template.website,
        "extra_links": [{"title": title(link.title), "url": link.url} for link in template.links],
    }


def render_card_page(
    template: CardTemplate, card: Card, links: CardPageLinks, *, language: str | None = None
) -> str:
    """The card page as HTML (UTF-8 text)."""
    page = _environment().get_template("card.html")
    return page.render(page_context(template, card, links, language=language))
