"""Helpers to test services: unit tests with no broker, integration tests with no sleeps.

Nameko's testing kit, for amqprpc (the names and shapes match, so tests port over)::

    service = worker_factory(OrdersService)            # dependencies are MagicMocks
    service.create(user_id=1, amount=9.5)
    service.payments.charge.assert_called_once_with(...)

    container = ServiceContainer(OrdersService, config)  # not started yet
    payments = replace_dependencies(container, "payments")
    restrict_entrypoints(container, "create")
    container.start()
    with entrypoint_hook(container, "create", context_data={"user_id": "u1"}) as create:
        create(user_id=1, amount=9.5)                   # a real worker, no message
    with entrypoint_waiter(container, "on_paid") as waited:
        publish_the_event()
    waited.get()                                        # its result, or its exception

Nothing here imports pytest; ``amqprpc.testing.pytest`` builds fixtures on these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from unittest.mock import MagicMock

from ..containers import ServiceContainer, WorkerContext, dependencies_of
from ..exceptions import AmqpRpcError
from ..extensions import DependencyProvider, Entrypoint, ExcInfo
from ..runner import ServiceRunner

S = TypeVar("S")
WaiterCallback = Callable[[WorkerContext, Any, ExcInfo], bool]

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


class ExtensionNotFound(AmqpRpcError, LookupError):
    """Raised when a helper is given a dependency or entrypoint name the service lacks."""


class EntrypointTimeout(AmqpRpcError, TimeoutError):
    """Raised when the awaited entrypoint did not finish within the timeout."""


# ------------------------------------------------------------------ unit tests


def worker_factory(service_cls: type[S], **dependencies: Any) -> S:
    """An instance of ``service_cls`` whose dependencies are MagicMocks, or the given objects.

    No container, no broker: call its methods directly to test the business logic.
    A keyword that names no dependency of the class raises ``ExtensionNotFound``.
    """
    service = service_cls()
    declared = _dependency_names(service_cls)
    unknown = set(dependencies) - set(declared)
    if unknown:
        raise ExtensionNotFound(
            f"{service_cls.__name__} has no dependency {_names(unknown)}; it has {_names(declared)}"
        )
    for name in declared:
        if name in dependencies:
            setattr(service, name, dependencies[name])
        else:
            setattr(service, name, MagicMock(name=f"{service_cls.__name__}.{name}"))
    return service


def _dependency_names(service_cls: type) -> list[str]:
    return sorted(dependencies_of(service_cls))


def with_name(service_cls: type, name: str) -> type:
    """A subclass of ``service_cls`` with another ``name`` (isolates tests on one broker)."""
    return type(service_cls.__name__, (service_cls,), {"name": name, "__module__": service_cls.__module__})


# ------------------------------------------------------------------ before start


class _Replacement(DependencyProvider):
    """Injects a fixed object in place of a real dependency; opens nothing."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get_dependency(self, worker_ctx: WorkerContext) -> Any:
        return self.value


def replace_dependencies(container: ServiceContainer, *names: str, **replacements: Any) -> Any:
    """Swap dependencies of a not-yet-started container for MagicMocks or given objects.

    Positional names get a fresh MagicMock each and are returned (one name: the mock;
    several: a tuple in the same order); keyword arguments inject the given objects.
    The real providers are never set up, so they open no connection.
    """
    _require_not_started(container, "replace_dependencies")
    wanted = [*names, *replacements]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"a dependency is named twice: {wanted}")
    unknown = set(wanted) - set(container.dependencies)
    if unknown:
        raise ExtensionNotFound(
            f"service {container.service_name!r} has no dependency {_names(unknown)}; "
            f"it has {_names(container.dependencies)}"
        )
    mocks = [MagicMock(name=f"{container.service_name}.{name}") for name in names]
    for name, value in [*zip(names, mocks, strict=True), *replacements.items()]:
        container.dependencies[name] = _Replacement(value).bind(container, name)
    if len(mocks) == 1:
        return mocks[0]
    return tuple(mocks)


def restrict_entrypoints(container: ServiceContainer, *method_names: str) -> None:
    """Keep only the entrypoints of ``method_names`` on a not-yet-started container.

    The others never consume or fire: an ``@rpc`` method left out answers
    ``MethodNotFound``, a left-out event handler declares no queue, a timer never ticks.
    """
    _require_not_started(container, "restrict_entrypoints")
    known = {entrypoint.method_name for entrypoint in container.entrypoints}
    unknown = set(method_names) - known
    if unknown:
        raise ExtensionNotFound(
            f"service {container.service_name!r} has no entrypoint {_names(unknown)}; "
            f"it has {_names(known)}"
        )
    container.entrypoints = [ep for ep in container.entrypoints if ep.method_name in method_names]


def _require_not_started(container: ServiceContainer, helper: str) -> None:
    if container.running:
        raise RuntimeError(
            f"{helper}() changes how a container is built: call it before container.start() "
            "(container_factory(Service, start=False) gives an unstarted container)"
        )


# ------------------------------------------------------------------ running containers


@contextmanager
def entrypoint_hook(
    container: ServiceContainer,
    method_name: str,
    context_data: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> Iterator[Callable[..., Any]]:
    """Yield a function that runs ``method_name`` as a real worker, without a message.

    The call goes through the container (a pool thread, or its loop for ``async def``),
    with dependencies injected and their hooks run, and ``context_data`` as the incoming
    context (``user_id``, ``call_id_stack``, ...). The function returns the result, or
    raises the handler's exception, once the worker has been torn down.
    """
    entrypoint = _entrypoint_of(container, method_name)
    if not container.running:
        raise RuntimeError(f"entrypoint_hook: start container {container.service_name!r} first")

    def hook(*args: Any, **kwargs: Any) -> Any:
        outcome: list[tuple[WorkerContext, Any, ExcInfo]] = []
        finished = threading.Event()

        def on_result(ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
            outcome.append((ctx, result, exc_info))  # before teardown: which worker is ours

        def observe(ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
            if outcome and ctx is outcome[0][0]:  # after teardown
                finished.set()

        container.worker_observers.append(observe)
        try:
            def spawn() -> None:
                container.spawn_worker(entrypoint, list(args), kwargs, context_data, on_result)

            if entrypoint.is_async:
                spawn()
            else:
                container.submit(spawn)
            if not finished.wait(timeout):
                raise EntrypointTimeout(
                    f"{container.service_name}.{method_name} did not finish within {timeout:g}s"
                )
        finally:
            container.worker_observers.remove(observe)
        _, result, exc_info = outcome[0]
        if exc_info is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        return result

    yield hook


class WaitResult:
    """What ``entrypoint_waiter`` saw: the worker, and its result or exception."""

    def __init__(self) -> None:
        self.worker_ctx: WorkerContext | None = None
        self.result: Any = None
        self.exc_info: ExcInfo = None

    def get(self) -> Any:
        """The entrypoint's return value; re-raises its exception if it raised."""
        if self.worker_ctx is None:
            raise RuntimeError("no worker has finished yet: call get() after the with block")
        if self.exc_info is not None:
            raise self.exc_info[1].with_traceback(self.exc_info[2])
        return self.result


@contextmanager
def entrypoint_waiter(
    container: ServiceContainer,
    method_name: str,
    timeout: float = 30.0,
    callback: WaiterCallback | None = None,
) -> Iterator[WaitResult]:
    """On leaving the block, wait until a worker of ``method_name`` has finished.

    Only workers that finish after the block is entered count, and with ``callback`` only
    those for which ``callback(worker_ctx, result, exc_info)`` is true. The yielded
    ``WaitResult`` holds the worker's outcome (``.get()``). Raises ``EntrypointTimeout``
    when none finished within ``timeout`` seconds of leaving the block. An exception in
    the entrypoint does not raise here: ``.get()`` re-raises it.
    """
    _entrypoint_of(container, method_name)
    waited = WaitResult()
    finished = threading.Event()
    lock = threading.Lock()
    callback_errors: list[BaseException] = []

    def observe(worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        if worker_ctx.method_name != method_name:
            return
        with lock:
            if finished.is_set():
                return
            try:
                if callback is not None and not callback(worker_ctx, result, exc_info):
                    return
            except BaseException as exc:  # surfaced in the test's thread, below
                callback_errors.append(exc)
            waited.worker_ctx, waited.result, waited.exc_info = worker_ctx, result, exc_info
            finished.set()

    container.worker_observers.append(observe)
    try:
        yield waited
        if not finished.wait(timeout):
            raise EntrypointTimeout(
                f"no worker of {container.service_name}.{method_name} finished within {timeout:g}s"
            )
        if callback_errors:
            raise callback_errors[0]
    finally:
        container.worker_observers.remove(observe)


def get_container(runner: ServiceRunner, service: type | str) -> ServiceContainer:
    """The runner's container for a service class or service name."""
    for container in runner.containers:
        if container.service_cls is service or container.service_name == service:
            return container
    raise ExtensionNotFound(f"the runner has no container for {service!r}")


def _entrypoint_of(container: ServiceContainer, method_name: str) -> Entrypoint:
    for entrypoint in container.entrypoints:
        if entrypoint.method_name == method_name:
            return entrypoint
    raise ExtensionNotFound(
        f"service {container.service_name!r} has no entrypoint {method_name!r}; it has "
        f"{_names(ep.method_name for ep in container.entrypoints)}"
    )


def _names(names: Any) -> str:
    return ", ".join(repr(name) for name in sorted(set(names))) or "none"
