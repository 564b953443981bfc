"""W3C trace context in AMQP headers: ``traceparent`` and ``tracestate``, unprefixed.

They sit next to the ``nameko.*`` context headers, which they never touch: a Nameko service
ignores headers it does not know, and ``call_id_stack`` travels as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE_HEADERS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()


def inject(headers: dict[str, Any], context: Context | None = None) -> None:
    """Write the trace context of ``context`` (default: the current one) into ``headers``."""
    _PROPAGATOR.inject(headers, context)


def extract(headers: Mapping[str, Any] | None) -> Context | None:
    """The remote trace context a message carries, or None when it carries none."""
    if not headers or "traceparent" not in headers:
        return None
    carrier = {key: str(headers[key]) for key in TRACE_HEADERS if key in headers}
    return _PROPAGATOR.extract(carrier)
