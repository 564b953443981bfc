"""Per-process health endpoints for orchestrators: ``/healthz`` and ``/readyz``.

* ``/healthz``: 200 while every container's connection is up and consuming, 503 otherwise
  (a liveness probe may restart a worker that stays unhealthy).
* ``/readyz``: 200 once started and healthy, 503 while starting or stopping (take the
  worker out of rotation, do not restart it).

The body is JSON with one entry per service. The server runs in one thread owned by
``HealthServer`` (start/stop); it uses only the standard library.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .exceptions import ConfigError
from .runner import ServiceRunner

_log = logging.getLogger(__name__)


class HealthServer:
    """Serve the health of one runner's containers on ``host:port``."""

    def __init__(self, runner: ServiceRunner, port: int, host: str = "0.0.0.0") -> None:
        self.runner = runner
        self.port = port
        self.host = host
        self.stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        services = {
            container.service_name: {
                "connected": container.connection.is_connected,
                "blocked": container.connection.blocked_reason,
                "in_flight": container.in_flight,
            }
            for container in self.runner.containers
        }
        healthy = all(s["connected"] for s in services.values())
        return {"healthy": healthy, "ready": healthy and not self.stopping, "services": services}

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = owner.status()
                if self.path == "/healthz":
                    ok = status["healthy"]
                elif self.path == "/readyz":
                    ok = status["ready"]
                else:
                    self.send_error(404, "try /healthz or /readyz")
                    return
                body = json.dumps(status).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                _log.debug("health: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:  # the port taken, a bad host: say which, as --metrics-port does
            raise ConfigError(f"cannot serve health endpoints on {self.host}:{self.port}: {exc}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="amqprpc-health",
                                        daemon=True)
        self._thread.start()
        _log.info("health endpoints on http://%s:%d/healthz and /readyz", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
