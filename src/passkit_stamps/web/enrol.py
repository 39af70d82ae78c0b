"""The public enrolment page of each published template: ``/enrol/<template id>``.

A customer enters name and e-mail (phone and birthday when the template asks for them, and ticks
the template's consent text when it has one), gets a card and lands (303) on the card's page with
its wallet buttons; the card's link also goes to them by e-mail. An address that already holds a
card of the template gets that card's link by e-mail instead of a second card, and the browser is
sent to the "check your e-mail" page.

That difference tells anyone who tries an address whether it holds a card. A template with
``[enrolment] private = true`` closes it: every accepted submission gets the same answer (a 303
to the "check your e-mail" page, the same headers, no body), sent before the store is asked, and
the enrolment runs after it (a background task): a new customer's card link, like an existing
card's, goes by e-mail only. Neither the answer nor its timing depends on the address.

Abuse and forgery:

* CSRF: the form carries a signed token, an HMAC (the app's secret key) of the template, the time
  and a random value also set as a ``SameSite=Strict`` cookie; a POST without both, with another
  template's token or an hour-old one is refused (403). The page's CSP allows forms only to itself.
* Rate limits: token buckets per client address and per template (:class:`RateLimiter`), in the
  memory of this process: with several worker processes each has its own buckets (the limits are
  per process; a proxy in front should limit too). 429 with Retry-After.
* A honeypot field that people do not see: filled in, the request is answered like an address
  that already holds a card, and nothing happens.
* Bodies are bounded (8 KiB) and every field is checked; a bad field re-shows the form (400)
  naming it.

The merchant gets the page's URL and a printable QR poster (PNG or SVG) from
:func:`enrolment_url` and :func:`enrolment_poster` (the CLI's ``enrol-url``, the API).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jinja2
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import images
from ..errors import CardInputError, PasskitStampsError, TemplateNotFoundError
from ..model import CardTemplate, Holder, localized
from . import requests as rq
from .cardpage import readable_on
from .config import IMAGES_PATH, WebConfig

if TYPE_CHECKING:
    from .context import WebContext

logger = logging.getLogger(__name__)

ENROL_PATH = "/enrol"
#: A form older than this is refused (the customer reloads the page).
FORM_LIFETIME = 3600
MAX_BODY = 8192
COOKIE = "enrol_nonce"
HONEYPOT = "website"
_FIELDS = ("name", "email", "phone", "birthday")

_HEADERS = {
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "heading": "Get your card",
        "intro": "Enter your details and your card opens right away; we also e-mail you its link.",
        "intro_private": "Enter your details and we e-mail you the link to your card.",
        "name": "Name",
        "email": "E-mail",
        "phone": "Phone",
        "birthday": "Birthday",
        "submit": "Get my card",
        "sent_heading": "Check your e-mail",
        "sent": "We have sent the link to your card to the address you entered.",
        "expired": "This form has expired. Please reload the page and try again.",
        "busy": "Too many requests. Please wait a moment and try again.",
        "name_error": "Please enter your name (up to 200 characters).",
        "email_error": "Please enter a valid e-mail address.",
        "phone_error": "Please enter your phone number (digits, +, spaces).",
        "birthday_error": "Please enter your birthday (a date in the past).",
        "consent_error": "Please agree to continue.",
        "honeypot": "Leave this field empty",
    },
    "de": {
        "heading": "Ihre Karte",
        "intro": "Geben Sie Ihre Daten ein; Ihre Karte öffnet sich sofort, den Link senden wir "
        "Ihnen auch per E-Mail.",
        "intro_private": "Geben Sie Ihre Daten ein; wir senden Ihnen den Link zu Ihrer Karte per "
        "E-Mail.",
        "name": "Name",
        "email": "E-Mail",
        "phone": "Telefon",
        "birthday": "Geburtstag",
        "submit": "Karte holen",
        "sent_heading": "Bitte sehen Sie in Ihre E-Mails",
        "sent": "Wir haben Ihnen den Link zu Ihrer Karte an die angegebene Adresse gesendet.",
        "expired": "Das Formular ist abgelaufen. Bitte laden Sie die Seite neu.",
        "busy": "Zu viele Anfragen. Bitte versuchen Sie es gleich noch einmal.",
        "name_error": "Bitte geben Sie Ihren Namen ein (bis 200 Zeichen).",
        "email_error": "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "phone_error": "Bitte geben Sie Ihre Telefonnummer ein (Ziffern, +, Leerzeichen).",
        "birthday_error": "Bitte geben Sie Ihren Geburtstag ein (ein Datum in der Vergangenheit).",
        "consent_error": "Bitte stimmen Sie zu, um fortzufahren.",
        "honeypot": "Dieses Feld leer lassen",
    },
}


def enrolment_path(template_id: str) -> str:
    """The enrolment page's path relative to the mount point."""
    return f"{ENROL_PATH}/{template_id}"


def enrolment_url(config: WebConfig, template_id: str) -> str:
    """The public URL of a template's enrolment page (what the merchant shares)."""
    if not isinstance(template_id, str) or not rq_template_id(template_id):
        raise TemplateNotFoundError(f"invalid template id {template_id!r}")
    return config.base_url + enrolment_path(template_id)


def enrolment_poster(config: WebConfig, template_id: str, kind: str = "svg") -> bytes:
    """A printable QR code of the enrolment URL: ``svg`` (vector) or ``png`` (1 cm modules at
    300 dpi would be too big; 12 px per module, a 4-module quiet zone)."""
    import segno

    url = enrolment_url(config, template_id)
    code = segno.make(url, error="q", micro=False)
    out = io.BytesIO()
    if kind == "svg":
        code.save(out, kind="svg", scale=10, border=4, title=url)
    elif kind == "png":
        code.save(out, kind="png", scale=12, border=4)
    else:
        raise CardInputError(f"QR poster kind must be 'svg' or 'png', not {kind!r}")
    return out.getvalue()


def rq_template_id(value: str) -> bool:
    import re

    return re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value) is not None


# -- rate limits ---------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by key, in this process's memory: ``capacity`` requests at once, refilled
    at ``rate`` per second. At most ``max_keys`` buckets are kept (the least recently used go:
    a full bucket is what a forgotten key gets anyway)."""

    def __init__(self, capacity: float, rate: float, *, max_keys: int = 10_000) -> None:
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed (a token taken), else the seconds until a token is free."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


@dataclass
class EnrolmentLimits:
    """Submissions allowed: per client address (default 5 at once, then one a minute) and per
    template (default 60 at once, then one a second). Per process (see the module docs)."""

    per_client: RateLimiter
    per_template: RateLimiter

    @classmethod
    def default(cls) -> EnrolmentLimits:
        return cls(RateLimiter(5, 1 / 60), RateLimiter(60, 1.0))


# -- the form token ------------------------------------------------------------------------------


def _mac(key: bytes, template_id: str, issued: int, nonce: str) -> str:
    data = f"enrol\x00{template_id}\x00{issued}\x00{nonce}".encode()
    digest = hmac.new(key, data, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def form_token(key: bytes, template_id: str, nonce: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(key, template_id, issued, nonce)}"


def form_token_valid(
    key: bytes, template_id: str, nonce: str, token: str, now: float | None = None
) -> bool:
    issued_text, _, mac = token.partition(".")
    if not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
        return False
    if not nonce or len(nonce) > 64:
        return False
    issued = int(issued_text)
    now = time.time() if now is None else now
    if not issued - 60 <= now <= issued + FORM_LIFETIME:
        return False
    return hmac.compare_digest(mac, _mac(key, template_id, issued, nonce))


# -- the page ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("passkit_stamps.web", "templates"),
        autoescape=True,  # the merchant's texts and the customer's input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _language(request: Request, template: CardTemplate) -> str:
    """The first of the browser's languages the template has (else the template's default)."""
    header = request.headers.get("accept-language", "")[:500]
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        for candidate in (tag, tag.split("-")[0]):
            if candidate in template.texts:
                return candidate
    return template.default_language


def _label(lang: str, key: str) -> str:
    return LABELS.get(lang, LABELS["en"]).get(key) or LABELS["en"][key]


class EnrolmentPages:
    """``GET/POST /enrol/{template_id}`` and ``GET /enrol/{template_id}/sent``."""

    def __init__(self, ctx: WebContext, limits: EnrolmentLimits | None = None) -> None:
        self.ctx = ctx
        self.limits = limits or EnrolmentLimits.default()

    def routes(self) -> list[Route]:
        return [
            Route(ENROL_PATH + "/{template_id}", self.form, methods=["GET", "HEAD"]),
            Route(ENROL_PATH + "/{template_id}", self.submit, methods=["POST"]),
            Route(ENROL_PATH + "/{template_id}/sent", self.sent, methods=["GET", "HEAD"]),
        ]

    async def _template(self, request: Request) -> CardTemplate | None:
        template_id = request.path_params["template_id"]
        if not rq_template_id(template_id):
            return None
        try:
            return await self.ctx.service.get_template(template_id)
        except TemplateNotFoundError:
            return None

    def _render(self, name: str, template: CardTemplate, lang: str, **values: Any) -> str:
        root = self.ctx.config.mount_path
        design = template.design
        logo = None
        if design.logo is not None:
            logo = root + IMAGES_PATH + "/" + images.image_name(template, "logo")
        context = {
            "lang": lang,
            "name": template.name,
            "organization": template.organization_name,
            "logo": logo,
            "colors": {
                "background": design.background_color.hex(),
                "foreground": readable_on(design.background_color, design.foreground_color),
                "label": readable_on(design.background_color, design.label_color),
            },
            "t": LABELS["en"] | LABELS.get(lang, {}),
            **values,
        }
        return _environment().get_template(name).render(context)

    def _form_page(
        self,
        template: CardTemplate,
        lang: str,
        nonce: str,
        *,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        consent = template.enrolment.consent
        html = self._render(
            "enrol.html",
            template,
            lang,
            action=self.ctx.config.mount_path + enrolment_path(template.id),
            token=form_token(self.ctx.config.secret_key, template.id, nonce),
            language=lang,
            private=template.enrolment.private,
            ask_phone=template.enrolment.ask_phone,
            ask_birthday=template.enrolment.ask_birthday,
            consent=(localized(consent, lang, template.default_language) if consent else None),
            # Every key present: the page template runs with StrictUndefined.
            values={k: "" for k in _FIELDS} | (values or {}),
            errors={k: "" for k in (*_FIELDS, "consent")} | (errors or {}),
            honeypot=HONEYPOT,
        )
        response = HTMLResponse(html, status_code=status, headers=_HEADERS)
        self._set_nonce(response, nonce)
        return response

    def _set_nonce(self, response: Response, nonce: str) -> None:
        response.set_cookie(
            COOKIE,
            nonce,
            max_age=FORM_LIFETIME,
            path=(self.ctx.config.mount_path or "") + ENROL_PATH,
            secure=self.ctx.config.public_url.startswith("https:"),
            httponly=True,
            samesite="strict",
        )

    async def form(self, request: Request) -> Response:
        template = await self._template(request)
        if template is None:
            return _not_found()
        nonce = request.cookies.get(COOKIE) or ""
        if not (16 <= len(nonce) <= 64 and nonce.isascii()):
            nonce = secrets.token_urlsafe(18)
        return self._form_page(template, _language(request, template), nonce)

    async def sent(self, request: Request) -> Response:
        template = await self._template(request)
        if template is None:
            return _not_found()
        lang = request.query_params.get("lang", "")
        if lang not in template.texts:
            lang = _language(request, template)
        return HTMLResponse(self._render("enrol_sent.html", template, lang), headers=_HEADERS)

    def _message(self, template: CardTemplate, lang: str, key: str, status: int) -> Response:
        html = self._render("enrol_sent.html", template, lang, notice=_label(lang, key))
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    async def submit(self, request: Request) -> Response:
        template = await self._template(request)
        if template is None:
            return _not_found()
        lang = _language(request, template)
        client = request.client.host if request.client else "unknown"
        wait = max(
            self.limits.per_client.take(f"{client}"),
            self.limits.per_template.take(template.id),
        )
        if wait > 0:
            response = self._message(template, lang, "busy", 429)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return Response("form expected\n", status_code=415, media_type="text/plain")
        try:
            body = await rq.read_body(
                request.stream(), MAX_BODY, content_length=request.headers.get("content-length")
            )
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Response("form is not UTF-8\n", status_code=400, media_type="text/plain")
        fields: dict[str, str] = {}
        for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=20):
            fields.setdefault(key, value)
        if fields.get("language") in template.texts:
            lang = fields["language"]
        nonce = request.cookies.get(COOKIE, "")
        if not form_token_valid(
            self.ctx.config.secret_key, template.id, nonce, fields.get("token", "")
        ):
            response = self._message(template, lang, "expired", 403)
            return response
        sent = self._sent_url(template, lang)
        if fields.get(HONEYPOT, ""):
            # A bot: answered like an address that holds a card; nothing is stored or sent.
            return RedirectResponse(sent, status_code=303, headers=_HEADERS)
        holder, errors = self._holder(template, fields)
        if holder is None:
            values = {k: fields.get(k, "")[:400] for k in ("name", "email", "phone", "birthday")}
            return self._form_page(template, lang, nonce, values=values, errors=errors, status=400)
        if template.enrolment.private:
            # The same answer for a new address and a known one, complete before the store is
            # asked: the enrolment (a card, or the existing card's link) runs after it.
            task = BackgroundTask(self._enrol_after_answer, template.id, holder, lang)
            return RedirectResponse(sent, status_code=303, headers=_HEADERS, background=task)
        try:
            result = await self.ctx.service.enrol(
                template.id, holder, language=lang, actor="enrolment page"
            )
        except TemplateNotFoundError:
            return _not_found()
        except PasskitStampsError:
            return self._message(template, lang, "expired", 400)
        if result.change is None:
            return RedirectResponse(sent, status_code=303, headers=_HEADERS)
        page = self.ctx.config.mount_path + self.ctx.config.card_page_path(
            result.change.card.serial
        )
        return RedirectResponse(page, status_code=303, headers=_HEADERS)

    async def _enrol_after_answer(self, template_id: str, holder: Holder, lang: str) -> None:
        """A private enrolment, once its answer is sent: nobody waits for the outcome, so a
        failure is logged (the error class only: its message may quote what was typed)."""
        try:
            await self.ctx.service.enrol(template_id, holder, language=lang, actor="enrolment page")
        except PasskitStampsError as exc:
            logger.error(
                "private enrolment on %r not completed: %s", template_id, type(exc).__name__
            )
        except Exception:
            logger.exception("private enrolment on %r failed", template_id)

    def _sent_url(self, template: CardTemplate, lang: str) -> str:
        return self.ctx.config.mount_path + enrolment_path(template.id) + f"/sent?lang={lang}"

    def _holder(
        self, template: CardTemplate, fields: dict[str, str]
    ) -> tuple[Holder | None, dict[str, str]]:
        errors: dict[str, str] = {}
        name = " ".join(fields.get("name", "").split())
        email = fields.get("email", "").strip()
        if not 1 <= len(name) <= 200:
            errors["name"] = "name_error"
        values: dict[str, Any] = {"name": name, "email": email.lower() or None}
        if template.enrolment.ask_phone:
            values["phone"] = fields.get("phone", "").strip() or None
            if values["phone"] is None:
                errors["phone"] = "phone_error"
        if template.enrolment.ask_birthday:
            raw = fields.get("birthday", "").strip()
            try:
                birthday = date.fromisoformat(raw)
                if not date(1900, 1, 1) <= birthday <= date.today():
                    raise ValueError(raw)
                values["birthday"] = birthday
            except ValueError:
                errors["birthday"] = "birthday_error"
        if template.enrolment.consent is not None and fields.get("consent") != "yes":
            errors["consent"] = "consent_error"
        if not email:
            errors["email"] = "email_error"
        holder = None
        try:
            holder = Holder(**values)
        except CardInputError as exc:
            for problem in getattr(exc, "problems", []) or []:
                field = str(getattr(problem, "place", "")).rsplit(".", 1)[-1].split(" ")[-1]
                for known in ("name", "email", "phone", "birthday"):
                    if known in field:
                        errors.setdefault(known, f"{known}_error")
            if not errors:
                errors["email"] = "email_error"
        return (holder if not errors else None), errors


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain")
