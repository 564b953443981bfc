"""Run several services in one process, and find them in modules.

``ServiceRunner`` starts one container per service class and stops them together; the
CLI's ``run`` command wires it to signals. The runner is where a container gets the
extensions every served service has (``SERVICE_EXTENSIONS``: the discovery announcer), so
the container itself knows nothing of discovery. ``find_services`` turns ``module[:Class]``
arguments into service classes, with errors a user can act on.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from .config import Config
from .containers import ExtensionFactory, ServiceContainer
from .discovery.announcer import ServiceAnnouncer
from .exceptions import ConfigError
from .extensions import entrypoints_of
from .tracing.setup import TracingOwner, tracing_enabled

if TYPE_CHECKING:
    from .metrics.server import MetricsServer

_log = logging.getLogger(__name__)

# Shared extensions every served container runs, started after its entrypoints.
SERVICE_EXTENSIONS: tuple[ExtensionFactory, ...] = (ServiceAnnouncer,)


def service_container(service_cls: type, config: Config | None = None) -> ServiceContainer:
    """A container for ``service_cls`` as ``amqprpc run`` builds it: announced on the bus (and traced)."""
    providers = None
    if config is not None and tracing_enabled(config):
        from .tracing.worker import worker_providers
        providers = worker_providers(enabled=True)
    return ServiceContainer(service_cls, config, extensions=SERVICE_EXTENSIONS, providers=providers)


class ServiceRunner:
    """Owns the containers of one process; ``stop()`` is graceful, ``kill()`` is not.

    With a metrics port it also owns the ``/metrics`` server and counts every container's
    calls (amqprpc.metrics). ``metrics_port`` defaults to the config's, where 0 is off; passed
    here, 0 means any free port (``runner.metrics.port`` says which).
    """

    def __init__(self, config: Config | None = None, *, metrics_port: int | None = None) -> None:
        self.config = config or Config()
        self.containers: list[ServiceContainer] = []
        self.tracing = TracingOwner(self.config, service_name="amqprpc-worker")
        port = (self.config.metrics_port or None) if metrics_port is None else metrics_port
        self.metrics: MetricsServer | None = None
        if port is not None:
            from .metrics.server import MetricsServer  # prometheus_client: only when on

            self.metrics = MetricsServer(port)

    def add_service(self, service_cls: type) -> ServiceContainer:
        container = service_container(service_cls, self.config)
        if any(c.service_name == container.service_name for c in self.containers):
            raise ConfigError(f"service {container.service_name!r} is added twice")
        if self.metrics is not None:
            self.metrics.install(container)
        self.containers.append(container)
        return container

    def start(self, wait: bool = True) -> None:
        """Start every container; if one fails, stop the ones already started."""
        started: list[ServiceContainer] = []
        self.tracing.start()
        try:
            for container in self.containers:
                container.start(wait=wait)
                started.append(container)
            if self.metrics is not None:
                self.metrics.start()
        except BaseException:
            for container in started:
                container.kill()
            self.tracing.shutdown()
            raise

    def stop(self, grace: float | None = None) -> bool:
        """Stop all containers gracefully; False if some calls outlived the grace period."""
        results = [container.stop(grace) for container in self.containers]
        self.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.stop()
        return all(results)

    def kill(self) -> None:
        for container in self.containers:
            container.kill()
        self.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.stop()


def find_services(targets: Iterable[str]) -> list[type]:
    """Service classes from ``module`` or ``module:Class`` arguments.

    A service class is one defined in that module with a ``name`` and at least one
    entrypoint. Raises ConfigError with a one-line reason when nothing fits.
    """
    found: list[type] = []
    for target in targets:
        module_name, _, class_name = target.partition(":")
        module = _import(module_name)
        if class_name:
            cls = getattr(module, class_name, None)
            if not isinstance(cls, type):
                raise ConfigError(f"module {module_name!r} has no class {class_name!r}")
            if not is_service_class(cls):
                raise ConfigError(f"{target} is not a service: it needs a `name` and an entrypoint")
            found.append(cls)
            continue
        classes = [
            cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__ and is_service_class(cls)
        ]
        if not classes:
            raise ConfigError(
                f"module {module_name!r} defines no service class (a class with a `name` and "
                "@rpc/@event_handler/@timer methods)"
            )
        found.extend(classes)
    return found


def is_service_class(cls: type) -> bool:
    return isinstance(getattr(cls, "name", None), str) and any(
        entrypoints_of(getattr(cls, attr, None)) for attr in dir(cls)
    )


def _import(module_name: str) -> ModuleType:
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")  # `amqprpc run services.x` from a project folder, like nameko
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"module {module_name!r} not found (looked in {sys.path[0]!r} "
                              "and the installed packages)") from None
        raise ConfigError(f"module {module_name!r} needs {exc.name!r}, which is not installed "
                          "(for the demo services: pip install 'amqprpc[demo]')") from None
