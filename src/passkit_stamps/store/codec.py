"""Templates and cards to and from rows.

A template is stored as JSON (the template.toml equivalent) with each image replaced by the
sha256 of its bytes; the bytes live once in the ``images`` table. Pydantic's JSON mode cannot carry
PNG bytes (they are not UTF-8), hence the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..model import Card, CardState, CardTemplate, Holder, Voucher, VoucherKind
from .schema import utc

IMAGE_KEYS = ("icon", "logo", "stamp_filled", "stamp_empty")
#: The parts of a template that are its rules: frozen per version (see stamp-cards.md).
RULE_KEYS = ("stamps_required", "rewards", "after_last_reward", "expiry", "limits")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


class EncodedTemplate:
    """A template ready to store: JSON content, its digests, and its images by sha256."""

    def __init__(self, template: CardTemplate) -> None:
        exclude = {"design": set(IMAGE_KEYS)}
        data: dict[str, Any] = template.model_dump(mode="json", exclude=exclude)
        self.images: dict[str, bytes] = {}
        refs: dict[str, str | None] = {}
        for key in IMAGE_KEYS:
            image: bytes | None = getattr(template.design, key)
            if image is None:
                refs[key] = None
                continue
            sha = hashlib.sha256(image).hexdigest()
            self.images[sha] = image
            refs[key] = sha
        data["design"].update(refs)
        # The first language is the template's default: keep the order through sort_keys.
        data["texts"] = [[lang, texts] for lang, texts in data["texts"].items()]
        self.data = data
        self.content = _canonical(data)
        self.content_digest = hashlib.sha256(self.content.encode()).hexdigest()
        self.rules_digest = _digest({key: data[key] for key in RULE_KEYS})


def decode_template(content: str, images: Mapping[str, bytes]) -> CardTemplate:
    """The template back from its stored JSON and the images it references."""
    data = json.loads(content)
    if isinstance(data["texts"], list):
        data["texts"] = dict(data["texts"])
    design = data["design"]
    for key in IMAGE_KEYS:
        sha = design.get(key)
        if sha is None:
            design.pop(key, None)
        else:
            design[key] = images[sha]
    # Checked when it was published, perhaps under older text rules: the texts are not judged
    # again (each failing text falls back when served), the rules are.
    return CardTemplate.model_validate(data, context={"stored": True})


def image_refs(content: str) -> list[str]:
    """The sha256 of every image a stored template references."""
    design = json.loads(content)["design"]
    return [design[k] for k in IMAGE_KEYS if design.get(k)]


def search_text(serial: str, holder: Holder) -> str:
    """The lower-cased text a card search matches against."""
    parts = [serial, holder.name or "", holder.email or "", holder.phone or ""]
    return " ".join(p.lower() for p in parts)[:700]


def card_row(card: Card, holder_id: int) -> dict[str, Any]:
    """The ``cards`` columns of a card (vouchers and the change tag are written separately)."""
    return {
        "serial": card.serial,
        "template_id": card.template_id,
        "template_version": card.template_version,
        "holder_id": holder_id,
        "stamps": card.stamps,
        "rounds_completed": card.rounds_completed,
        "state": card.state.value,
        "created_at": card.created_at,
        "last_stamp_at": card.last_stamp_at,
        "expires_at": card.expires_at,
        "authentication_token": card.authentication_token,
        "message": card.message,
        "language": card.language,
        "search_text": search_text(card.serial, card.holder),
    }


def voucher_row(serial: str, position: int, voucher: Voucher) -> dict[str, Any]:
    return {
        "serial": serial,
        "code": voucher.code,
        "position": position,
        "kind": voucher.kind.value,
        "title": voucher.title,
        "description": voucher.description,
        "issued_at": voucher.issued_at,
        "redeemed_at": voucher.redeemed_at,
        "reward_at": voucher.reward_at,
    }


def decode_voucher(row: Mapping[Any, Any]) -> Voucher:
    return Voucher(
        code=row["code"],
        kind=VoucherKind(row["kind"]),
        title=row["title"],
        description=row["description"],
        issued_at=utc(row["issued_at"]),
        redeemed_at=utc(row["redeemed_at"]),
        reward_at=row["reward_at"],
    )


def decode_holder(row: Mapping[Any, Any]) -> Holder:
    return Holder.model_construct(
        name=row["name"], email=row["email"], phone=row["phone"], birthday=row["birthday"]
    )


def decode_card(row: Mapping[Any, Any], vouchers: tuple[Voucher, ...]) -> Card:
    """A card from a ``cards`` row joined with its holder's name, email and phone."""
    return Card(
        serial=row["serial"],
        template_id=row["template_id"],
        template_version=row["template_version"],
        holder=decode_holder(row),
        stamps=row["stamps"],
        rounds_completed=row["rounds_completed"],
        vouchers=vouchers,
        created_at=utc(row["created_at"]),
        last_stamp_at=utc(row["last_stamp_at"]),
        state=CardState(row["state"]),
        authentication_token=row["authentication_token"],
        expires_at=utc(row["expires_at"]),
        message=row["message"],
        language=row["language"],
    )
