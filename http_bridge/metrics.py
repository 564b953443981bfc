"""Prometheus metrics of one bridge process, in the text exposition format (``/metrics``).

* ``amqprpc_bridge_requests_total{route, status}``: requests answered;
* ``amqprpc_bridge_request_duration_seconds{route}``: latency histogram;
* ``amqprpc_bridge_calls_in_flight``: RPC calls waiting for a reply.

``route`` is the route's template (``GET /users/{user_id}``), or ``unmatched`` / the
bridge's own path, so label cardinality is bounded by the route table. Each process of
``--workers N`` has its own metrics; scrape them by process (or sum them in Prometheus).
Small enough to keep here rather than pull in a client library and its global registry.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MAX_SERIES = 5000  # a defence in depth: labels are bounded already


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.count += 1
        self.total += value


class BridgeMetrics:
    def __init__(self, inflight: Callable[[], int]) -> None:
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._inflight = inflight

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        if key in self._requests or len(self._requests) < _MAX_SERIES:
            self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._latency.get(route)
        if histogram is None:
            if len(self._latency) >= _MAX_SERIES:
                return
            histogram = self._latency[route] = _Histogram()
        histogram.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP amqprpc_bridge_requests_total HTTP requests answered, by route and status.",
            "# TYPE amqprpc_bridge_requests_total counter",
        ]
        for (route, status), count in sorted(self._requests.items()):
            labels = f'route="{_escape(route)}",status="{status}"'
            lines.append(f"amqprpc_bridge_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP amqprpc_bridge_request_duration_seconds Time to answer, by route.",
            "# TYPE amqprpc_bridge_request_duration_seconds histogram",
        ]
        for route, histogram in sorted(self._latency.items()):
            label = _escape(route)
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'amqprpc_bridge_request_duration_seconds_bucket{{route="{label}",le="{le}"}} '
                             f"{cumulative}")
            name = "amqprpc_bridge_request_duration_seconds"
            lines.append(f'{name}_sum{{route="{label}"}} {histogram.total}')
            lines.append(f'{name}_count{{route="{label}"}} {histogram.count}')
        lines += [
            "# HELP amqprpc_bridge_calls_in_flight RPC calls waiting for their reply.",
            "# TYPE amqprpc_bridge_calls_in_flight gauge",
            f"amqprpc_bridge_calls_in_flight {self._inflight()}",
        ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
