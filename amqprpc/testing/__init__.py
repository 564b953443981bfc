"""Testing helpers for services built on amqprpc (see docs/testing.md).

The helpers below import nothing of pytest; the fixtures are a pytest plugin, enabled with
``pytest_plugins = ["amqprpc.testing.pytest"]``.
"""

from .services import (
    EntrypointTimeout,
    ExtensionNotFound,
    WaitResult,
    entrypoint_hook,
    entrypoint_waiter,
    get_container,
    replace_dependencies,
    restrict_entrypoints,
    with_name,
    worker_factory,
)

__all__ = [
    "EntrypointTimeout",
    "ExtensionNotFound",
    "WaitResult",
    "entrypoint_hook",
    "entrypoint_waiter",
    "get_container",
    "replace_dependencies",
    "restrict_entrypoints",
    "with_name",
    "worker_factory",
]
