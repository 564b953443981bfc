"""Who configures OpenTelemetry, and from what: the standard ``OTEL_*`` variables.

A process that serves (``ServiceRunner``) or calls (``ClusterRpcClient``) owns one
``TracingOwner`` when its config turns tracing on: ``start()`` installs an SDK tracer
provider as OpenTelemetry's global one, ``shutdown()`` flushes and stops it (its batch
exporter thread). If the application already installed an SDK provider (its own setup, or a
test's in-memory exporter), that one is used and left alone.

The SDK reads ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (resource) and
``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (sampler) itself; this module reads
``OTEL_TRACES_EXPORTER`` (``otlp`` default, ``console``, ``none``) and
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` default, ``http/protobuf``); the OTLP exporters read
``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends. ``OTEL_SDK_DISABLED=true`` keeps tracing off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..config import Config
from ..exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")


def tracing_enabled(config: Config, env: Mapping[str, str] | None = None) -> bool:
    """Whether this config traces: ``tracing`` set, and the SDK not disabled by ``OTEL_SDK_DISABLED``."""
    if not config.tracing:
        return False
    env = os.environ if env is None else env
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


class TracingOwner:
    """Starts and stops the process's tracer provider (see the module docstring)."""

    def __init__(self, config: Config, *, service_name: str = "amqprpc",
                 env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.service_name = service_name
        self._env = os.environ if env is None else env
        self._provider: TracerProvider | None = None

    def start(self) -> None:
        """Install an SDK provider configured from ``OTEL_*``, unless one is installed already."""
        if not tracing_enabled(self.config, self._env):
            return
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            raise ConfigError("tracing needs OpenTelemetry's SDK: pip install 'amqprpc[otel]'") from None
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return  # the application configured OpenTelemetry: use its provider, leave it alone
        resource = Resource.create({} if "OTEL_SERVICE_NAME" in self._env
                                   else {SERVICE_NAME: self.service_name})
        provider = TracerProvider(resource=resource)
        exporter = self._exporter()
        if exporter is not None:
            provider.add_span_processor(_processor(exporter, batch=not _is_console(exporter)))
        trace.set_tracer_provider(provider)
        self._provider = provider
        _log.info("tracing on: exporter %s", self._env.get("OTEL_TRACES_EXPORTER", "otlp"))

    def shutdown(self) -> None:
        """Flush the spans not yet exported and stop the exporter (only for a provider we own)."""
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown()

    def _exporter(self) -> SpanExporter | None:
        names = [n.strip().lower() for n in self._env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
        name = names[0] or "otlp"
        if name not in EXPORTERS or len(names) > 1:
            raise ConfigError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}; "
                              f"got {self._env['OTEL_TRACES_EXPORTER']!r}")
        if name == "none":
            return None
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        protocol = self._env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                 self._env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
        try:
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                    OTLPSpanExporter,
                )
        except ImportError:
            raise ConfigError("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp: "
                              "pip install 'amqprpc[otel]'") from None
        return OTLPSpanExporter()


def _is_console(exporter: SpanExporter) -> bool:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return isinstance(exporter, ConsoleSpanExporter)


def _processor(exporter: SpanExporter, batch: bool) -> SpanProcessor:
    """Batching for network exporters; the console prints each span as it ends."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    return BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
