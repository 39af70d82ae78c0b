"""The stamp-card domain: templates (the program), issued cards, rewards and vouchers.

Everything here is validated, typed and immutable. A :class:`CardTemplate` is usually loaded from a
folder (``templates/<id>/template.toml`` plus PNG images) with :meth:`CardTemplate.load`; every
problem in it is reported at once in one :class:`~passkit_stamps.errors.TemplateError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import CardInputError, PasskitStampsError, Problem, TemplateError, TextTemplateError

# The text templates (.templating, on jinja2) are imported where a text is checked or rendered:
# a template read back from a store is not checked again, and a stamp renders no text.

TEMPLATE_FILE = "template.toml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bounds on template files, checked before reading or decoding: a 657 KB PNG can declare
#: 13,000 x 13,000 pixels (under Pillow's own limit) and take gigabytes to decode.
MAX_TEMPLATE_FILE_BYTES = 1024 * 1024
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
#: Nesting of the parsed template.toml (tomllib recurses per level).
MAX_TOML_DEPTH = 16

# -- colours ------------------------------------------------------------------------------------


class _RGB(NamedTuple):
    r: int
    g: int
    b: int


class Color(_RGB):
    """An sRGB colour. Written in templates as ``#rrggbb`` or ``rgb(r, g, b)``.

    Each channel is an integer 0 to 255; anything else is a TemplateError."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        try:
            channels = _RGB(*args, **kwargs)
        except TypeError:  # a wrong count or name of arguments
            raise TemplateError([Problem("colour", "invalid colour: give r, g and b")]) from None
        if reason := _channel_problem(channels):
            raise TemplateError(
                [Problem("colour", f"invalid colour {tuple(channels)!r:.60}: {reason}")]
            )
        return super().__new__(cls, *channels)

    def apple(self) -> str:
        """Apple's pass.json form: ``rgb(r, g, b)``."""
        return f"rgb({self.r}, {self.g}, {self.b})"

    def hex(self) -> str:
        """Google's and CSS's form: ``#rrggbb``."""
        return f"#{self.r:02x}{self.g:02x}{self.b:02x}"

    def luminance(self) -> float:
        """WCAG relative luminance, for contrast checks."""

        def channel(c: int) -> float:
            s = c / 255
            return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(self.r) + 0.7152 * channel(self.g) + 0.0722 * channel(self.b)

    def contrast(self, other: Color) -> float:
        """WCAG contrast ratio between two colours (1 to 21)."""
        a, b = sorted((self.luminance(), other.luminance()), reverse=True)
        return (a + 0.05) / (b + 0.05)


_HEX = re.compile(r"#([0-9a-fA-F]{6})")
_RGB_TEXT = re.compile(r"rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")


def _channel_problem(channels: tuple[Any, ...]) -> str | None:
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
        return "each channel must be an integer"
    if not all(0 <= c <= 255 for c in channels):
        return "each channel must be 0 to 255"
    return None


def _parse_color(value: Any) -> Color:
    """The colour of ``value``; ValueError (for pydantic to place) when it is not one."""
    if isinstance(value, Color):
        return value
    if isinstance(value, tuple | list) and len(value) == 3:
        channels = tuple(value)
    elif isinstance(value, str) and (m := _HEX.fullmatch(value.strip())):
        h = m.group(1)
        channels = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    elif isinstance(value, str) and (m := _RGB_TEXT.fullmatch(value.strip())):
        channels = tuple(int(m.group(i)) for i in (1, 2, 3))
    else:
        raise ValueError(f"invalid colour {value!r:.60}: use '#rrggbb' or 'rgb(r, g, b)'")
    if reason := _channel_problem(channels):
        raise ValueError(f"invalid colour {value!r:.60}: {reason}")
    return Color(*channels)


def parse_color(value: Any) -> Color:
    """Parse ``#rrggbb``, ``rgb(r, g, b)`` or three channels; a TemplateError otherwise."""
    try:
        return _parse_color(value)
    except ValueError as exc:
        raise TemplateError([Problem("colour", str(exc))]) from None


ColorField = Annotated[Color, BeforeValidator(_parse_color)]

# -- images -------------------------------------------------------------------------------------


class ImageRole(NamedTuple):
    name: str
    min_width: int
    min_height: int
    square: bool = False


# Minimum pixel sizes: the library scales down, never up, so each role must be large enough for
# its largest use (icon: Google's programLogo wants a square >= 660 px; Apple's @3x icon is 87 px).
ICON = ImageRole("icon", 660, 660, square=True)
LOGO = ImageRole("logo", 150, 150)  # Apple: 160x50 pt box at @3x is 480x150 px; square logos fit
STAMP = ImageRole("stamp", 96, 96, square=True)


def check_png(data: bytes, role: ImageRole) -> bytes:
    """Check that ``data`` is a readable PNG at least as large as ``role`` needs, within
    :data:`MAX_IMAGE_BYTES` and :data:`MAX_IMAGE_PIXELS` (checked from the header, before any
    pixel is decoded)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image larger than {MAX_IMAGE_BYTES:,} bytes ({len(data):,} bytes)")
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image")
    # Imported here: Pillow is a large import that `import passkit_stamps` should not pay.
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # bounded below
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _TooManyPixels(width, height)
                img.verify()
    except _TooManyPixels as exc:
        raise ValueError(
            f"image of {exc.width}x{exc.height} px has more than {MAX_IMAGE_PIXELS:,} pixels "
            f"(e.g. at most 4096x4096)"
        ) from None
    # DecompressionBombError (a huge declared size) is not an OSError: catch it too.
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ValueError(f"unreadable PNG image ({exc})") from exc
    if width < role.min_width or height < role.min_height:
        raise ValueError(
            f"image too small for the {role.name}: {width}x{height} px, "
            f"needs at least {role.min_width}x{role.min_height} px"
        )
    if role.square and abs(width - height) > max(2, width // 50):
        raise ValueError(f"the {role.name} must be square, got {width}x{height} px")
    return data


class _TooManyPixels(Exception):
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height


def _png(role: ImageRole) -> Any:
    return BeforeValidator(lambda v: check_png(v, role) if isinstance(v, bytes) else _not_bytes(v))


def _not_bytes(value: Any) -> bytes:
    raise ValueError(f"expected PNG bytes, got {type(value).__name__}")


IconPng = Annotated[bytes, _png(ICON)]
LogoPng = Annotated[bytes, _png(LOGO)]
StampPng = Annotated[bytes, _png(STAMP)]

# -- the models' errors -------------------------------------------------------------------------


class _Model(BaseModel):
    """Base of the public models: pydantic validates, and a caller gets the library's typed
    error listing every field and its rule, never pydantic's ValidationError (or a TypeError for
    positional arguments)."""

    #: Prefix of each problem's place (``template.toml: `` for a whole template).
    _place_prefix: ClassVar[str] = ""

    def __init__(self, *args: Any, **data: Any) -> None:
        if args:
            raise self._error([Problem("(arguments)", "keyword arguments only")])
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._error(_problems_from(exc, self._place_prefix)) from None

    # Tell pydantic this is its own __init__: nested models are then validated by the core
    # schema (every problem of a Card, with its holder, reported together), not through here.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        extra: Any = None,
        from_attributes: bool | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        try:
            return super().model_validate(
                obj,
                strict=strict,
                extra=extra,
                from_attributes=from_attributes,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        except ValidationError as exc:
            raise cls._error(_problems_from(exc, cls._place_prefix)) from None

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: Any = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        try:
            return super().model_validate_json(
                json_data,
                strict=strict,
                extra=extra,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        except ValidationError as exc:
            raise cls._error(_problems_from(exc, cls._place_prefix)) from None

    @classmethod
    def _validate_raw(cls, obj: Any) -> Self:
        """pydantic's own validation (ValidationError), for callers that place problems."""
        return super().model_validate(obj)

    @classmethod
    def _error(cls, problems: list[Problem]) -> PasskitStampsError:
        raise NotImplementedError


class _TemplatePart(_Model):
    """A template or a part of one: problems are a TemplateError."""

    @classmethod
    def _error(cls, problems: list[Problem]) -> PasskitStampsError:
        return TemplateError(problems, source=cls.__name__)


class _CardPart(_Model):
    """A card or a part of one: problems are a CardInputError."""

    @classmethod
    def _error(cls, problems: list[Problem]) -> PasskitStampsError:
        lines = "\n".join(f"  {p}" for p in problems)
        return CardInputError(
            f"invalid {cls.__name__} ({len(problems)} problem(s)):\n{lines}", problems=problems
        )


# -- template parts -----------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

#: A text in one language, or one per language (``{en = "...", de = "..."}``).
Localized = str | dict[str, str]


def localized(value: Localized, language: str, default_language: str) -> str:
    """Pick ``language`` from a localized text, falling back to the default language."""
    if isinstance(value, str):
        return value
    return value.get(language) or value.get(default_language) or next(iter(value.values()), "")


class RewardStep(_TemplatePart):
    """A reward earned when the card reaches ``at`` stamps."""

    model_config = _STRICT

    at: int = Field(ge=1, strict=True)  # strict: TOML `true` or "8" is a mistake, not 1 or 8
    title: Localized = Field(min_length=1)
    description: Localized = ""


class AfterLastReward(StrEnum):
    """What happens when a card passes its last reward step."""

    NEW_ROUND = "new_round"  # start again at 0; extra stamps are dropped
    CARRY_OVER = "carry_over"  # start again, keeping the stamps beyond the last step
    COMPLETE = "complete"  # the card is completed and takes no more stamps


class BarcodeFormat(StrEnum):
    QR = "qr"
    PDF417 = "pdf417"
    AZTEC = "aztec"
    CODE128 = "code128"


class ExpiryKind(StrEnum):
    NONE = "none"
    FIXED_DATE = "fixed_date"
    DAYS_AFTER_ISSUE = "days_after_issue"
    DAYS_AFTER_LAST_STAMP = "days_after_last_stamp"


class ExpiryRule(_TemplatePart):
    """When cards of a template expire."""

    model_config = _STRICT

    kind: ExpiryKind = ExpiryKind.NONE
    date: datetime | None = None  # for fixed_date (a TOML date or an ISO 8601 date-time)
    days: int | None = Field(default=None, ge=1, le=36_500, strict=True)

    @field_validator("date", mode="before")
    @classmethod
    def _date_to_datetime(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, 23, 59, 59)
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> ExpiryRule:
        if self.kind is ExpiryKind.FIXED_DATE and self.date is None:
            raise ValueError("kind 'fixed_date' needs 'date'")
        timed = (ExpiryKind.DAYS_AFTER_ISSUE, ExpiryKind.DAYS_AFTER_LAST_STAMP)
        if self.kind in timed and self.days is None:
            raise ValueError(f"kind '{self.kind}' needs 'days'")
        return self


class Limits(_TemplatePart):
    """Optional anti-abuse limits on stamping."""

    model_config = _STRICT

    max_stamps_per_visit: int | None = Field(default=None, ge=1, strict=True)
    cooldown_minutes: int | None = Field(default=None, ge=1, strict=True)


class Link(_TemplatePart):
    model_config = _STRICT

    title: Localized
    url: str = Field(pattern=r"^https?://\S+$", max_length=2000)


class Design(_TemplatePart):
    """Colours and images. A design-only change does not change a card's rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background_color: ColorField
    foreground_color: ColorField
    label_color: ColorField
    #: Square brand mark, >= 660 px: Apple's icon and Google's programLogo.
    icon: IconPng
    #: Wide or square logo shown at the top of the Apple pass.
    logo: LogoPng | None = None
    #: Stamp images; a built-in drawing is used when absent.
    stamp_filled: StampPng | None = None
    stamp_empty: StampPng | None = None

    def __repr__(self) -> str:  # keep image bytes out of reprs and logs
        return (
            f"Design(background_color={self.background_color.hex()}, "
            f"foreground_color={self.foreground_color.hex()}, label_color={self.label_color.hex()})"
        )


class TemplateTexts(_TemplatePart):
    """The texts of one language. Values may be jinja2 templates (rendered in the sandbox).

    Variables: ``stamps``, ``required``, ``remaining``, ``next_reward``, ``holder_name``,
    ``vouchers_ready``, ``card_number``, ``organization``. Labels left out take the built-in
    translation for the language (see :data:`BUILTIN_LABELS`).
    """

    model_config = _STRICT

    terms: str = Field(min_length=1, max_length=4000)
    how_to_earn: str = Field(min_length=1, max_length=2000)
    progress_label: str | None = None
    progress_value: str | None = None
    next_reward_label: str | None = None
    next_reward_value: str | None = None
    all_rewards_earned: str | None = None
    holder_label: str | None = None
    vouchers_label: str | None = None
    terms_label: str | None = None
    how_to_earn_label: str | None = None
    message_label: str | None = None
    progress_change_message: str | None = None
    #: E-mails (passkit_stamps.service.email: built-in texts in English and German when left out).
    #: Variables: ``holder_name``, ``organization``, ``template_name``, ``card_url``,
    #: ``message`` (the message e-mail only), ``card_number``, ``stamps``, ``required``.
    email_card_subject: str | None = Field(default=None, max_length=200)
    email_card_body: str | None = Field(default=None, max_length=4000)
    email_existing_subject: str | None = Field(default=None, max_length=200)
    email_existing_body: str | None = Field(default=None, max_length=4000)
    email_message_subject: str | None = Field(default=None, max_length=200)
    email_message_body: str | None = Field(default=None, max_length=4000)

    def label(self, key: str, language: str) -> str:
        """A text by key, falling back to the built-in translation for ``language``."""
        value = getattr(self, key)
        if value is not None:
            return str(value)
        return BUILTIN_LABELS[language][key]


#: Built-in translations of the labels; other languages must give every label themselves.
BUILTIN_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "progress_label": "Stamps",
        "progress_value": "{{ stamps }} / {{ required }}",
        "next_reward_label": "Next reward",
        "next_reward_value": "{{ next_reward }} in {{ remaining }}",
        "all_rewards_earned": "All rewards earned",
        "holder_label": "Member",
        "vouchers_label": "Rewards ready",
        "terms_label": "Terms",
        "how_to_earn_label": "How to earn stamps",
        "message_label": "Message",
        "progress_change_message": "Stamps: %@",
    },
    "de": {
        "progress_label": "Stempel",
        "progress_value": "{{ stamps }} / {{ required }}",
        "next_reward_label": "Nächste Prämie",
        "next_reward_value": "{{ next_reward }} in {{ remaining }}",
        "all_rewards_earned": "Alle Prämien erreicht",
        "holder_label": "Mitglied",
        "vouchers_label": "Einlösbare Prämien",
        "terms_label": "Bedingungen",
        "how_to_earn_label": "So sammeln Sie Stempel",
        "message_label": "Nachricht",
        "progress_change_message": "Stempel: %@",
    },
}
LABEL_KEYS: tuple[str, ...] = tuple(BUILTIN_LABELS["en"])

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class Enrolment(_TemplatePart):
    """The public enrolment page (docs/merchant.md): name and e-mail always; phone and birthday
    when asked for; a consent text the customer must tick when given. Design, not rules: a
    change updates the published version."""

    model_config = _STRICT

    ask_phone: bool = Field(default=False, strict=True)
    ask_birthday: bool = Field(default=False, strict=True)
    consent: Localized | None = None
    #: Every submission gets the same "check your e-mail" answer, the card's link goes by
    #: e-mail only: the page does not tell who holds a card (web/enrol.py). Left out of the
    #: stored form when false, so templates stored before it keep their digest.
    private: bool = Field(default=False, strict=True, exclude_if=lambda v: v is False)

    @field_validator("consent")
    @classmethod
    def _consent_length(cls, v: Localized | None) -> Localized | None:
        texts = [] if v is None else [v] if isinstance(v, str) else list(v.values())
        if any(not 1 <= len(t) <= 1000 for t in texts):
            raise ValueError("consent text must be 1 to 1000 characters")
        return v


# -- the template -------------------------------------------------------------------------------


class CardTemplate(_TemplatePart):
    """A stamp-card program: rules, design and texts, at one version.

    Rules (``stamps_required``, ``rewards``, ``after_last_reward``, ``expiry``, ``limits``) are
    frozen per version; design and texts may change without a new version.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    _place_prefix: ClassVar[str] = f"{TEMPLATE_FILE}: "

    id: str = Field(pattern=_ID)
    version: int = Field(ge=1, strict=True)
    name: str = Field(min_length=1, max_length=100)
    organization_name: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=200)
    stamps_required: int = Field(ge=2, le=30, strict=True)
    rewards: tuple[RewardStep, ...] = Field(min_length=1)
    after_last_reward: AfterLastReward = AfterLastReward.CARRY_OVER
    design: Design
    barcode_format: BarcodeFormat = BarcodeFormat.QR
    #: Texts per language; the first language is the default.
    texts: dict[str, TemplateTexts] = Field(min_length=1)
    expiry: ExpiryRule = ExpiryRule()
    limits: Limits = Limits()
    website: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)
    links: tuple[Link, ...] = ()
    enrolment: Enrolment = Enrolment()

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> CardTemplate:
        # A template read back from a store (context {"stored": True}) was checked when it was
        # published, perhaps under older text rules: its texts are not judged again, so it
        # still loads and each failing text falls back when served (card_text).
        stored = isinstance(info.context, Mapping) and bool(info.context.get("stored"))
        # Texts are rendered only once the rules hold and every text compiles.
        problems = rule_problems(self, check_texts=not stored) or (
            [] if stored else text_problems(self)
        )
        if problems:
            raise TemplateError(problems, source=self.id)
        return self

    # -- derived ------------------------------------------------------------------------------

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.texts)

    @property
    def default_language(self) -> str:
        return next(iter(self.texts))

    @property
    def key(self) -> str:
        """``<id>@v<version>``, as cards show it."""
        return f"{self.id}@v{self.version}"

    @property
    def last_step(self) -> int:
        return self.rewards[-1].at

    @cached_property
    def design_digest(self) -> str:
        """A short hash of everything that changes how the card looks (cache key for images)."""
        h = hashlib.sha256()
        d = self.design
        h.update(repr((d.background_color, d.foreground_color, d.label_color)).encode())
        for image in (d.icon, d.logo, d.stamp_filled, d.stamp_empty):
            h.update(hashlib.sha256(image or b"").digest())
        h.update(str(self.stamps_required).encode())
        return h.hexdigest()[:16]

    def reward_at(self, stamps: int) -> RewardStep | None:
        """The reward earned exactly at ``stamps``, if any."""
        return next((r for r in self.rewards if r.at == stamps), None)

    def next_reward(self, stamps: int) -> RewardStep | None:
        """The next reward still to earn with ``stamps`` in the current round."""
        return next((r for r in self.rewards if r.at > stamps), None)

    def current_reward(self, stamps: int) -> RewardStep | None:
        """The highest reward already reached in the current round."""
        reached = [r for r in self.rewards if r.at <= stamps]
        return reached[-1] if reached else None

    def texts_for(self, language: str | None = None) -> TemplateTexts:
        return self.texts.get(language or "", None) or self.texts[self.default_language]

    def label(self, key: str, language: str | None = None) -> str:
        lang = language if language in self.texts else self.default_language
        return self.texts[lang].label(key, lang)

    def check(self) -> None:
        """Validate the template again from its values, as loading does: the rules, every image
        (bounds included) and every text rendered for representative cards in every language.

        For publishing: ``model_copy(update=...)`` and ``model_construct`` skip validation, and
        a template that skipped it must not reach the store. Raises TemplateError."""
        type(self).model_validate(self.model_dump())

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> CardTemplate:
        """Load ``path/template.toml`` and its images. Raises one TemplateError listing every
        problem with its place."""
        import tomllib  # here: only loading a template folder reads TOML

        if not isinstance(path, str | os.PathLike) or "\0" in str(path):
            raise TemplateError([Problem("(folder)", f"not a folder path: {path!r:.80}")])
        folder = Path(path)
        toml_path = folder / TEMPLATE_FILE
        try:
            with toml_path.open("rb") as f:
                content = f.read(MAX_TEMPLATE_FILE_BYTES + 1)
            if len(content) > MAX_TEMPLATE_FILE_BYTES:
                raise TemplateError(
                    [Problem(TEMPLATE_FILE, f"larger than {MAX_TEMPLATE_FILE_BYTES:,} bytes")],
                    source=str(folder),
                )
            raw = tomllib.loads(content.decode("utf-8"))
            if _nesting(raw) > MAX_TOML_DEPTH:
                raise RecursionError
        except RecursionError:  # tomllib recurses per bracket; deeper than any template needs
            raise TemplateError(
                [Problem(TEMPLATE_FILE, f"nested too deeply (more than {MAX_TOML_DEPTH} levels)")],
                source=str(folder),
            ) from None
        except FileNotFoundError:
            raise TemplateError(
                [Problem(str(toml_path), "file not found")], source=str(folder)
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(
                [Problem(str(toml_path), f"unreadable: {exc}")], source=str(folder)
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError(
                [Problem(TEMPLATE_FILE, f"invalid TOML: {exc}")], source=str(folder)
            ) from None
        return cls.from_mapping(raw, folder=folder)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, folder: Path | None = None) -> CardTemplate:
        """Validate a template given as a mapping (the parsed TOML). Image entries under
        ``design`` are file names relative to ``folder``, or PNG bytes."""
        if not isinstance(raw, Mapping):
            raise TemplateError(
                [Problem("(top level)", f"expected a table of keys, got {type(raw).__name__}")],
                source=str(folder) if folder else None,
            )
        problems: list[Problem] = []
        data = dict(raw)
        design = data.get("design")
        if isinstance(design, Mapping):
            design = dict(design)
            for key in ("icon", "logo", "stamp_filled", "stamp_empty"):
                value = design.get(key)
                if isinstance(value, str):
                    loaded = _read_image(folder, value, f"design.{key}", problems)
                    if loaded is None:
                        design.pop(key)
                        if key == "icon":  # already reported; do not also report "missing"
                            design[key] = _placeholder_icon()
                    else:
                        design[key] = loaded
            data["design"] = design
        source = str(folder) if folder else data.get("id")
        try:
            template = cls._validate_raw(data)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, f"{TEMPLATE_FILE}: "))
            problems.extend(_partial_rule_problems(data, problems))
            raise TemplateError(problems, source=source) from None
        except TemplateError as exc:
            raise TemplateError([*problems, *exc.problems], source=source) from None
        if problems:
            raise TemplateError(problems, source=source)
        return template


def _nesting(value: Any) -> int:
    """How deep lists and tables nest in ``value`` (iterative: the value may be deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_TOML_DEPTH:
            break
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return deepest


@cache  # rendered on first use, not at import (Pillow is a large import)
def _placeholder_icon() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (ICON.min_width, ICON.min_height)).save(buf, "PNG")
    return buf.getvalue()


def _read_image(
    folder: Path | None, name: str, place: str, problems: list[Problem]
) -> bytes | None:
    where = f"{TEMPLATE_FILE}: {place}"
    if folder is None:
        problems.append(Problem(where, f"image file {name!r} given without a template folder"))
        return None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        problems.append(Problem(where, f"image path {name!r} must stay inside the template folder"))
        return None
    return _read_regular_file(folder, name, where, problems)


def _read_regular_file(
    folder: Path, name: str, where: str, problems: list[Problem]
) -> bytes | None:
    """Read ``folder/name`` only when it is a regular file inside ``folder`` (after resolving
    symlinks) and at most MAX_IMAGE_BYTES: a symlink to /dev/zero exhausted memory, one to
    /etc/passwd was read, a FIFO would block."""
    try:
        root = folder.resolve(strict=True)
        target = (folder / name).resolve(strict=True)
    except FileNotFoundError:
        problems.append(Problem(where, f"image file {name!r} not found"))
        return None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        problems.append(Problem(where, f"image file {name!r} unreadable: {exc}"))
        return None
    if not target.is_relative_to(root):
        problems.append(Problem(where, f"image path {name!r} must stay inside the template folder"))
        return None
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the path was resolved
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        problems.append(Problem(where, f"image file {name!r} not found"))
        return None
    except OSError as exc:
        problems.append(Problem(where, f"image file {name!r} unreadable: {exc.strerror}"))
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a directory, FIFO or device
        os.close(fd)
        problems.append(Problem(where, f"image file {name!r} unreadable: not a regular file"))
        return None
    with os.fdopen(fd, "rb") as f:
        if info.st_size > MAX_IMAGE_BYTES:
            problems.append(
                Problem(where, f"image file {name!r} larger than {MAX_IMAGE_BYTES:,} bytes")
            )
            return None
        try:
            data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            problems.append(Problem(where, f"image file {name!r} unreadable: {exc.strerror}"))
            return None
    if len(data) > MAX_IMAGE_BYTES:  # grew while we read it
        problems.append(
            Problem(where, f"image file {name!r} larger than {MAX_IMAGE_BYTES:,} bytes")
        )
        return None
    return data


def _problems_from(exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    errors = exc.errors()
    for err in errors:
        if err["type"] == "too_short" and any(
            other["loc"][: len(err["loc"])] == err["loc"] and len(other["loc"]) > len(err["loc"])
            for other in errors
        ):
            continue  # pydantic's echo of an invalid item ("at least 1 item"), not a problem
        place = ""
        for part in err["loc"]:
            if isinstance(part, int):
                place += f"[{part}]"
            elif part in ("function-before[check_png(), bytes]",) or "function" in str(part):
                continue
            else:
                place += f".{part}" if place else str(part)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "missing key"
        problems.append(Problem(f"{prefix}{place or '(top level)'}", msg))
    return problems


def _partial_rule_problems(data: Mapping[str, Any], known: list[Problem]) -> list[Problem]:
    """Run the cross-field rules on whichever parts validated, so one load reports every
    problem rather than stopping at the first failing field."""
    parts: dict[str, Any] = {}
    adapters: dict[str, Any] = {
        "stamps_required": TypeAdapter(Annotated[int, Field(ge=2, le=30, strict=True)]),
        "rewards": TypeAdapter(tuple[RewardStep, ...]),
        "texts": TypeAdapter(dict[str, TemplateTexts]),
        "links": TypeAdapter(tuple[Link, ...]),
        "expiry": TypeAdapter(ExpiryRule),
    }
    defaults: dict[str, Any] = {
        "stamps_required": 30,
        "rewards": (),
        "texts": {},
        "links": (),
        "expiry": ExpiryRule(),
    }
    failed: set[str] = set()
    for name, adapter in adapters.items():
        try:
            parts[name] = adapter.validate_python(data.get(name, defaults[name]))
        except ValidationError:
            parts[name] = defaults[name]
            failed.add(name)
    if ("stamps_required" in failed or "stamps_required" not in data) and parts["rewards"]:
        # Unknown count: judge nothing against an invented default (already reported).
        parts["stamps_required"] = max(r.at for r in parts["rewards"])
    raw_texts = data.get("texts")
    if "texts" in failed and isinstance(raw_texts, Mapping):
        # Keep every language listed, so rewards and links are not told their languages are
        # missing; a language whose texts are invalid was already reported field by field.
        parts["texts"] = {lang: _texts_or_stub(value) for lang, value in raw_texts.items()}
    seen = {str(p) for p in known}
    shell = CardTemplate.model_construct(**parts)
    return [p for p in rule_problems(shell) if str(p) not in seen]


def _texts_or_stub(value: Any) -> TemplateTexts:
    try:
        return TemplateTexts._validate_raw(value)
    except ValidationError:
        # Every label present and valid: the stub adds no problem of its own.
        filled: dict[str, Any] = {key: "-" for key in ("terms", "how_to_earn", *LABEL_KEYS)}
        filled["progress_change_message"] = "%@"
        return TemplateTexts.model_construct(**filled)


def rule_problems(t: CardTemplate, *, check_texts: bool = True) -> list[Problem]:
    """Cross-field rules pydantic cannot express field by field; with ``check_texts=False``
    the text templates are not judged (a template read back from a store)."""
    if check_texts:
        from .templating import TEXT_VARIABLES, check_text_template
    problems: list[Problem] = []

    def add(place: str, message: str) -> None:
        problems.append(Problem(f"{TEMPLATE_FILE}: {place}", message))

    seen: set[int] = set()
    previous = 0
    for i, step in enumerate(t.rewards):
        if step.at > t.stamps_required:
            add(f"rewards[{i}].at", f"must be <= stamps_required ({t.stamps_required})")
        if step.at in seen:
            add(f"rewards[{i}].at", f"duplicate reward step {step.at}")
        elif step.at < previous:
            add(f"rewards[{i}].at", "reward steps must be in increasing order")
        seen.add(step.at)
        previous = max(previous, step.at)
        for field in ("title", "description"):
            value = getattr(step, field)
            if isinstance(value, dict):
                for lang in t.texts:
                    if not value.get(lang) and (field == "title" or value):
                        add(f"rewards[{i}].{field}", f"missing text for language '{lang}'")
                for lang in value:
                    if lang not in t.texts:
                        add(f"rewards[{i}].{field}.{lang}", "language not listed under [texts]")
    if t.rewards and previous <= t.stamps_required and previous != t.stamps_required:
        # A round ends at the last step; slots beyond it could never fill on the card.
        add(
            f"rewards[{len(t.rewards) - 1}].at",
            f"the last reward step must equal stamps_required ({t.stamps_required})",
        )
    for i, link in enumerate(t.links):
        if isinstance(link.title, dict):
            for lang in t.texts:
                if not link.title.get(lang):
                    add(f"links[{i}].title", f"missing text for language '{lang}'")
    for lang, texts in t.texts.items():
        if not _LANG.match(lang):
            add(f"texts.{lang}", "not a language code (e.g. 'en', 'de', 'pt-BR')")
        for key in LABEL_KEYS:
            if getattr(texts, key) is None and key not in BUILTIN_LABELS.get(lang, {}):
                add(f"texts.{lang}.{key}", f"missing text (no built-in translation for '{lang}')")
        for key in ("terms", "how_to_earn", *LABEL_KEYS):
            value = getattr(texts, key)
            if (
                check_texts
                and value is not None
                and (reason := check_text_template(value, variables=TEXT_VARIABLES))
            ):
                add(f"texts.{lang}.{key}", reason)
        change = texts.progress_change_message
        if change is not None and "%@" not in change:
            add(f"texts.{lang}.progress_change_message", "must contain '%@'")
    if t.expiry.kind is ExpiryKind.FIXED_DATE and t.expiry.days is not None:
        add("expiry.days", "not used with kind 'fixed_date'")
    return problems


#: A holder name at Holder's limit: the longest value a text can be given.
_LONG_NAME = "W" * 200


def _sample_contexts(t: CardTemplate, lang: str) -> list[tuple[str, dict[str, Any]]]:
    """Contexts of representative cards: new, mid-round, at each reward step, one stamp short
    of the end, with vouchers ready, and with the longest holder name."""
    m = t.stamps_required
    counts = sorted({0, 1, m // 2, m - 1, m, *(r.at for r in t.rewards)})
    out: list[tuple[str, dict[str, Any]]] = []
    for stamps in counts:
        for name, vouchers in (("", 0), ("Ada", 1), (_LONG_NAME, 12)):
            nxt = t.next_reward(stamps)
            out.append(
                (
                    f"{stamps} stamps" + (", a 200-character holder name" if len(name) > 3 else ""),
                    {
                        "stamps": stamps,
                        "required": m,
                        "remaining": (nxt.at - stamps) if nxt else 0,
                        "next_reward": (
                            localized(nxt.title, lang, t.default_language) if nxt else ""
                        ),
                        "holder_name": name,
                        "vouchers_ready": vouchers,
                        "card_number": "X" * 64,
                        "organization": t.organization_name,
                        "percent": round(100 * stamps / m),
                    },
                )
            )
    return out


def text_problems(t: CardTemplate) -> list[Problem]:
    """Render every text of ``t`` in every language for representative cards; a text that
    fails for any of them is a problem naming the field and the card (a text that fails at
    serving time would otherwise break every card of the template)."""
    from .templating import render_text

    problems: list[Problem] = []
    for lang, texts in t.texts.items():
        contexts = _sample_contexts(t, lang)
        for key in ("terms", "how_to_earn", *LABEL_KEYS):
            source = texts.label(key, lang) if key in LABEL_KEYS else getattr(texts, key)
            if "{" not in source:
                continue
            for what, context in contexts:
                try:
                    render_text(source, context)
                except TextTemplateError as exc:
                    problems.append(
                        Problem(
                            f"{TEMPLATE_FILE}: texts.{lang}.{key}",
                            f"{exc} (for a card with {what})",
                        )
                    )
                    break
    return problems


# -- issued cards -------------------------------------------------------------------------------


class CardState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    VOIDED = "voided"
    EXPIRED = "expired"


class Holder(_CardPart):
    """The customer holding a card. Every field is optional (anonymous cards exist)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, max_length=40, pattern=r"^[0-9+()./ -]+$")
    birthday: date | None = None


class VoucherKind(StrEnum):
    REWARD = "reward"  # earned by reaching a reward step
    COUPON = "coupon"  # issued personally by the merchant


class Voucher(_CardPart):
    """A reward or coupon on a card, redeemable once with its code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=6, max_length=64)
    kind: VoucherKind
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    issued_at: datetime
    redeemed_at: datetime | None = None
    #: For rewards: the step (stamp count) that earned it.
    reward_at: int | None = None

    @property
    def redeemed(self) -> bool:
        return self.redeemed_at is not None


#: What a card serial can be: the one rule, used by the model, the service, the web service's
#: path parsing and the CLI (PostgreSQL refuses some characters, e.g. NUL, with an untyped error).
SERIAL_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_SERIAL_RE = re.compile(SERIAL_PATTERN)


def is_valid_serial(serial: object) -> bool:
    """Whether ``serial`` could name a card (a text of 1 to 64 of ``A-Z a-z 0-9 . _ -``)."""
    return isinstance(serial, str) and _SERIAL_RE.fullmatch(serial) is not None


class Card(_CardPart):
    """An issued card: one holder's progress on one template version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serial: str = Field(min_length=1, max_length=64, pattern=rf"^{SERIAL_PATTERN}$")
    template_id: str = Field(pattern=_ID)
    template_version: int = Field(ge=1)
    holder: Holder = Holder()
    #: Stamps in the current round.
    stamps: int = Field(default=0, ge=0)
    #: Rounds completed since issue (a new round starts after the last reward step).
    rounds_completed: int = Field(default=0, ge=0)
    vouchers: tuple[Voucher, ...] = ()
    created_at: datetime
    last_stamp_at: datetime | None = None
    state: CardState = CardState.ACTIVE
    #: The Apple web-service token: random, >= 16 characters, never changes.
    authentication_token: str = Field(min_length=16, max_length=128, repr=False)
    expires_at: datetime | None = None
    #: The latest personal message (shown on the back of the pass).
    message: str | None = Field(default=None, max_length=1000)
    #: Language for texts; the template's default when None.
    language: str | None = None

    @property
    def vouchers_ready(self) -> tuple[Voucher, ...]:
        return tuple(v for v in self.vouchers if not v.redeemed)

    @property
    def voided(self) -> bool:
        return self.state is CardState.VOIDED


class Progress(NamedTuple):
    """Where a card stands in its current round."""

    stamps: int
    required: int
    remaining: int  # stamps to the next reward (0 when none is left)
    next_reward: RewardStep | None
    current_reward: RewardStep | None
    percent: int


def progress(template: CardTemplate, card: Card) -> Progress:
    stamps = min(card.stamps, template.stamps_required)
    nxt = template.next_reward(stamps)
    return Progress(
        stamps=stamps,
        required=template.stamps_required,
        remaining=(nxt.at - stamps) if nxt else 0,
        next_reward=nxt,
        current_reward=template.current_reward(stamps),
        percent=round(100 * stamps / template.stamps_required),
    )


def text_context(template: CardTemplate, card: Card, language: str | None = None) -> dict[str, Any]:
    """The variables a text template sees. Only plain values: nothing to reach through."""
    lang = language if language in template.texts else template.default_language
    p = progress(template, card)
    return {
        "stamps": p.stamps,
        "required": p.required,
        "remaining": p.remaining,
        "next_reward": (
            localized(p.next_reward.title, lang, template.default_language) if p.next_reward else ""
        ),
        "holder_name": card.holder.name or "",
        "vouchers_ready": len(card.vouchers_ready),
        "card_number": card.serial,
        "organization": template.organization_name,
        "percent": p.percent,
    }


_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def card_text(template: CardTemplate, key: str, language: str, context: Mapping[str, Any]) -> str:
    """The text ``key`` (a label key, ``terms`` or ``how_to_earn``) of ``template`` rendered in
    ``language`` with ``context``; never raises for the text.

    Publishing renders every text for representative cards, but a text stored before that check,
    or failing only for an unusual card, must not turn a pass or a page into a server error: a
    label falls back to its built-in translation (English for other languages), a body text to
    the merchant's text without its markup. The failure is logged once per text."""
    from .templating import render_text_or

    lang = language if language in template.texts else template.default_language
    texts = template.texts[lang]
    if key in LABEL_KEYS:
        source = texts.label(key, lang)
        builtin = BUILTIN_LABELS.get(lang, BUILTIN_LABELS["en"])[key]
        fallback = render_text_or(builtin, context, fallback="", field=f"built-in {key}")
    else:
        source = getattr(texts, key)
        fallback = " ".join(_MARKUP.sub(" ", source).split())
    return render_text_or(source, context, fallback=fallback, field=f"texts.{lang}.{key}")
