"""The retry budget: retries and hedges never exceed a share of the calls over a window.

Like gRPC's retryThrottling and Finagle's RetryBudget, the budget is what keeps retries
from multiplying the load on a service that is already failing: with ``ratio`` 0.1, ten
calls in the window earn one retry. ``minimum`` retries per window are allowed whatever
the traffic (0 by default, so the 10 % bound holds strictly; a caller making a handful of
calls gets none until its traffic earns them). Thread-safe.
"""

from __future__ import annotations

import threading
import time

from .window import Clock, SlidingCounts

CALLS, RETRIES = 0, 1


class RetryBudget:
    """Counts calls and the extra attempts (retries, hedges) spent on them."""

    def __init__(self, ratio: float, window: float = 10.0, minimum: int = 0, *,
                 clock: Clock = time.monotonic) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"a retry budget ratio must be in [0, 1], got {ratio!r}")
        self.ratio = ratio
        self.minimum = minimum
        self._counts = SlidingCounts(window, 2, clock=clock)
        self._lock = threading.Lock()

    def record_call(self) -> None:
        """A call as its caller made it (not counting its retries)."""
        with self._lock:
            self._counts.add(CALLS)

    def try_spend(self) -> bool:
        """Take one extra attempt from the budget; False when that would exceed it."""
        with self._lock:
            counts = self._counts
            calls, retries = counts.total(CALLS), counts.totals[RETRIES]
            if retries + 1 > max(self.ratio * calls, self.minimum):
                return False
            counts.add(RETRIES)
            return True

    def totals(self) -> tuple[int, int]:
        """(calls, extra attempts) in the window now."""
        with self._lock:
            return self._counts.total(CALLS), self._counts.totals[RETRIES]
