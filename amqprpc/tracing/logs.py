"""Log records made inside a call carry ``trace_id``, ``span_id`` and ``call_id``.

The call id is set by tracing.worker, so it is there when tracing is on; the trace ids come
from OpenTelemetry's current span (an application's own spans too).

``LogContextFilter`` adds them to every record (empty strings outside a call or span), so a
user's own handler can print them (``%(trace_id)s``); ``JsonLogFormatter`` prints one JSON
object per line with them (``amqprpc run --log-format json``).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar

# The call id of the worker running in this thread or task; set by tracing.worker.
CALL_ID: ContextVar[str] = ContextVar("amqprpc_call_id", default="")


class LogContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` (hex, as trace backends show them) and ``call_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id, record.span_id = _current_ids()
        record.call_id = CALL_ID.get()
        return True


def _current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span; empty without one, or without OpenTelemetry."""
    try:
        from opentelemetry import trace
    except ImportError:  # JSON logs work without the otel extra; they carry the call id only
        return "", ""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace and call ids, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
            "call_id": getattr(record, "call_id", ""),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def json_logging(level: str) -> None:
    """Configure the root logger to print JSON lines carrying the trace and call ids."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(LogContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
