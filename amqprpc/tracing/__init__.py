"""OpenTelemetry tracing for amqprpc: spans for calls, handlers and events (docs/observability.md).

Off unless the config says ``tracing = 1``; then ``setup.TracingOwner`` (owned by the runner or
a client) configures the SDK from the standard ``OTEL_*`` variables. Importing this package
imports no OpenTelemetry module: ``LogContextFilter`` and ``JsonLogFormatter`` (from ``logs``,
which needs the OpenTelemetry API) load when first named, and the modules that make spans are
imported by the parts that use them, only when tracing is on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JsonLogFormatter", "LogContextFilter"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import logs

        return getattr(logs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
