"""What every route of the web app shares: the service, the pass builder, keys and settings."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..service import parse_update_tag, updated_serials_answer
from .config import WebConfig
from .devicelog import DeviceLog
from .hotreads import HotReads

if TYPE_CHECKING:
    from ..apple.bundle import PassBuilder
    from ..apple.credentials import SigningCredentials
    from ..service import StampService


@dataclass(frozen=True)
class PassState:
    """The little the 304 path needs: the token to check and when the pass last changed."""

    authentication_token: str
    last_modified: datetime


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
    #: The 304 and serials reads, without a transaction (made from ``service.store`` if None).
    reads: HotReads | None = None

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = HotReads(self.service.store)

    async def pass_state(self, serial: str) -> PassState | None:
        """Token and last change of a card's pass, or None when there is no such card.

        One indexed primary-key lookup of two columns: no card, voucher or template is loaded,
        so a device asking "has my pass changed?" costs no signing and no template decoding.
        """
        assert self.reads is not None
        found = await self.reads.pass_state(serial)
        if found is None:
            return None
        token, last_modified = found
        return PassState(authentication_token=token, last_modified=last_modified)

    async def serials_updated_since(
        self, device: str, pass_type: str, tag: str | None
    ) -> tuple[list[str], str]:
        """What :meth:`StampService.serials_updated_since` answers (the serials of the device's
        passes changed after ``tag``, all when ``tag`` is None or not ours, and the tag to hand
        back), read in one statement without a transaction."""
        assert self.reads is not None
        wanted = self.service.pass_type_identifier
        if wanted is not None and not hmac.compare_digest(wanted, pass_type):
            return [], tag or "0"
        rows = await self.reads.registered_serials(device, pass_type, parse_update_tag(tag))
        return updated_serials_answer(rows, tag)
