"""Resource limits: request bodies, per-principal rate, calls in flight. All memory is bounded.

* ``read_body``: 413 from ``Content-Length`` alone when it is over the limit (the body
  is never read), 413 as soon as a chunked body passes it, 408 when the body does not
  arrive within ``body_timeout``. ``read_json_bytes`` adds 415 for a body that is not
  JSON; both front ends parse (params.parse_json_body, the SOAP XML parser) only once the
  in-flight cap admitted the request, so parsed bodies are bounded by it too.
* ``RateLimiter``: a token bucket per key (the principal, else the client address), in an
  LRU of at most ``max_keys`` buckets: the coldest key is forgotten first (it starts again
  with a full bucket), so a flood of new keys costs a fixed amount of memory.
* ``InflightGate``: at most ``limit`` RPC calls in flight per process; past it, 503 at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from .errors import ApiError

_JSON_TYPES = ("application/json",)


async def read_json_bytes(request: web.Request, max_size: int, timeout: float) -> bytes | None:
    """The request's raw JSON body (not parsed yet), or None when there is no body."""
    check_length(request, max_size)
    if not request.body_exists or request.content_length == 0:
        return None
    if request.content_type not in _JSON_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {request.content_type or 'untyped'}")
    return await read_body(request, max_size, timeout)


def check_length(request: web.Request, max_size: int) -> None:
    """413 from ``Content-Length`` alone: a body announced too large is never read."""
    length = request.content_length
    if length is not None and length > max_size:
        raise ApiError(413, "payload_too_large", f"the body is {length} bytes; the limit is {max_size}",
                       headers={"Connection": "close"})


async def read_body(request: web.Request, max_size: int, timeout: float) -> bytes:
    """The raw body, at most ``max_size`` bytes (413 past it), within ``timeout`` (408)."""
    check_length(request, max_size)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > max_size:
                    raise ApiError(413, "payload_too_large",
                                   f"the body exceeds the limit of {max_size} bytes",
                                   headers={"Connection": "close"})
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the body did not arrive within {timeout:g}s",
                       headers={"Connection": "close"}) from None
    return b"".join(chunks)


class RateLimiter:
    """Token buckets: ``rate`` requests per second, bursts up to ``burst``, per key."""

    def __init__(self, rate: float, burst: int, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take a token for ``key``; ApiError 429 with Retry-After when there is none."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise ApiError(429, "rate_limited", f"too many requests; retry in {retry_after}s",
                           headers={"Retry-After": str(retry_after)})
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class InflightGate:
    """Counts calls in flight; ``enter`` refuses past ``limit`` (single event loop: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def enter(self) -> None:
        if self.count >= self.limit:
            raise ApiError(503, "overloaded", "too many calls in flight; retry shortly",
                           headers={"Retry-After": "1"})
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
