"""A container runs one service class in one process, and owns everything that needs owning.

It owns, each with a start point in ``start()`` and a stop point in ``stop()``/``kill()``:

* the broker connection and its I/O thread (``amqprpc-io-<service>``);
* the handler thread pool (``amqprpc-<service>-N``, ``concurrency`` threads);
* an asyncio loop thread (``amqprpc-aio-<service>``), only if a handler is ``async def``;
* its extensions: entrypoints, dependency providers, and shared extensions such as the
  RPC consumer that all ``@rpc`` methods of the service share.

A call runs as a worker, started by ``spawn_worker`` (Nameko's shape): a fresh service
instance, dependencies injected, the handler called, the dependency hooks run around it
(see ``extensions``). Plain and ``async def`` handlers take the same steps, written once
in ``_worker_steps``. Discovery is not the container's business: the runner hands it the
announcer as one of its ``extensions``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    import asyncio

from .cancellation.token import CancelToken, run_cancellable
from .config import Config
from .dependencies.config import ConfigDependency
from .exceptions import ConfigError
from .extensions import (
    DependencyProvider,
    Entrypoint,
    ExcInfo,
    Extension,
    ResultHandler,
    WorkerContext,
    entrypoints_of,
)
from .messages import Context, Headers
from .pool import HandlerPool
from .transport import Transport, create_transport

__all__ = ["ServiceContainer", "WorkerContext", "dependencies_of", "service_name_of"]

_log = logging.getLogger(__name__)

SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
X = TypeVar("X", bound=Extension)
ExtensionFactory = Callable[[], Extension]


class _Step(NamedTuple):
    """One step of a worker: ``run(*args, **kwargs)``, or ``await run_async(...)`` for async."""

    run: Callable[..., Any]
    run_async: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = {}  # never mutated


class ServiceContainer:
    """Runs one service class: ``start()``, then ``stop()`` (graceful) or ``kill()``.

    ``extensions``: factories of shared extensions started after every entrypoint (the
    runner passes the discovery announcer; a bare container announces nothing).
    ``connection``: the transport to use instead of a new connection to ``broker_url``
    (any that keeps the contract of ``amqprpc.transport``, such as ``MemoryTransport``).
    ``providers``: dependency providers the runner adds (tracing), whose hooks run first.
    """

    def __init__(self, service_cls: type, config: Config | None = None, *,
                 extensions: Iterable[ExtensionFactory] = (),
                 connection: Transport | None = None,
                 providers: Mapping[str, DependencyProvider] | None = None) -> None:
        self.service_cls = service_cls
        self.config = config or Config()
        self.service_name = service_name_of(service_cls)
        self.connection = connection if connection is not None else create_transport(
            self.config, name=f"{self.service_name}-{os.getpid()}"
        )
        self._extra = list(extensions)
        self._shared: dict[Any, Extension] = {}
        self.dependencies: dict[str, DependencyProvider] = {
            attr: provider.bind(self, attr)
            for attr, provider in {**(providers or {}), **dependencies_of(service_cls)}.items()
        }
        self.entrypoints: list[Entrypoint] = []
        for attr, value in _class_members(service_cls):
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
            for factory in self._extra:  # last: an announcer's `up` follows the consumers
                self.shared_extension(factory, factory)
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

    def spawn_worker(self, entrypoint: Entrypoint, args: Sequence[Any], kwargs: dict[str, Any],
                     context: Context | None = None, on_result: ResultHandler | None = None, *,
                     request_id: str | None = None, deadline: float | None = None,
                     redelivered: bool = False, headers: Headers | None = None,
                     cancel: CancelToken | None = None) -> WorkerContext:
        """Run one call of ``entrypoint`` as a worker; returns its context at once for async.

        A plain handler runs in the calling thread (entrypoints call this from the handler
        pool, see ``submit``); an ``async def`` one is handed to the container's loop. Both
        go through the same steps (``_worker_steps``). ``on_result(ctx, result, exc_info)``
        publishes the outcome: it runs after ``worker_result`` (so a database commit
        precedes the reply) and before ``worker_teardown``. ``cancel``: the call's token
        (``ctx.cancelled``; an ``async def`` handler is cancelled at its next await).
        """
        worker_ctx = WorkerContext(self, entrypoint, args, kwargs, context, request_id=request_id,
                                   deadline=deadline, redelivered=redelivered, headers=headers,
                                   cancel=cancel)
        steps = self._worker_steps(worker_ctx, on_result or _no_result)
        if not entrypoint.is_async:
            _drive(steps)
            return worker_ctx
        loop = self._loop
        assert loop is not None, "async entrypoint in a container without a loop"
        self._enter()
        import asyncio  # only a service with async handlers loads it (its idle RSS)

        future = asyncio.run_coroutine_threadsafe(_drive_async(steps), loop)
        future.add_done_callback(lambda done: self._async_worker_done(worker_ctx, done))
        return worker_ctx

    def _async_worker_done(self, worker_ctx: WorkerContext, future: Future[None]) -> None:
        try:
            if not future.cancelled() and future.exception() is not None:
                _log.error("%s: unhandled error in a worker", worker_ctx, exc_info=future.exception())
        finally:
            self._leave()

    def _worker_steps(self, worker_ctx: WorkerContext,
                      on_result: ResultHandler) -> Generator[_Step, Any, None]:
        """The one worker lifecycle; ``_drive`` runs its steps, ``_drive_async`` awaits them.

        Each yielded step is a hook (or the handler) to run; its value is sent back, its
        exception thrown back in, so the order and error rules live here only: a failing
        setup skips the handler; a failing ``worker_result`` turns a success into that
        error; teardown and observers always run, and their failures are only logged.
        """
        result: Any = None
        exc_info: ExcInfo = None
        try:
            service = self.service_cls()
            worker_ctx.service = service
            for attr, dependency in self.dependencies.items():
                setattr(service, attr, dependency.get_dependency(worker_ctx))
            for dependency in self.dependencies.values():
                yield _Step(dependency.worker_setup, dependency.worker_setup_async, (worker_ctx,))
            handler = getattr(service, worker_ctx.method_name)
            token = worker_ctx.cancel_token
            run_async = handler if token is None else functools.partial(run_cancellable, token, handler)
            result = yield _Step(handler, run_async, tuple(worker_ctx.args), worker_ctx.kwargs)
        except BaseException:
            result, exc_info = None, _exc_info()
        try:
            for dependency in self.dependencies.values():
                try:
                    yield _Step(dependency.worker_result, dependency.worker_result_async,
                                (worker_ctx, result, exc_info))
                except BaseException:
                    _log.exception("%s: worker_result of %s failed", worker_ctx, dependency.attr_name)
                    if exc_info is None:
                        result, exc_info = None, _exc_info()
            self._log_outcome(worker_ctx, exc_info)
            on_result(worker_ctx, result, exc_info)
        finally:
            for dependency in self.dependencies.values():
                try:
                    yield _Step(dependency.worker_teardown, dependency.worker_teardown_async,
                                (worker_ctx,))
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
        if worker_ctx.cancelled:  # its caller gave up: whatever it raised, nobody waits for it
            _log.info("%s stopped after its caller gave up: %r", worker_ctx.call_id, exc_info[1])
        elif isinstance(exc_info[1], worker_ctx.entrypoint.expected_exceptions):
            _log.warning("%s raised expected %r", worker_ctx.call_id, exc_info[1])
        else:
            _log.error("%s raised", worker_ctx.call_id, exc_info=exc_info)

    # ------------------------------------------------------------ pools

    def _start_loop(self) -> None:
        import asyncio

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


def _drive(steps: Generator[_Step, Any, None]) -> None:
    """Run a worker's steps in this thread (a plain handler, the sync hooks)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration:
            return
        try:
            value, error = step.run(*step.args, **step.kwargs), None
        except BaseException as exc:
            value, error = None, exc


async def _drive_async(steps: Generator[_Step, Any, None]) -> None:
    """Await a worker's steps on the container's loop (an ``async def`` handler, async hooks)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration:
            return
        try:
            value, error = await step.run_async(*step.args, **step.kwargs), None
        except BaseException as exc:
            value, error = None, exc


def _exc_info() -> ExcInfo:
    exc_type, exc, tb = sys.exc_info()
    assert exc_type is not None and exc is not None
    return exc_type, exc, tb


def _no_result(worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
    """The default ``on_result``: the outcome is logged and observed, nobody awaits it."""


def dependencies_of(service_cls: type) -> dict[str, DependencyProvider]:
    """The dependency declarations of a service class (unbound), by attribute name.

    A bare ``Config`` value reads as ``ConfigDependency`` (``config = Config()``, as in Nameko).
    """
    found: dict[str, DependencyProvider] = {}
    for attr, value in _class_members(service_cls):
        if isinstance(value, Config):
            found[attr] = ConfigDependency()
        elif isinstance(value, DependencyProvider):
            found[attr] = value
    return found
