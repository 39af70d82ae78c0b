"""A token bucket that keeps one client under Google's request rate (about 20 requests/s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Allows ``rate`` acquisitions per second on average, with bursts of up to ``burst``.

    Every caller reserves its slot immediately (the balance may go negative) and then sleeps until
    that slot comes due, so callers are served in arrival order and no lock is needed: nothing
    awaits between reading and updating the balance. ``clock`` and ``sleep`` are injectable so
    tests run without waiting.
    """

    def __init__(
        self,
        rate: float = 20.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token; return how long to wait (seconds) before using it."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> None:
        """Wait for a slot."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
