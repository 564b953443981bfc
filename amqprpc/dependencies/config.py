"""``config = Config()`` on a service: inject the config its container runs with.

``Config`` is a value; this is its provider role, kept apart so that the value depends on
nothing above it. The container reads a bare ``Config`` declared on a service class as a
``ConfigDependency`` (Nameko's ``Config()`` habit), so services need not name this class.
"""

from __future__ import annotations

from ..config import Config
from ..extensions import DependencyProvider, WorkerContext


class ConfigDependency(DependencyProvider):
    """Inject the running container's ``Config`` (a read-only Mapping of every setting)."""

    def get_dependency(self, worker_ctx: WorkerContext) -> Config:
        return worker_ctx.container.config
