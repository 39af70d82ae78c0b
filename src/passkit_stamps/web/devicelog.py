"""What devices report to ``POST /v1/log``: kept in a bounded ring buffer and logged.

Wallet writes exact complaints here when a server gets the protocol wrong ("pass response missing
Last-Modified", "serial list changed but lastUpdated did not"), so an integrator debugging an
unhappy device should see them: through Python logging (logger
``passkit_stamps.web.device_log``) and through :meth:`DeviceLog.entries`.

The endpoint is unauthenticated, so what reaches the logging system is bounded: each line is cut
to :data:`MAX_LOGGED_MESSAGE` characters, and lines pass a token bucket (:data:`LOG_RATE` per
second, bursts of :data:`LOG_BURST`). Messages over the rate are still kept in the ring buffer,
only not logged; their number is logged as ``device log: N messages suppressed`` at most every
:data:`SUPPRESSED_REPORT_INTERVAL` seconds (with the next device message, or on
:meth:`DeviceLog.flush_suppressed`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

LOGGER_NAME = "passkit_stamps.web.device_log"
logger = logging.getLogger(LOGGER_NAME)

# Control characters would let a device forge extra lines in the integrator's log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")

#: A logged line carries at most this many characters of the device's message.
MAX_LOGGED_MESSAGE = 500
#: Lines per second written to the logging system, and the burst allowed at once.
LOG_RATE = 20
LOG_BURST = 100
#: How often (seconds) the number of suppressed lines is reported while some are suppressed.
SUPPRESSED_REPORT_INTERVAL = 10.0


@dataclass(frozen=True)
class DeviceLogEntry:
    """One message a device sent, when it arrived, and from which client address."""

    at: datetime
    message: str
    client: str | None = None


class DeviceLog:
    """The last ``size`` device messages (oldest dropped first), logged within a rate limit.

    ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        size: int = 500,
        *,
        max_logged_chars: int = MAX_LOGGED_MESSAGE,
        rate: float = LOG_RATE,
        burst: int = LOG_BURST,
        report_interval: float = SUPPRESSED_REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("device log size must be at least 1")
        if max_logged_chars < 2:
            raise ValueError("max_logged_chars must be at least 2")
        if rate <= 0 or burst < 1:
            raise ValueError("the device log rate must be positive and the burst at least 1")
        self._entries: deque[DeviceLogEntry] = deque(maxlen=size)
        self._max_chars = max_logged_chars
        self._rate = float(rate)
        self._burst = float(burst)
        self._report_interval = report_interval
        self._clock = clock
        self._tokens = float(burst)
        self._refilled_at = clock()
        self._suppressed = 0
        self._reported_at = self._refilled_at

    def add(self, messages: Iterable[str], *, at: datetime, client: str | None = None) -> None:
        """Keep ``messages`` (already cut to length) and log each within the rate limit."""
        for raw in messages:
            message = _CONTROL.sub(" ", raw).strip()
            self._entries.append(DeviceLogEntry(at=at, message=message, client=client))
            if self._take_token():
                self._report_suppressed(force=False)
                if len(message) > self._max_chars:
                    message = message[: self._max_chars - 1] + "…"
                logger.warning("device %s: %s", client or "-", message)
            else:
                if not self._suppressed:  # the first report comes an interval after this
                    self._reported_at = self._clock()
                self._suppressed += 1
        self._report_suppressed(force=False)

    def flush_suppressed(self) -> None:
        """Log the number of suppressed lines now (e.g. at shutdown), if there are any."""
        self._report_suppressed(force=True)

    def _take_token(self) -> bool:
        now = self._clock()
        elapsed = max(now - self._refilled_at, 0.0)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _report_suppressed(self, *, force: bool) -> None:
        if not self._suppressed:
            return
        now = self._clock()
        if force or now - self._reported_at >= self._report_interval:
            logger.warning("device log: %d messages suppressed", self._suppressed)
            self._suppressed = 0
            self._reported_at = now

    def entries(self) -> list[DeviceLogEntry]:
        """The kept messages, oldest first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
