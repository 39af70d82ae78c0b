"""What devices report to ``POST /v1/log``: kept in a bounded ring buffer and logged.

Wallet writes exact complaints here when a server gets the protocol wrong ("pass response missing
Last-Modified", "serial list changed but lastUpdated did not"), so an integrator debugging an
unhappy device should see them: through Python logging (logger
``passkit_stamps.web.device_log``) and through :meth:`DeviceLog.entries`.

The endpoint is unauthenticated, so what reaches the logging system is bounded: each line is cut
to :data:`MAX_LOGGED_MESSAGE` characters, and lines pass two token buckets: one per client address
(:data:`CLIENT_LOG_RATE` per second, bursts of :data:`CLIENT_LOG_BURST`), so that one flooding
client cannot use up the log for every device, and one for the whole server (:data:`LOG_RATE`,
:data:`LOG_BURST`), which also bounds a flood spread over many addresses. Messages over a rate
are still kept in the ring buffer, only not logged; their number is logged as ``device log: N
messages suppressed`` at most every :data:`SUPPRESSED_REPORT_INTERVAL` seconds (with the next
device message, or on :meth:`DeviceLog.flush_suppressed`, which the app calls at shutdown).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
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
#: The same per client address: a quarter of the server's, so four clients flooding at once
#: still leave the others room only when fewer flood; the server bucket caps the total.
CLIENT_LOG_RATE = 5
CLIENT_LOG_BURST = 25
#: Client buckets kept (least recently seen dropped first): bounded memory under spoofed floods.
MAX_TRACKED_CLIENTS = 4096
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
        client_rate: float = CLIENT_LOG_RATE,
        client_burst: int = CLIENT_LOG_BURST,
        report_interval: float = SUPPRESSED_REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("device log size must be at least 1")
        if max_logged_chars < 2:
            raise ValueError("max_logged_chars must be at least 2")
        if rate <= 0 or burst < 1 or client_rate <= 0 or client_burst < 1:
            raise ValueError("the device log rates must be positive and the bursts at least 1")
        self._entries: deque[DeviceLogEntry] = deque(maxlen=size)
        self._max_chars = max_logged_chars
        self._clock = clock
        self._server = _TokenBucket(rate, burst, clock())
        self._client_rate = float(client_rate)
        self._client_burst = float(client_burst)
        self._clients: OrderedDict[str | None, _TokenBucket] = OrderedDict()
        self._report_interval = report_interval
        self._suppressed = 0
        self._reported_at = clock()

    def add(self, messages: Iterable[str], *, at: datetime, client: str | None = None) -> None:
        """Keep ``messages`` (already cut to length) and log each within the rate limit."""
        for raw in messages:
            message = _CONTROL.sub(" ", raw).strip()
            self._entries.append(DeviceLogEntry(at=at, message=message, client=client))
            if self._take_token(client):
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

    def _take_token(self, client: str | None) -> bool:
        now = self._clock()
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = self._clients[client] = _TokenBucket(
                self._client_rate, self._client_burst, now
            )
            if len(self._clients) > MAX_TRACKED_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        # The client's bucket first: a line it may not log costs the server bucket nothing.
        if not bucket.peek(now):
            return False
        if not self._server.take(now):
            return False
        bucket.take(now)
        return True

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


class _TokenBucket:
    """``rate`` tokens per second up to ``burst``; one token per logged line."""

    __slots__ = ("_burst", "_rate", "_refilled_at", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled_at = now

    def peek(self, now: float) -> bool:
        elapsed = max(now - self._refilled_at, 0.0)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        if self.peek(now):
            self._tokens -= 1.0
            return True
        return False
