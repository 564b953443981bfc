"""Prometheus metrics of one bridge process (``/metrics``), on prometheus-client.

* ``amqprpc_bridge_requests_total{route, status}``: requests answered;
* ``amqprpc_bridge_request_duration_seconds{route}``: latency histogram;
* ``amqprpc_bridge_calls_in_flight``: RPC calls waiting for a reply;
* ``amqprpc_bridge_adaptive_limit``, ``..._min_rtt_seconds``, ``..._sample_rtt_seconds``,
  ``..._shed_calls``: the adaptive concurrency limiter, when ``adaptive_concurrency`` is on;
* ``amqprpc_client_calls_total{service, method, outcome}``: the calls the bridge made, as
  every worker counts its own (amqprpc.metrics.registry).

``route`` is the route's template (``GET /users/{user_id}``), or ``unmatched`` / the
bridge's own path, so label cardinality is bounded by the route table. Each process of
``--workers N`` has its own metrics, on a registry of its own (not the library's global
one); scrape them by process (or sum them in Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from amqprpc.metrics.registry import ClientCallMetrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BridgeMetrics:
    def __init__(self, inflight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("amqprpc_bridge_requests", "HTTP requests answered, by route "
                                 "and status.", ("route", "status"), registry=self.registry)
        self._latency = Histogram("amqprpc_bridge_request_duration_seconds", "Time to answer, by "
                                  "route.", ("route",), buckets=BUCKETS, registry=self.registry)
        calls = Gauge("amqprpc_bridge_calls_in_flight", "RPC calls waiting for their reply.",
                      registry=self.registry)
        calls.set_function(inflight)
        self.client_calls = ClientCallMetrics(self.registry)

    def watch_client(self, client: Any) -> None:
        """Count the calls ``client`` (the bridge's AsyncRpcClient) makes."""
        self.client_calls.watch_client(client)

    def watch_adaptive(self, limit: Any) -> None:
        """Export the adaptive concurrency limiter's state (``adaptive_concurrency`` on)."""
        for name, doc, read in (
                ("amqprpc_bridge_adaptive_limit", "Calls the adaptive limiter admits at once now.",
                 lambda: limit.limit),
                ("amqprpc_bridge_adaptive_min_rtt_seconds", "Latency floor the limiter measured.",
                 lambda: limit.min_rtt),
                ("amqprpc_bridge_adaptive_sample_rtt_seconds", "90th percentile latency of the last "
                 "sample window.", lambda: limit.sample_rtt),
                ("amqprpc_bridge_adaptive_shed_calls", "Calls shed (503) by the adaptive limiter.",
                 lambda: limit.shed)):
            Gauge(name, doc, registry=self.registry).set_function(read)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self._requests.labels(route, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
