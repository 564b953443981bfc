"""The worker's spans, through the extension hooks: the runner adds ``WorkerSpans`` when tracing is on.

Per call, by entrypoint kind (``@rpc`` SERVER, ``@event_handler`` CONSUMER, ``@timer`` a root
INTERNAL span):

* ``worker_setup`` extracts the caller's W3C trace context from the message headers, starts
  the span as its child (a CONSUMER span also links to the PRODUCER span), and makes it the
  current context while the handler runs, so the handler's own calls and events (and log
  records, see ``logs``) belong to it. It runs in the handler's thread, or in the handler's
  task for an ``async def`` handler, before every other dependency's setup;
* ``worker_result`` records an error status with the exception type;
* ``worker_teardown`` ends the span and restores the context.

With tracing off the runner adds nothing, so no hook runs.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from ..extensions import DependencyProvider, ExcInfo, WorkerContext
from .logs import CALL_ID
from .propagation import extract
from .spans import rpc_attributes, set_error, tracer

ATTR_NAME = "_amqprpc_tracing"  # where the container "injects" it (None) into the service


class WorkerSpans(DependencyProvider):
    """Opens a span around every worker of the container (see the module docstring)."""

    def setup(self) -> None:
        self._tracer = tracer()
        self._open: dict[int, tuple[Span, object, object]] = {}

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        kind, name, attributes = _describe(worker_ctx)
        prefix = worker_ctx.container.config.header_prefix
        parent = extract(worker_ctx.headers, prefix) if kind is not SpanKind.INTERNAL else None
        links = [] if parent is None or kind is not SpanKind.CONSUMER else [
            Link(trace.get_current_span(parent).get_span_context())]
        span = self._tracer.start_span(name, context=parent if parent is not None
                                       else otel_context.Context(),
                                       kind=kind, attributes=attributes, links=links)
        token = otel_context.attach(trace.set_span_in_context(span))
        call_token = CALL_ID.set(worker_ctx.call_id)
        self._open[id(worker_ctx)] = (span, token, call_token)

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        entry = self._open.get(id(worker_ctx))
        if entry is not None and exc_info is not None:
            set_error(entry[0], exc_info[1])

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        entry = self._open.pop(id(worker_ctx), None)
        if entry is None:
            return
        span, token, call_token = entry
        span.end()
        CALL_ID.reset(call_token)  # type: ignore[arg-type]
        otel_context.detach(token)  # type: ignore[arg-type]


def _describe(worker_ctx: WorkerContext) -> tuple[SpanKind, str, dict[str, Any]]:
    """(kind, name, attributes) of a worker's span, by what triggered it."""
    from ..entrypoints.events import EventHandler
    from ..entrypoints.rpc import Rpc

    entrypoint = worker_ctx.entrypoint
    service, method = worker_ctx.service_name, worker_ctx.method_name
    attributes: dict[str, Any] = {"amqprpc.call_id": worker_ctx.call_id}
    if isinstance(entrypoint, Rpc):
        config = worker_ctx.container.config
        attributes.update(rpc_attributes(service, method, f"{service}.{method}", config.rpc_exchange))
        attributes["messaging.message.id"] = worker_ctx.request_id
        attributes["messaging.operation.type"] = "process"
        return SpanKind.SERVER, f"{service}/{method}", attributes
    if isinstance(entrypoint, EventHandler):
        exchange = f"{entrypoint.source}.events"
        attributes.update({
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": entrypoint.event_type,
            "amqprpc.handler": f"{service}.{method}",
        })
        return SpanKind.CONSUMER, f"{exchange} process", attributes
    attributes["amqprpc.handler"] = f"{service}.{method}"
    return SpanKind.INTERNAL, f"{service}/{method}", attributes


def worker_providers(enabled: bool) -> dict[str, DependencyProvider]:
    """What the runner adds to each container: the span hooks when tracing is on, else nothing."""
    return {ATTR_NAME: WorkerSpans()} if enabled else {}
