"""The metrics of one process, on a registry of its own (never prometheus-client's global one).

Counters and the histogram are updated by ``MetricsExtension`` as calls finish. What is a
state rather than an event (connection up, reconnects, backlog, capacity) is read from the
watched containers when Prometheus scrapes, by ``_LiveCollector``: nothing runs for it between
scrapes, and a dead container's numbers cannot go stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..exceptions import RpcTimeout, ServiceUnavailable, UnknownService

if TYPE_CHECKING:
    from ..calls import Caller, RpcFuture
    from ..extensions import Container
    from ..resilience.breaker import Breakers

_log = logging.getLogger(__name__)

# Seconds: from 1 ms (a local call) to the default 30 s rpc_timeout.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_INFO_TIMEOUT = 2.0  # seconds a scrape waits for one passive declare


class MetricsRegistry:
    """Every amqprpc metric of this process; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = Counter(
            "amqprpc_rpc_requests", "RPC requests this worker took, by outcome "
            "(ok, error, expired: past the caller's deadline, rejected: could not run).",
            ("service", "method", "outcome"), registry=r)
        self.rpc_duration = Histogram(
            "amqprpc_rpc_request_duration_seconds", "Time an RPC handler ran (and the "
            "worker_result hooks, such as a commit).",
            ("service", "method"), buckets=DURATION_BUCKETS, registry=r)
        self.rpc_in_flight = Gauge(
            "amqprpc_rpc_in_flight", "RPC handlers running now.", ("service",), registry=r)
        self.events_handled = Counter(
            "amqprpc_events_handled", "Event handler runs, by outcome (ok, error).",
            ("service", "handler", "outcome"), registry=r)
        self.events_dead_lettered = Counter(
            "amqprpc_events_dead_lettered", "Events moved to their dead-letter queue.",
            ("service", "handler"), registry=r)
        self.client_calls = ClientCallMetrics(r)
        self._live = _LiveCollector()
        r.register(self._live)

    def watch(self, container: Container) -> None:
        """Report ``container``'s connection, backlog and capacity at every scrape."""
        self._live.add(container)

    def unwatch(self, container: Container) -> None:
        self._live.remove(container)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class ClientCallMetrics:
    """``amqprpc_client_calls_total``: the calls a process makes (workers and the bridge)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "amqprpc_client_calls", "RPC calls this process made, by outcome (ok, error, "
            "timeout, unavailable).", ("service", "method", "outcome"), registry=registry)
        self._children: dict[tuple[str, str, str], Any] = {}
        self._breakers = BreakerCollector()
        registry.register(self._breakers)

    def watch_caller(self, caller: Caller) -> None:
        """Count the outcome of every call ``caller`` makes (and report its breakers)."""
        caller.on_call = self._track
        if caller.resilience is not None and caller.resilience.breakers is not None:
            self._breakers.watched.append(caller.resilience.breakers)

    def watch_client(self, client: Any) -> None:
        """Count the calls of a ``ClusterRpcClient`` or ``AsyncRpcClient`` (not a test double)."""
        from ..calls import Caller

        caller = getattr(client, "_caller", None)
        if isinstance(caller, Caller):
            self.watch_caller(caller)

    def _track(self, future: RpcFuture) -> None:
        future.add_done_callback(self._count)

    def _count(self, future: Any) -> None:
        key = (future.service, future.method, call_outcome(future))
        child = self._children.get(key)
        if child is None:  # ``labels()`` takes a lock and builds a key: once per series
            child = self._children[key] = self.calls.labels(*key)
        child.inc()


class BreakerCollector(Collector):
    """``amqprpc_breaker_state{service,method}``: 0 closed, 1 open, 2 half-open, read at scrape."""

    def __init__(self) -> None:
        self.watched: list[Breakers] = []

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("amqprpc_breaker_state", "This process's circuit breakers: "
                                  "0 closed, 1 open, 2 half-open (method * is the whole service).",
                                  labels=("service", "method"))
        for breakers in list(self.watched):
            for breaker in breakers.all():
                gauge.add_metric((breaker.service, breaker.method), breaker.state.gauge)
        yield gauge


def call_outcome(future: Any) -> str:
    """``ok``, ``timeout``, ``unavailable`` (no such service / no worker) or ``error``."""
    if future.cancelled():
        return "error"
    error = future.exception()
    if error is None:
        return "ok"
    if isinstance(error, RpcTimeout):
        return "timeout"
    if isinstance(error, (UnknownService, ServiceUnavailable)):
        return "unavailable"
    return "error"


class _LiveCollector(Collector):
    """Connection state and the backlog signal, read from the containers at scrape time.

    Per RPC service, each worker reports its share of the backlog::

        backlog = ready / consumers + in_flight

    ``ready`` and ``consumers`` come from a passive declare of ``rpc-<service>`` (on a short
    connection of its own: ``detached``); ``in_flight`` is what this process took and has not
    finished. Summed over the workers of a service it is ready + unacked; ``capacity`` summed
    is the prefetch of the live workers. docs/observability.md states the error bound.
    """

    def __init__(self) -> None:
        self._containers: list[Container] = []
        self._lock = threading.Lock()

    def add(self, container: Container) -> None:
        with self._lock:
            self._containers.append(container)

    def remove(self, container: Container) -> None:
        with self._lock:
            if container in self._containers:
                self._containers.remove(container)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # live values: their families are known only at collect time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            containers = list(self._containers)
        up = GaugeMetricFamily("amqprpc_connection_up", "1 while the service's broker "
                               "connection is open, else 0.", labels=["service"])
        reconnects = CounterMetricFamily("amqprpc_connection_reconnects", "Broker connections "
                                         "made after the first one.", labels=["service"])
        backlog = GaugeMetricFamily("amqprpc_service_backlog", "This worker's share of its RPC "
                                    "queue's ready + unacked messages (sum over workers).",
                                    labels=["service"])
        capacity = GaugeMetricFamily("amqprpc_service_capacity", "Calls this worker takes at "
                                     "once (its prefetch) while connected, else 0 (sum over "
                                     "workers).", labels=["service"])
        for container in containers:
            service, connection = container.service_name, container.connection
            connected = connection.is_connected
            up.add_metric([service], 1.0 if connected else 0.0)
            reconnects.add_metric([service], float(max(connection.generation - 1, 0)))
            share = _backlog_share(container) if connected else None
            if share is not None:
                backlog.add_metric([service], share)
                capacity.add_metric([service], float(container.config.effective_prefetch))
            elif _serves_rpc(container):
                capacity.add_metric([service], 0.0)
        yield from (up, reconnects, backlog, capacity)


def _serves_rpc(container: Container) -> bool:
    from ..entrypoints.rpc import Rpc

    return any(isinstance(entrypoint, Rpc) for entrypoint in container.entrypoints)


def _backlog_share(container: Container) -> float | None:
    """ready / consumers + in flight, or None (no RPC queue, or the broker did not answer)."""
    if not _serves_rpc(container):
        return None
    try:
        info = container.connection.queue_info(f"rpc-{container.service_name}",
                                               QUEUE_INFO_TIMEOUT, detached=True)
    except Exception as exc:  # a scrape must not fail because the broker is slow
        _log.debug("backlog of %s not read: %s", container.service_name, exc)
        return None
    if info is None:
        return None
    in_flight: int = getattr(container, "in_flight", 0)
    return info.message_count / max(info.consumer_count, 1) + in_flight
