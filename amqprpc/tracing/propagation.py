"""W3C trace context in AMQP headers: ``traceparent`` and ``tracestate``, and their context twins.

Each traced message carries them twice: unprefixed, the W3C way, and as context headers
(``nameko.traceparent``, ``nameko.tracestate``). A Nameko service ignores the unprefixed ones
but, like every context header, hands the prefixed ones on to the calls and events it makes,
so the amqprpc hop after a Nameko service is still in the trace (a child of the span that
called the Nameko service, which makes no span of its own). Nothing else of the context, such
as ``call_id_stack``, is touched. The unprefixed pair wins when a message has both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE_HEADERS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()


def inject(headers: dict[str, Any], context: Context | None, prefix: str) -> None:
    """Write the trace context of ``context`` (None: the current one) into ``headers``, twice."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    for key, value in carrier.items():
        headers[key] = headers[f"{prefix}.{key}"] = value


def extract(headers: Mapping[str, Any] | None, prefix: str) -> Context | None:
    """The remote trace context a message carries, or None when it carries none."""
    if not headers:
        return None
    for lead in ("", f"{prefix}."):
        if f"{lead}traceparent" in headers:
            carrier = {key: str(headers[lead + key]) for key in TRACE_HEADERS if lead + key in headers}
            return _PROPAGATOR.extract(carrier)
    return None
