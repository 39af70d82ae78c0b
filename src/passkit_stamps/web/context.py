"""What every route of the web app shares: the service, the pass builder, keys and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..store.schema import cards, utc
from .config import WebConfig
from .devicelog import DeviceLog

if TYPE_CHECKING:
    from ..apple.bundle import PassBuilder
    from ..apple.credentials import SigningCredentials
    from ..service import StampService


@dataclass(frozen=True)
class PassState:
    """The little the 304 path needs: the token to check and when the pass last changed."""

    authentication_token: str
    last_modified: datetime


# One indexed primary-key lookup of two columns: no card, voucher or template is loaded, so a
# device asking "has my pass changed?" costs no signing and no template decoding.
# Deleted cards are included: their pass is still served (voided) so devices learn of it, as
# StampService.card_for_pass does; ``updated_at`` is its Last-Modified too.
_PASS_STATE = sa.select(cards.c.authentication_token, cards.c.updated_at).where(
    cards.c.serial == sa.bindparam("serial")
)


@dataclass
class WebContext:
    """The shared state of one app instance."""

    service: StampService
    credentials: SigningCredentials
    builder: PassBuilder
    config: WebConfig
    device_log: DeviceLog
    #: Google runtime pieces (save-link signer, loyalty settings, nonce cache), when configured.
    google: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    async def pass_state(self, serial: str) -> PassState | None:
        """Token and last change of a card's pass, or None when there is no such card."""
        async with self.service.store.read() as conn:
            row = (await conn.execute(_PASS_STATE, {"serial": serial})).first()
        if row is None:
            return None
        last_modified = utc(row.updated_at)
        assert last_modified is not None  # the column is NOT NULL
        return PassState(authentication_token=row.authentication_token, last_modified=last_modified)
