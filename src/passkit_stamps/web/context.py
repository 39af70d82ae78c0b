"""What every route of the web app shares: the service, the pass builder, keys and settings.

The web app has no database access of its own: even the 304 and serials reads are the
service's (:meth:`StampService.pass_state`, :meth:`StampService.serials_updated_since`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import WebConfig
from .devicelog import DeviceLog

if TYPE_CHECKING:
    from ..apple.bundle import PassBuilder
    from ..apple.credentials import SigningCredentials
    from ..service import StampService


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
