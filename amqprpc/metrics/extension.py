"""``MetricsExtension``: counts each container's calls through the worker hooks.

The runner adds one to every container when metrics are on; with metrics off it does not
exist, so the handler path runs nothing extra. It is a dependency provider because only
those see every worker (``worker_setup`` → ``worker_result`` → ``worker_teardown``); the
service instance gets ``None`` under the attribute name, which no service reads.

What never reaches a worker (a request past its deadline, one that cannot run) is counted
through ``RpcConsumer.on_unrun``, and dead letters through ``EventHandler.on_dead_letter``:
both are no-ops unless this extension sets them in ``setup``, before anything consumes.
"""

from __future__ import annotations

import time
from typing import Any

from ..calls import Caller
from ..entrypoints.events import EventHandler
from ..entrypoints.rpc import Rpc, RpcConsumer
from ..extensions import DependencyProvider, ExcInfo, WorkerContext
from .registry import MetricsRegistry

ATTR = "_amqprpc_metrics"  # the attribute the extension is bound as on each service
_STARTED = "_amqprpc_metrics_started"  # on the WorkerContext: when worker_setup ran
UNKNOWN_METHOD = "<unknown>"  # the method label of a request naming no @rpc method


class MetricsExtension(DependencyProvider):
    """Feeds one container's calls into the process's ``MetricsRegistry``."""

    def __init__(self, metrics: MetricsRegistry) -> None:
        self.metrics = metrics

    def setup(self) -> None:
        container = self.container
        service = container.service_name
        self._rpc_methods = {e.method_name for e in container.entrypoints if isinstance(e, Rpc)}
        if self._rpc_methods:
            # Dependencies are set up before entrypoints: created here, the consumer has
            # its hook before it is registered with the transport, so no request is missed.
            consumer = container.shared_extension(RpcConsumer, RpcConsumer)
            consumer.on_unrun = self._unrun
        for entrypoint in container.entrypoints:
            if isinstance(entrypoint, EventHandler):
                counter = self.metrics.events_dead_lettered.labels(service, entrypoint.method_name)
                entrypoint.on_dead_letter = counter.inc
        self._in_flight = self.metrics.rpc_in_flight.labels(service)
        # The labelled children, looked up once: ``labels()`` takes a lock and builds a key,
        # too much to do per call (benchmarks/metrics_cost.py).
        requests, duration = self.metrics.rpc_requests, self.metrics.rpc_duration
        self._rpc = {name: (requests.labels(service, name, "ok"), requests.labels(service, name, "error"),
                            duration.labels(service, name)) for name in self._rpc_methods}
        handled = self.metrics.events_handled
        self._events = {e.method_name: (handled.labels(service, e.method_name, "ok"),
                                        handled.labels(service, e.method_name, "error"))
                        for e in container.entrypoints if isinstance(e, EventHandler)}
        self.metrics.watch(container)

    def start(self) -> None:
        # RpcProxy's callers exist once every dependency is set up.
        for dependency in self.container.dependencies.values():
            caller = getattr(dependency, "_caller", None)
            if isinstance(caller, Caller):
                self.metrics.client_calls.watch_caller(caller)

    def stop(self) -> None:
        self.metrics.unwatch(self.container)

    def kill(self) -> None:
        self.metrics.unwatch(self.container)

    def _unrun(self, method: str, outcome: str) -> None:
        method = method if method in self._rpc_methods else UNKNOWN_METHOD
        self.metrics.rpc_requests.labels(self.container.service_name, method, outcome).inc()

    # ------------------------------------------------------------ per worker

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        if worker_ctx.method_name in self._rpc and isinstance(worker_ctx.entrypoint, Rpc):
            self._in_flight.inc()
            setattr(worker_ctx, _STARTED, time.perf_counter())

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        entrypoint = worker_ctx.entrypoint
        if isinstance(entrypoint, Rpc):
            ok, error, duration = self._rpc[worker_ctx.method_name]
            (ok if exc_info is None else error).inc()
            started = getattr(worker_ctx, _STARTED, None)
            if started is not None:
                duration.observe(time.perf_counter() - started)
        elif isinstance(entrypoint, EventHandler):
            ok, error = self._events[worker_ctx.method_name]
            (ok if exc_info is None else error).inc()

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        # Only a worker whose setup counted it (an earlier dependency's failing setup skips ours).
        if getattr(worker_ctx, _STARTED, None) is not None:
            self._in_flight.dec()
