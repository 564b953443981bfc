"""An adaptive concurrency limit for the bridge's calls: Envoy's gradient controller.

A fixed ``max_inflight`` must be guessed, and a guess high enough for a good day lets a bad
day queue requests until they time out. The limit here follows the latency the services
actually give instead (Envoy's ``adaptive_concurrency`` filter, "gradient" controller):

* **min-RTT windows.** Every ``adaptive_min_rtt_interval`` seconds (and at start) the limit
  is pinned to ``adaptive_min_limit`` until ``adaptive_min_rtt_requests`` calls have
  finished; the median of their latencies is the new ``min_rtt``: what a call costs when
  nothing queues. Calls over the pinned limit meanwhile are shed, as Envoy sheds them.
* **sample windows.** Every ``adaptive_sample_interval`` seconds the 90th percentile of the
  latencies finished in the window is ``sample_rtt`` and the limit becomes::

      gradient = clamp((min_rtt * (1 + adaptive_buffer)) / sample_rtt, 0.5, 2.0)
      limit    = clamp(limit * gradient + sqrt(limit * gradient), min_limit, max_limit)

  Latency over the (buffered) floor shrinks the limit; latency at the floor grows it by its
  square root (the headroom), so it probes upward and settles where queueing begins.

A call over the limit is answered 503 ``overloaded`` with ``Retry-After`` at once, without
a publish: shedding is cheaper than any queue. Only calls that got an answer from the
service or ran out of time count as samples (a shed or refused call says nothing about the
service's latency). One limiter per bridge process, on its event loop thread: no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ApiError
from .settings import BridgeSettings

_GRADIENT_MIN, _GRADIENT_MAX = 0.5, 2.0
_SAMPLE_PERCENTILE = 0.9
_MIN_RTT_PERCENTILE = 0.5


@dataclass(frozen=True)
class AdaptiveParams:
    """The controller's knobs (``adaptive_*`` bridge settings, docs/configuration.md)."""

    sample_interval: float = 0.1
    min_rtt_interval: float = 30.0
    min_rtt_requests: int = 50
    buffer: float = 0.25
    min_limit: int = 3
    max_limit: int = 1000

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> AdaptiveParams:
        return cls(settings.adaptive_sample_interval, settings.adaptive_min_rtt_interval,
                   settings.adaptive_min_rtt_requests, settings.adaptive_buffer,
                   settings.adaptive_min_limit, settings.adaptive_max_limit)


class AdaptiveLimit:
    """Admit a call while fewer than ``limit`` are in flight; learn ``limit`` from latencies."""

    def __init__(self, params: AdaptiveParams, clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self._clock = clock
        self.limit = params.min_limit
        self.in_flight = 0
        self.min_rtt = 0.0  # seconds; 0 until the first min-RTT window closes
        self.sample_rtt = 0.0
        self.shed = 0  # calls refused since start
        self._samples: list[float] = []
        self._measuring = True  # in a min-RTT window (the first starts now)
        self._resume_limit = params.min_limit  # the limit to return to after a min-RTT window
        now = clock()
        self._window_end = now + params.sample_interval
        self._next_min_rtt = now + params.min_rtt_interval

    def try_acquire(self) -> bool:
        """Take a place (True), or count a shed call (False)."""
        if self.in_flight >= self.limit:
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def release(self, latency: float | None) -> None:
        """Give the place back; ``latency`` (seconds) is a sample, None is not one."""
        self.in_flight -= 1
        if latency is not None:
            self._samples.append(latency)
        self._update(self._clock())

    def _update(self, now: float) -> None:
        params = self.params
        if self._measuring:
            if len(self._samples) < params.min_rtt_requests:
                return
            self.min_rtt = _percentile(self._samples, _MIN_RTT_PERCENTILE)
            self._samples.clear()
            self._measuring = False
            self.limit = self._resume_limit
            self._window_end = now + params.sample_interval
            self._next_min_rtt = now + params.min_rtt_interval
            return
        if now < self._window_end:
            return
        self._window_end = now + params.sample_interval
        if self._samples:
            self.sample_rtt = _percentile(self._samples, _SAMPLE_PERCENTILE)
            self._samples.clear()
            self.limit = self._next_limit()
        if now >= self._next_min_rtt:
            self._resume_limit = self.limit
            self._measuring = True
            self.limit = params.min_limit

    def _next_limit(self) -> int:
        params = self.params
        if self.sample_rtt <= 0:
            gradient = _GRADIENT_MAX
        else:
            gradient = (self.min_rtt * (1 + params.buffer)) / self.sample_rtt
        gradient = min(_GRADIENT_MAX, max(_GRADIENT_MIN, gradient))
        limit = self.limit * gradient
        limit += math.sqrt(limit)
        return int(min(params.max_limit, max(params.min_limit, limit)))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def adaptive_limit(settings: BridgeSettings) -> AdaptiveLimit | None:
    """The bridge's limiter, or None when ``adaptive_concurrency`` is off."""
    return AdaptiveLimit(AdaptiveParams.from_settings(settings)) if settings.adaptive_concurrency else None


@contextmanager
def admitted(limit: AdaptiveLimit) -> Iterator[None]:
    """Hold a place under the adaptive limit for one call; 503 ``overloaded`` at once past it.

    The call's latency is a sample when it ends normally or by its deadline (504): both say
    how long the service takes; other errors (shed, refused, bad input) say nothing about it.
    """
    if not limit.try_acquire():
        raise ApiError(503, "overloaded", f"the bridge is shedding load: {limit.in_flight} calls in "
                       "flight is its limit now; try again later", headers={"Retry-After": "1"})
    started = time.perf_counter()
    sample: float | None = None
    try:
        yield
        sample = time.perf_counter() - started
    except ApiError as error:
        if error.status == 504:
            sample = time.perf_counter() - started
        raise
    finally:
        limit.release(sample)
