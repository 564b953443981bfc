"""The caller's spans: CLIENT for an RPC request, PRODUCER for an event (semantic conventions).

Both start a span as a child of the current context (the worker's SERVER span inside a
handler, the bridge's request span, or none), write it into the message's headers as W3C
trace context, and end it when the call settles (CLIENT) or once the event is published
(PRODUCER). ``calls.Caller`` and ``dependencies.events.EventDispatcher`` build these only when
tracing is on; when it is off they hold None and make no call.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..transport.base import Outgoing
from .propagation import inject

TRACER_NAME = "amqprpc"


def tracer() -> trace.Tracer:
    """amqprpc's tracer from the global provider (a no-op one until the SDK is installed)."""
    return trace.get_tracer(TRACER_NAME)


def rpc_attributes(service: str, method: str, routing_key: str, exchange: str) -> dict[str, Any]:
    """The attributes a request's CLIENT and SERVER spans share."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "rpc.system": "amqprpc",
        "rpc.service": service,
        "rpc.method": method,
    }


def set_error(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed with the exception type (a ``RemoteError``'s remote type if it has one)."""
    exc_type = getattr(error, "exc_type", None) or type(error).__name__
    span.set_attribute("error.type", str(exc_type))
    span.set_status(Status(StatusCode.ERROR, f"{exc_type}: {error}"))
    span.record_exception(error)


class ClientSpans:
    """CLIENT spans for the requests one ``Caller`` sends (``prefix``: the context headers')."""

    def __init__(self, prefix: str) -> None:
        self._tracer = tracer()
        self._prefix = prefix

    def start(self, message: Outgoing, service: str, method: str, future: Future[Any]) -> None:
        """Start the call's span, put its context in ``message``, end it when ``future`` settles."""
        attributes = rpc_attributes(service, method, message.routing_key, message.exchange)
        attributes["messaging.message.id"] = message.properties.get("correlation_id", "")
        attributes["messaging.operation.type"] = "send"
        span = self._tracer.start_span(f"{service}/{method}", kind=SpanKind.CLIENT,
                                       attributes=attributes)
        inject(message.properties["application_headers"], trace.set_span_in_context(span), self._prefix)
        future.add_done_callback(lambda done: _end(span, done))


class ProducerSpans:
    """PRODUCER spans for the events one ``EventDispatcher`` publishes."""

    def __init__(self, prefix: str) -> None:
        self._tracer = tracer()
        self._prefix = prefix

    def publish(self, message: Outgoing, source: str, event_type: str) -> Span:
        """Start the event's span and put its context in ``message``; the caller ends it."""
        span = self._tracer.start_span(f"{message.exchange} publish", kind=SpanKind.PRODUCER,
                                       attributes={
                                           "messaging.system": "rabbitmq",
                                           "messaging.operation.type": "send",
                                           "messaging.destination.name": message.exchange,
                                           "messaging.rabbitmq.destination.routing_key": event_type,
                                           "amqprpc.event.source": source,
                                           "amqprpc.event.type": event_type,
                                       })
        inject(message.properties["application_headers"], trace.set_span_in_context(span), self._prefix)
        return span


def _end(span: Span, future: Future[Any]) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        set_error(span, error)
    span.end()
