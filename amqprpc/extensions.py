"""The extension vocabulary: entrypoints trigger workers, dependency providers feed them.

Lifecycle of every extension, driven by its container::

    bind(container, name) -> setup() -> start() -> ... -> stop()   (graceful)
                                                       \\-> kill()   (at once; may swallow, logs)

Per call, each dependency provider sees::

    get_dependency(worker_ctx) -> worker_setup(worker_ctx) -> handler runs
        -> worker_result(worker_ctx, result, exc_info) -> worker_teardown(worker_ctx)

(for an ``async def`` handler the container awaits ``worker_setup_async``,
``worker_result_async`` and ``worker_teardown_async`` instead, on its loop).

``__init__`` only records arguments: resources open in ``setup`` and close in ``stop``.
Decorators record an entrypoint on the function and return the function unchanged, so a
service method is still a plain method (unit tests call it without a broker).

Extensions see their container through ``Container``, the part of
``containers.ServiceContainer`` they may use: this module sits below the container and
never imports it (tests/unit/test_architecture.py holds the layers).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

if TYPE_CHECKING:
    import asyncio

from .cancellation.token import CancelToken
from .config import Config
from .exceptions import CallCancelled
from .messages import CALL_ID_STACK, Context, Headers, child_call_stack
from .transport import Transport

F = TypeVar("F", bound=Callable[..., Any])
X = TypeVar("X", bound="Extension")
ENTRYPOINTS_ATTR = "__amqprpc_entrypoints__"
ExcInfo = tuple[type[BaseException], BaseException, Any] | None
ResultHandler = Callable[["WorkerContext", Any, ExcInfo], None]


class Container(Protocol):
    """What an extension may ask of the container that owns it."""

    service_cls: type
    service_name: str
    config: Config
    connection: Transport
    entrypoints: list[Entrypoint]
    dependencies: dict[str, DependencyProvider]

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    @property
    def running(self) -> bool: ...

    def shared_extension(self, key: Any, factory: Callable[[], X]) -> X: ...

    def submit(self, fn: Callable[[], None]) -> None: ...

    def spawn_worker(self, entrypoint: Entrypoint, args: Sequence[Any], kwargs: dict[str, Any],
                     context: Context | None = None, on_result: ResultHandler | None = None, *,
                     request_id: str | None = None, deadline: float | None = None,
                     redelivered: bool = False, headers: Headers | None = None,
                     cancel: CancelToken | None = None) -> WorkerContext: ...


class WorkerContext:
    """Everything about one call: which service and method, its arguments and context.

    ``data`` is the context that arrived (``user_id``, ``auth_token``, ...) and travels
    on with every call and event the handler makes; ``call_id_stack`` ends with this call.
    ``request_id`` is the same across redeliveries of one request (the correlation id),
    for once-only effects. ``headers`` are the message's own (trace context), if it had any.
    ``cancelled`` turns true when the caller gives up (``cancel``: the call's token, for
    RPC calls while cancellation is on); ``raise_if_cancelled()`` then raises.
    """

    def __init__(
        self,
        container: Container,
        entrypoint: Entrypoint,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        data: Context | None = None,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
        redelivered: bool = False,
        headers: Headers | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.container = container
        self.entrypoint = entrypoint
        self.args = args
        self.kwargs = kwargs or {}
        self.call_id = f"{container.service_name}.{entrypoint.method_name}.{uuid.uuid4()}"
        incoming = dict(data or {})
        self.call_id_stack = child_call_stack(incoming, self.call_id)
        self.data: Context = {**incoming, CALL_ID_STACK: self.call_id_stack}
        self.request_id = request_id or self.call_id
        self.deadline = deadline
        self.redelivered = redelivered
        self.headers = headers
        self.cancel_token = cancel
        self.service: Any = None
        self.started = time.perf_counter()  # for durations (discovery's call stats)

    @property
    def service_name(self) -> str:
        return self.container.service_name

    @property
    def method_name(self) -> str:
        return self.entrypoint.method_name

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline, if the call carries one."""
        return None if self.deadline is None else self.deadline - time.time()

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up on this call (a cancel arrived): stop when you can."""
        return self.cancel_token is not None and self.cancel_token.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise ``CallCancelled`` if the caller gave up: a checkpoint for long handlers."""
        token = self.cancel_token
        if token is not None and token.cancelled:
            raise CallCancelled(f"{self.service_name}.{self.method_name}: its caller gave up "
                                f"({token.reason})")

    def __repr__(self) -> str:
        return f"<WorkerContext {self.call_id}>"


class Extension:
    """Something a container owns for its lifetime."""

    container: Container
    attr_name: str = ""

    def bind(self, container: Container, attr_name: str) -> Self:
        """A copy of this declaration that belongs to one container."""
        bound = copy.copy(self)
        bound.container = container
        bound.attr_name = attr_name
        return bound

    def setup(self) -> None:
        """Open resources (connections, engines). Called before any extension starts."""

    def start(self) -> None:
        """Begin work (consume, schedule). Called once every extension is set up."""

    def stop(self) -> None:
        """Finish gracefully: called after in-flight workers have completed."""

    def kill(self) -> None:
        """Stop at once; may swallow errors, and must log what it swallows."""


class DependencyProvider(Extension):
    """Injects a value into the service instance for each call."""

    def get_dependency(self, worker_ctx: WorkerContext) -> Any:
        """The object the handler sees as ``self.<attr_name>`` for this call."""
        return None

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        """Before the handler runs."""

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        """After the handler returned ``result`` or raised ``exc_info``."""

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        """Always, last, after the reply is handed to the broker."""

    # An ``async def`` handler runs on the container's loop, where a blocking hook would
    # stall every other async call, and an async resource (an AsyncSession) can only be
    # begun, committed or closed by awaiting. For those workers the container awaits these
    # three instead of the sync hooks; by default they run the sync hooks.
    async def worker_setup_async(self, worker_ctx: WorkerContext) -> None:
        """``worker_setup`` for an ``async def`` handler, awaited on the container's loop."""
        self.worker_setup(worker_ctx)

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        """``worker_result`` for an ``async def`` handler, awaited on the container's loop."""
        self.worker_result(worker_ctx, result, exc_info)

    async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
        """``worker_teardown`` for an ``async def`` handler, awaited on the container's loop."""
        self.worker_teardown(worker_ctx)


class Entrypoint(Extension):
    """Something that makes a service method run: a message, a timer, an event."""

    method_name: str = ""
    expected_exceptions: tuple[type[BaseException], ...] = ()
    is_async: bool = False

    def bind_method(self, container: Container, method_name: str) -> Self:
        bound = self.bind(container, method_name)
        bound.method_name = method_name
        return bound

    @classmethod
    def decorator(cls, *args: Any, **kwargs: Any) -> Any:
        """Record an instance of this entrypoint on the decorated function.

        ``@cls`` (bare) and ``@cls(...)`` both work; the function is returned unchanged.
        """
        if len(args) == 1 and not kwargs and callable(args[0]) and not _is_class(args[0]):
            return register_entrypoint(args[0], cls())

        def record(fn: F) -> F:
            return register_entrypoint(fn, cls(*args, **kwargs))

        return record


def register_entrypoint(fn: F, entrypoint: Entrypoint) -> F:
    """Attach an entrypoint declaration to ``fn``; a method may carry several."""
    declared = fn.__dict__.setdefault(ENTRYPOINTS_ATTR, [])
    declared.append(entrypoint)
    return fn


def entrypoints_of(fn: Any) -> list[Entrypoint]:
    """The entrypoint declarations recorded on a function (empty for plain methods)."""
    return list(getattr(fn, ENTRYPOINTS_ATTR, ()))


def _is_class(value: Any) -> bool:
    return isinstance(value, type)
