"""The API's two limits, token buckets in this process's memory:

* :class:`KeyRateLimiter`: each API key may send ``rate`` requests a second with bursts of
  ``burst``; a request over that is refused with the seconds until a token is back.
* :class:`KeyFailureLimiter`: each client address may present ``failures`` refused keys at once,
  refilled over ``window`` seconds; an address with none left is refused (whatever key it sends)
  until one is back. Checked before the key is parsed, so guessing keys costs the server nothing
  beyond the budget, and a key that would be right gets no different answer while the address
  is refused (no oracle for a guesser who keeps going).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable


class KeyRateLimiter:
    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str) -> float:
        """0.0 when the request may go; otherwise the seconds to wait (nothing is taken)."""
        now = self._clock()
        tokens, at = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


def address_key(host: str | None) -> str:
    """Whose budget a client address spends: an IPv4 address itself, an IPv6 address its /64
    (one subscriber's network: an attacker has a whole /64 to rotate through), an IPv4-mapped
    IPv6 address its IPv4 address. Anything else (a Unix socket, a test client) as given."""
    if not host or ":" not in host:
        return host or "-"
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class KeyFailureLimiter:
    """Refused API keys per client address. Only addresses that failed have a bucket (a
    request from any other costs one dictionary look-up); at most ``max_addresses`` are kept,
    the least recently failed forgotten first."""

    def __init__(
        self,
        failures: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 100_000,
    ) -> None:
        if failures < 1 or window <= 0:
            raise ValueError("failures must be >= 1 and window > 0")
        self.capacity = float(failures)
        self.rate = failures / window
        self._clock = clock
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def _tokens(self, address: str, now: float) -> float | None:
        found = self._buckets.get(address)
        if found is None:
            return None
        tokens, at = found
        return min(self.capacity, tokens + (now - at) * self.rate)

    def wait(self, address: str) -> float:
        """0.0 when ``address`` may try a key; otherwise the seconds until it may."""
        if address not in self._buckets:
            return 0.0
        tokens = self._tokens(address, self._clock())
        if tokens is None or tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self.rate

    def failed(self, address: str) -> None:
        """Spend one of ``address``'s tries. Requests already in flight when the budget ran
        out still count (down to minus the budget): they lengthen the wait."""
        now = self._clock()
        tokens = self._tokens(address, now)
        tokens = self.capacity if tokens is None else tokens
        self._buckets[address] = (max(-self.capacity, tokens - 1.0), now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
