"""``MetricsServer``: what the runner owns when metrics are on: the registry and ``/metrics``.

With ``--workers N`` each worker process serves its own port (``PORT+i``, as the health
port does) rather than prometheus-client's multiprocess mode: that mode cannot serve the
values read at scrape time (connection state, backlog), needs a shared directory cleaned
when a child dies, and Prometheus already sums per-process series. The HTTP server runs in
one thread that ``start`` starts and ``stop`` ends (prometheus-client's ``start_http_server``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from .extension import ATTR, MetricsExtension
from .registry import MetricsRegistry

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ..containers import ServiceContainer

_log = logging.getLogger(__name__)


class MetricsServer:
    """Serve one process's metrics on ``host:port`` (port 0: any free port, see ``port``)."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        self.port = port
        self.host = host
        self.metrics = MetricsRegistry()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def install(self, container: ServiceContainer) -> None:
        """Count ``container``'s calls (before it starts)."""
        container.dependencies[ATTR] = MetricsExtension(self.metrics).bind(container, ATTR)

    def watch_client(self, client: Any) -> None:
        """Count the calls of a ``ClusterRpcClient``/``AsyncRpcClient`` (``amqprpc_client_calls_total``).

        The switch for a plain client (a script, a web app that is not the bridge): serve a
        ``MetricsServer`` of its own and hand it the client (docs/observability.md).
        """
        self.metrics.client_calls.watch_client(client)

    def start(self) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.port, self.host,
                                                           self.metrics.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from None
        self.port = self._server.server_address[1]
        _log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
