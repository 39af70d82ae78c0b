"""What devices report to ``POST /v1/log``: kept in a bounded ring buffer and logged.

Wallet writes exact complaints here when a server gets the protocol wrong ("pass response missing
Last-Modified", "serial list changed but lastUpdated did not"), so an integrator debugging an
unhappy device should see them: through Python logging (logger
``passkit_stamps.web.device_log``) and through :meth:`DeviceLog.entries`.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

LOGGER_NAME = "passkit_stamps.web.device_log"
logger = logging.getLogger(LOGGER_NAME)

# Control characters would let a device forge extra lines in the integrator's log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


@dataclass(frozen=True)
class DeviceLogEntry:
    """One message a device sent, when it arrived, and from which client address."""

    at: datetime
    message: str
    client: str | None = None


class DeviceLog:
    """The last ``size`` device messages (oldest dropped first)."""

    def __init__(self, size: int = 500) -> None:
        if size < 1:
            raise ValueError("device log size must be at least 1")
        self._entries: deque[DeviceLogEntry] = deque(maxlen=size)

    def add(self, messages: Iterable[str], *, at: datetime, client: str | None = None) -> None:
        """Keep ``messages`` (already cut to length) and write each to the log."""
        for raw in messages:
            message = _CONTROL.sub(" ", raw).strip()
            self._entries.append(DeviceLogEntry(at=at, message=message, client=client))
            logger.warning("device %s: %s", client or "-", message)

    def entries(self) -> list[DeviceLogEntry]:
        """The kept messages, oldest first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
