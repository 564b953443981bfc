"""A brake on credential guessing: failed authentications per client address, then 429.

Each address has a leaky bucket that drains at ``limit / window`` per second. While one
more attempt would take it past ``limit``, requests with credentials from that address answer 429 with
``Retry-After`` before any key lookup, signature check or JWKS fetch: guessing costs the
guesser time and the bridge nothing. So at most about ``limit`` failures per ``window``
get through from one address, in bursts of ``limit``.

Every attempt is charged when it starts (``charge``) and refunded when its credentials
verify (``refund``): attempts still waiting for a JWKS fetch count too, so a burst of
concurrent guesses cannot slip past the limit together. A success refunds only its own
charge (one valid key must not reset the count for the guesses around it).

IPv6 addresses count per /64, the block one customer line usually gets. At most
``max_addresses`` buckets are kept, in LRU order: a flood of addresses costs a fixed
amount of memory; the coldest bucket is forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network, ip_address

from .errors import ApiError


class AuthFailureBrake:
    """Failed authentications per client address; ``charge`` before verifying, ``refund`` on success."""

    def __init__(self, limit: int, window: float, max_addresses: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0 or max_addresses < 1:
            raise ValueError(f"limit, window and max_addresses must be positive, got "
                             f"{limit!r}, {window!r}, {max_addresses!r}")
        self.limit = float(limit)
        self.drain = limit / window  # failures forgotten per second
        self.max_addresses = max_addresses
        self._clock = clock
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, at)

    def charge(self, address: str) -> None:
        """Count one attempt from ``address``; past the limit ApiError 429 with Retry-After instead."""
        key = _bucket_key(address)
        entry = self._levels.pop(key, None)
        level = self._drained(entry) if entry is not None else 0.0
        if level + 1.0 > self.limit:  # this attempt would be one more than the limit
            self._levels[key] = (level, self._clock())  # stays hot in the LRU while it is refused
            retry_after = max(1, math.ceil((level + 1.0 - self.limit) / self.drain))
            raise ApiError(429, "too_many_auth_failures",
                           f"too many failed authentications from this address; retry in {retry_after}s",
                           headers={"Retry-After": str(retry_after)})
        self._levels[key] = (level + 1.0, self._clock())
        while len(self._levels) > self.max_addresses:
            self._levels.popitem(last=False)

    def refund(self, address: str) -> None:
        """The attempt charged for ``address`` was no failure: take it back."""
        key = _bucket_key(address)
        entry = self._levels.get(key)
        if entry is None:
            return  # forgotten meanwhile (LRU)
        level = self._drained(entry) - 1.0
        if level <= 0.0:
            del self._levels[key]  # a well-behaved client leaves nothing behind
        else:
            self._levels[key] = (level, self._clock())

    def _drained(self, entry: tuple[float, float]) -> float:
        level, at = entry
        return max(0.0, level - (self._clock() - at) * self.drain)

    def __len__(self) -> int:
        return len(self._levels)


def _bucket_key(address: str) -> str:
    try:
        parsed = ip_address(address)
    except ValueError:
        return address  # "unknown", or whatever a trusted proxy forwarded
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed)
