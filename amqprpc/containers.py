"""A container runs one service class in one process, and owns everything that needs owning.

It owns, each with a start point in ``start()`` and a stop point in ``stop()``/``kill()``:

* the broker connection and its I/O thread (``amqprpc-io-<service>``);
* the handler thread pool (``amqprpc-<service>-N``, ``concurrency`` threads);
* an asyncio loop thread (``amqprpc-aio-<service>``), only if a handler is ``async def``;
* its extensions: entrypoints, dependency providers, and shared extensions such as the
  RPC consumer that all ``@rpc`` methods of the service share.

A call runs as a worker: a fresh service instance, dependencies injected, the handler
called, the dependency hooks run around it (see ``extensions``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from .config import Config
from .discovery.announcer import ServiceAnnouncer
from .exceptions import ConfigError
from .extensions import DependencyProvider, Entrypoint, ExcInfo, Extension, entrypoints_of
from .messages import CALL_ID_STACK, Context, child_call_stack
from .pool import HandlerPool
from .transport import BrokerConnection

_log = logging.getLogger(__name__)

SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
X = TypeVar("X", bound=Extension)
ResultHandler = Callable[["WorkerContext", Any, ExcInfo], None]


class WorkerContext:
    """Everything about one call: which service and method, its arguments and context.

    ``data`` is the context that arrived (``user_id``, ``auth_token``, ...) and travels
    on with every call and event the handler makes; ``call_id_stack`` ends with this call.
    ``request_id`` is the same across redeliveries of one request (the correlation id),
    for once-only effects.
    """

    def __init__(
        self,
        container: ServiceContainer,
        entrypoint: Entrypoint,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        data: Context | None = None,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
        redelivered: bool = False,
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
        self.service: Any = None

    @property
    def service_name(self) -> str:
        return self.container.service_name

    @property
    def method_name(self) -> str:
        return self.entrypoint.method_name

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline, if the call carries one."""
        return None if self.deadline is None else self.deadline - time.time()

    def __repr__(self) -> str:
        return f"<WorkerContext {self.call_id}>"


class ServiceContainer:
    """Runs one service class: ``start()``, then ``stop()`` (graceful) or ``kill()``."""

    def __init__(self, service_cls: type, config: Config | None = None) -> None:
        self.service_cls = service_cls
        self.config = config or Config()
        self.service_name = service_name_of(service_cls)
        self.connection = BrokerConnection(
            self.config.broker_url,
            name=f"{self.service_name}-{os.getpid()}",
            heartbeat=self.config.heartbeat,
            connect_timeout=self.config.connect_timeout,
        )
        self._shared: dict[Any, Extension] = {}
        self.dependencies: dict[str, DependencyProvider] = {}
        self.entrypoints: list[Entrypoint] = []
        for attr, value in _class_members(service_cls):
            if isinstance(value, DependencyProvider):
                self.dependencies[attr] = value.bind(self, attr)
            for entrypoint in entrypoints_of(value):
                if attr.startswith("_"):
                    raise ConfigError(
                        f"{service_cls.__name__}.{attr}: private methods cannot be entrypoints"
                    )
                bound = entrypoint.bind_method(self, attr)
                bound.is_async = inspect.iscoroutinefunction(value)
                self.entrypoints.append(bound)
        if not self.entrypoints:
            raise ConfigError(
                f"{service_cls.__name__} has no entrypoints: decorate methods with @rpc, "
                "@event_handler or @timer"
            )
        self._pool: HandlerPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._inflight = 0
        self._idle = threading.Condition()
        self._started = False
        # Called as observer(worker_ctx, result, exc_info) once each worker is torn down;
        # the testing kit's entrypoint_waiter/entrypoint_hook use it. Must not block.
        self.worker_observers: list[ResultHandler] = []

    # ------------------------------------------------------------ extensions

    def shared_extension(self, key: Any, factory: Callable[[], X]) -> X:
        """One instance per container of an extension several entrypoints share."""
        extension = self._shared.get(key)
        if extension is None:
            extension = factory()
            extension.container = self
            self._shared[key] = extension
            extension.setup()
            if self._started:
                extension.start()
        return extension  # type: ignore[return-value]

    def _extensions(self) -> list[Extension]:
        return [*self.dependencies.values(), *self.entrypoints, *self._shared.values()]

    # ------------------------------------------------------------ lifecycle

    def start(self, wait: bool = True) -> None:
        """Set up every extension, connect, and start consuming.

        With ``wait``, a broker that cannot be reached raises BrokerUnreachable at once;
        without, the container keeps retrying in the background and serves once it can.
        """
        self._pool = HandlerPool(self.config.concurrency, f"amqprpc-{self.service_name}")
        try:
            if any(entrypoint.is_async for entrypoint in self.entrypoints):
                self._start_loop()
            for extension in [*self.dependencies.values(), *self.entrypoints]:
                extension.setup()  # shared extensions are set up as entrypoints create them
            self.shared_extension(ServiceAnnouncer, ServiceAnnouncer)  # last: `up` follows the consumers
            self.connection.start(wait=wait)
            for extension in self._extensions():
                extension.start()
        except BaseException:
            self.kill()  # release what was set up (engines, clients, threads), then report
            raise
        self._started = True
        _log.info("service %s started (%d entrypoints, concurrency %d)",
                  self.service_name, len(self.entrypoints), self.config.concurrency)

    def stop(self, grace: float | None = None) -> bool:
        """Stop consuming, let in-flight calls finish (up to ``grace`` s), then close.

        Returns False if calls were still running at the end of the grace period, or if the
        broker had not confirmed every reply, event and ack when the connection closed: those
        are left unacked, so the broker delivers them again to another worker.
        """
        grace = self.config.grace if grace is None else grace
        for entrypoint in [*self.entrypoints, *self._shared.values()]:
            entrypoint.stop()
        finished = self.wait_idle(grace)
        if not finished:
            _log.warning("service %s: %d calls still running after %.1fs grace; "
                         "they will be redelivered", self.service_name, self._inflight, grace)
        for dependency in self.dependencies.values():
            dependency.stop()
        self.connection.stop()
        self._stop_pools(wait=finished)
        self._started = False
        undone = self.connection.left_undone
        if undone is None:  # e.g. a blackholed link: the close itself went unanswered
            _log.warning("service %s: the connection closed without the broker's answer; the "
                         "acks, replies and events sent last may be lost, and their requests "
                         "may run again elsewhere", self.service_name)
        elif undone:
            _log.warning("service %s: %d replies, events or acks not confirmed by the broker "
                         "when the connection closed; their requests will be redelivered",
                         self.service_name, undone)
        return finished and undone == 0

    def kill(self) -> None:
        """Stop at once: nothing in flight is acked, so the broker redelivers it."""
        for extension in self._extensions():
            try:
                extension.kill()
            except Exception:
                _log.exception("service %s: error while killing %r", self.service_name, extension)
        self.connection.stop(timeout=1.0)
        self._stop_pools(wait=False)
        self._started = False

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``/``kill()``."""
        return self._started

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop ``async def`` handlers run on (None if the service has none).

        Dependencies that hold async resources (an async engine) use it to check them at
        setup on the very loop that will use them.
        """
        return self._loop

    @property
    def in_flight(self) -> int:
        """Calls running now (handlers and their replies)."""
        return self._inflight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no call is in flight; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    # ------------------------------------------------------------ running calls

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the handler pool, counted as in flight until it returns."""
        pool = self._pool
        assert pool is not None, "container not started"
        self._enter()
        pool.submit(lambda: self._counted(fn))

    def _counted(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException:
            _log.exception("service %s: unhandled error in a worker", self.service_name)
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._idle:
            self._inflight += 1

    def _leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def run_worker(self, worker_ctx: WorkerContext, on_result: ResultHandler) -> None:
        """Run one call in the calling thread (sync) or on the loop (``async def``).

        ``on_result`` publishes the outcome; it runs after ``worker_result`` (so a
        database commit precedes the reply) and before ``worker_teardown``.
        """
        if worker_ctx.entrypoint.is_async:
            loop = self._loop
            assert loop is not None
            self._enter()
            future = asyncio.run_coroutine_threadsafe(self._run_async(worker_ctx, on_result), loop)
            future.add_done_callback(lambda _: self._leave())
            return
        service, exc_info = self._prepare(worker_ctx)
        result = None
        if exc_info is None:
            try:
                result = getattr(service, worker_ctx.method_name)(*worker_ctx.args, **worker_ctx.kwargs)
            except BaseException:
                exc_info = sys.exc_info()  # type: ignore[assignment]
        self._finish(worker_ctx, result, exc_info, on_result)

    async def _run_async(self, worker_ctx: WorkerContext, on_result: ResultHandler) -> None:
        service, exc_info = self._prepare(worker_ctx, run_setup=False)
        result = None
        if exc_info is None:
            try:
                for dependency in self.dependencies.values():
                    await dependency.worker_setup_async(worker_ctx)
                handler = getattr(service, worker_ctx.method_name)
                result = await handler(*worker_ctx.args, **worker_ctx.kwargs)
            except BaseException:
                exc_info = sys.exc_info()  # type: ignore[assignment]
        try:
            for dependency in self.dependencies.values():
                try:
                    await dependency.worker_result_async(worker_ctx, result, exc_info)
                except BaseException:
                    _log.exception("%s: worker_result of %s failed", worker_ctx, dependency.attr_name)
                    if exc_info is None:
                        result, exc_info = None, sys.exc_info()  # type: ignore[assignment]
            self._log_outcome(worker_ctx, exc_info)
            on_result(worker_ctx, result, exc_info)
        finally:
            for dependency in self.dependencies.values():
                try:
                    await dependency.worker_teardown_async(worker_ctx)
                except BaseException:
                    _log.exception("%s: worker_teardown of %s failed", worker_ctx, dependency.attr_name)
            self._notify_observers(worker_ctx, result, exc_info)

    def _prepare(self, worker_ctx: WorkerContext, run_setup: bool = True) -> tuple[Any, ExcInfo]:
        try:
            service = self.service_cls()
            worker_ctx.service = service
            for attr, dependency in self.dependencies.items():
                setattr(service, attr, dependency.get_dependency(worker_ctx))
            for dependency in self.dependencies.values() if run_setup else ():
                dependency.worker_setup(worker_ctx)
        except BaseException:
            return None, sys.exc_info()  # type: ignore[return-value]
        return service, None

    def _finish(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo,
                on_result: ResultHandler) -> None:
        try:
            for dependency in self.dependencies.values():
                try:
                    dependency.worker_result(worker_ctx, result, exc_info)
                except BaseException:
                    _log.exception("%s: worker_result of %s failed", worker_ctx, dependency.attr_name)
                    if exc_info is None:
                        result, exc_info = None, sys.exc_info()  # type: ignore[assignment]
            self._log_outcome(worker_ctx, exc_info)
            on_result(worker_ctx, result, exc_info)
        finally:
            for dependency in self.dependencies.values():
                try:
                    dependency.worker_teardown(worker_ctx)
                except BaseException:
                    _log.exception("%s: worker_teardown of %s failed", worker_ctx, dependency.attr_name)
            self._notify_observers(worker_ctx, result, exc_info)

    def _notify_observers(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        for observer in list(self.worker_observers):
            try:
                observer(worker_ctx, result, exc_info)
            except Exception:
                _log.exception("%s: worker observer %r failed", worker_ctx, observer)

    def _log_outcome(self, worker_ctx: WorkerContext, exc_info: ExcInfo) -> None:
        if exc_info is None:
            return
        if isinstance(exc_info[1], worker_ctx.entrypoint.expected_exceptions):
            _log.warning("%s raised expected %r", worker_ctx.call_id, exc_info[1])
        else:
            _log.error("%s raised", worker_ctx.call_id, exc_info=exc_info)

    # ------------------------------------------------------------ pools

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._loop_thread = threading.Thread(target=run, name=f"amqprpc-aio-{self.service_name}",
                                             daemon=True)
        self._loop_thread.start()
        ready.wait()

    def _stop_pools(self, wait: bool) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_pending=True)
            self._pool = None
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if wait:
                self._loop_thread.join(5)
            self._loop = None
            self._loop_thread = None


def service_name_of(service_cls: type) -> str:
    """The service's ``name``, checked: it becomes queue names and routing keys."""
    name = getattr(service_cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{service_cls.__name__} needs a class attribute `name` (a non-empty str)")
    if not SERVICE_NAME.match(name):
        raise ConfigError(
            f"{service_cls.__name__}.name {name!r} may hold only letters, digits, '_' and '-'"
        )
    return name


def _class_members(cls: type) -> list[tuple[str, Any]]:
    """Attributes of the class and its bases, the class's own taking precedence."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        members.update(vars(klass))
    return sorted(members.items())
