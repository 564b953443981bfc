"""A SERVER span per HTTP request, continuing the caller's W3C trace context (docs/observability.md).

Installed by ``create_app`` only when the config turns tracing on. The span is the current
context while the request is handled, so the RPC calls the bridge makes for it are its
children; the response carries ``traceparent`` (and ``tracestate``) so the HTTP client can
find the trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PROPAGATOR = TraceContextTextMapPropagator()
CATCH_ALL = "{tail}"


async def _trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler`` inside a SERVER span; mark 5xx answers as errors."""
    parent = _PROPAGATOR.extract({k.lower(): v for k, v in request.headers.items()})
    resource = request.match_info.route.resource
    # The gateway's routes sit behind one catch-all: then, as the conventions say for a
    # request without a route template, the span is named by its method alone.
    template = resource.canonical if resource is not None and CATCH_ALL not in resource.canonical else ""
    attributes = {"http.request.method": request.method, "url.path": request.path,
                  "url.scheme": request.scheme}
    if template:
        attributes["http.route"] = template
    span = trace.get_tracer("http_bridge").start_span(
        f"{request.method} {template}".strip(), context=parent, kind=SpanKind.SERVER,
        attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _finish(span, exc.status)
            _answer_with_context(exc, span)
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        _finish(span, response.status)
        _answer_with_context(response, span)
        return response
    finally:
        span.end()
        otel_context.detach(token)


tracing_middleware: Middleware = web.middleware(_trace_request)


def _finish(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(status)))


def _answer_with_context(response: web.StreamResponse, span: trace.Span) -> None:
    if response.prepared:
        return  # streamed: its headers are already sent
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    response.headers.update(carrier)
