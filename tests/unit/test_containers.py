"""ServiceContainer on the in-memory transport: one worker lifecycle, sync and async.

The workers here are spawned by a test entrypoint that consumes nothing, so each test is
about the container alone: hooks in order, errors where they belong, ``on_result`` before
teardown, observers last, in-flight counting, and the extensions the container is given.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amqprpc import CallContext, Config, ConfigError, DependencyProvider, Entrypoint, Extension
from amqprpc.containers import ServiceContainer, dependencies_of
from amqprpc.dependencies.config import ConfigDependency
from amqprpc.discovery import ServiceAnnouncer
from amqprpc.extensions import ExcInfo, WorkerContext
from amqprpc.runner import service_container
from amqprpc.transport.memory import MemoryTransport

WAIT = 10.0


class Manual(Entrypoint):
    """An entrypoint that only runs when a test spawns it: no queue, no consumer."""


manual = Manual.decorator


class Recorder(DependencyProvider):
    """Records every hook it sees in ``log``; fails the hooks named in ``fail``."""

    def __init__(self, log: list[str], fail: tuple[str, ...] = ()) -> None:
        self.log = log
        self.fail = fail

    def _hook(self, name: str) -> None:
        self.log.append(name)
        if name in self.fail:
            raise RuntimeError(f"{name} failed")

    def get_dependency(self, worker_ctx: WorkerContext) -> list[str]:
        return self.log

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        self._hook("setup")

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        self._hook("result")

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        self._hook("teardown")

    async def worker_setup_async(self, worker_ctx: WorkerContext) -> None:
        self._hook("setup_async")

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        self._hook("result_async")

    async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
        self._hook("teardown_async")


class Outcome:
    """``on_result`` and a container observer in one: what happened, and in which order."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.result: Any = None
        self.exc_info: ExcInfo = None
        self.ctx: WorkerContext | None = None
        self.done = threading.Event()

    def on_result(self, ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        self.log.append("on_result")
        self.ctx, self.result, self.exc_info = ctx, result, exc_info

    def observe(self, ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        if ctx is self.ctx:
            self.log.append("observed")
            self.done.set()

    def wait(self) -> Outcome:
        assert self.done.wait(WAIT), f"the worker did not finish; hooks so far: {self.log}"
        return self


def service(log: list[str], fail: tuple[str, ...] = ()) -> type:
    class Service:
        name = f"svc-{uuid.uuid4().hex[:8]}"
        recorder = Recorder(log, fail)
        config = Config()
        ctx = CallContext()

        @manual
        def add(self, a: int, b: int = 0) -> int:
            self.recorder.append(f"handler in {threading.current_thread().name}")
            return a + b

        @manual
        async def add_async(self, a: int, b: int = 0) -> int:
            self.recorder.append(f"handler in {threading.current_thread().name}")
            return a + b

        @manual
        def boom(self) -> None:
            self.recorder.append("handler")
            raise ValueError("boom")

        @manual
        async def boom_async(self) -> None:
            self.recorder.append("handler")
            raise ValueError("boom")

        @manual
        def context(self) -> tuple[Any, ...]:
            return (self.ctx.data, self.ctx.call_id_stack, self.ctx.request_id, self.ctx.redelivered,
                    self.config)

    return Service


@pytest.fixture
def make() -> Iterator[Callable[..., ServiceContainer]]:
    """A started container on its own in-memory broker; killed after the test."""
    containers: list[ServiceContainer] = []

    def build(cls: type, config: Config | None = None, **kwargs: Any) -> ServiceContainer:
        transport = MemoryTransport(f"memory://{uuid.uuid4().hex}", name=cls.name)
        container = ServiceContainer(cls, config or Config(concurrency=2), connection=transport,
                                     **kwargs)
        containers.append(container)
        container.start()
        return container

    yield build
    for container in containers:
        container.kill()


def spawn(container: ServiceContainer, method: str, *args: Any, log: list[str],
          context: dict[str, Any] | None = None, **kwargs: Any) -> Outcome:
    """Spawn a worker the way entrypoints do: from a pool thread (sync) or as is (async)."""
    outcome = Outcome(log)
    container.worker_observers.append(outcome.observe)
    entrypoint = next(ep for ep in container.entrypoints if ep.method_name == method)

    def run() -> None:
        container.spawn_worker(entrypoint, args, kwargs, context, outcome.on_result,
                               request_id="req-1", redelivered=True)

    if entrypoint.is_async:
        run()
    else:
        container.submit(run)
    return outcome.wait()


def test_a_sync_worker_runs_on_the_pool_with_every_hook_in_order(make):
    log: list[str] = []
    container = make(service(log))
    outcome = spawn(container, "add", 2, log=log, b=3)
    assert outcome.result == 5 and outcome.exc_info is None
    handler = next(entry for entry in log if entry.startswith("handler"))
    assert f"amqprpc-{container.service_name}" in handler  # a pool thread
    assert log == ["setup", handler, "result", "on_result", "teardown", "observed"]


def test_an_async_worker_takes_the_same_steps_on_the_loop_with_the_async_hooks(make):
    log: list[str] = []
    container = make(service(log))
    assert container.loop is not None
    outcome = spawn(container, "add_async", 2, log=log, b=3)
    assert outcome.result == 5 and outcome.exc_info is None
    handler = next(entry for entry in log if entry.startswith("handler"))
    assert f"amqprpc-aio-{container.service_name}" in handler
    assert log == ["setup_async", handler, "result_async", "on_result", "teardown_async", "observed"]


@pytest.mark.parametrize("method", ["boom", "boom_async"])
def test_a_handler_error_reaches_on_result_and_teardown_still_runs(make, method):
    log: list[str] = []
    outcome = spawn(make(service(log)), method, log=log)
    assert outcome.result is None
    assert outcome.exc_info is not None and isinstance(outcome.exc_info[1], ValueError)
    assert outcome.exc_info[2] is not None  # with its traceback, for the log and the reply
    assert log[-3:] == ["on_result", log[-2], "observed"] and log[-2].startswith("teardown")


@pytest.mark.parametrize(("method", "hook"), [("add", "setup"), ("add_async", "setup_async")])
def test_a_failing_setup_skips_the_handler(make, method, hook):
    log: list[str] = []
    outcome = spawn(make(service(log, fail=(hook,))), method, 1, log=log)
    assert isinstance(outcome.exc_info[1], RuntimeError) and f"{hook} failed" in str(outcome.exc_info[1])
    assert not any(entry.startswith("handler") for entry in log)
    assert log[-2:] == [hook.replace("setup", "teardown"), "observed"]


@pytest.mark.parametrize(("method", "hook"), [("add", "result"), ("add_async", "result_async")])
def test_a_failing_worker_result_turns_a_success_into_its_error(make, method, hook):
    log: list[str] = []
    outcome = spawn(make(service(log, fail=(hook,))), method, 1, log=log)
    assert outcome.result is None and f"{hook} failed" in str(outcome.exc_info[1])


@pytest.mark.parametrize(("method", "hook"), [("add", "teardown"), ("add_async", "teardown_async")])
def test_a_failing_teardown_is_logged_and_the_worker_still_finishes(make, method, hook, caplog):
    log: list[str] = []
    container = make(service(log, fail=(hook,)))
    outcome = spawn(container, method, 1, log=log)
    assert outcome.result == 1 and log[-1] == "observed"
    assert "worker_teardown of recorder failed" in caplog.text
    assert container.wait_idle(WAIT)


def test_the_worker_context_carries_the_call_and_the_container_config(make):
    log: list[str] = []
    config = Config(concurrency=3, extra={"LIMIT": 7})
    container = make(service(log), config)
    outcome = spawn(container, "context", log=log, context={"user_id": "u1", "call_id_stack": ["a.b.1"]})
    data, stack, request_id, redelivered, injected = outcome.result
    assert data["user_id"] == "u1" and stack[0] == "a.b.1" and stack[-1] == outcome.ctx.call_id
    assert outcome.ctx.call_id.startswith(f"{container.service_name}.context.")
    assert (request_id, redelivered) == ("req-1", True)
    assert injected is config and injected["LIMIT"] == 7  # the container's, not the class attribute


def test_an_async_worker_counts_as_in_flight_until_it_is_torn_down(make):
    log: list[str] = []
    release = threading.Event()

    class Slow(Recorder):
        async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
            assert release.wait(WAIT)

    cls = service(log)
    cls.recorder = Slow(log)
    container = make(cls)
    entrypoint = next(ep for ep in container.entrypoints if ep.method_name == "add_async")
    container.spawn_worker(entrypoint, (1,), {})
    assert not container.wait_idle(0.05) and container.in_flight == 1
    release.set()
    assert container.wait_idle(WAIT) and container.in_flight == 0


def test_an_on_result_that_raises_in_an_async_worker_is_logged_not_lost(make, caplog):
    log: list[str] = []
    container = make(service(log))
    entrypoint = next(ep for ep in container.entrypoints if ep.method_name == "add_async")

    def broken(ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        raise KeyError("reply failed")

    container.spawn_worker(entrypoint, (1,), {}, None, broken)
    assert container.wait_idle(WAIT)
    assert "unhandled error in a worker" in caplog.text and "teardown_async" in log


def test_a_bare_config_on_the_class_is_read_as_its_provider():
    declared = dependencies_of(service([]))
    assert isinstance(declared["config"], ConfigDependency)
    assert isinstance(declared["ctx"], CallContext) and isinstance(declared["recorder"], Recorder)
    assert not isinstance(Config(), DependencyProvider)  # the value itself provides nothing


def test_extensions_given_to_the_container_start_after_its_entrypoints(make):
    started: list[str] = []

    class Watcher(Manual):
        def start(self) -> None:
            started.append("entrypoint")

    class Extra(Extension):
        def start(self) -> None:
            started.append("extension")

    class Watched:
        name = f"watched-{uuid.uuid4().hex[:8]}"

        @Watcher.decorator
        def tick(self) -> None: ...

    container = make(Watched, extensions=[Extra])
    assert started == ["entrypoint", "extension"]
    assert container.shared_extension(Extra, Extra).container is container


def test_only_the_runner_adds_the_announcer():
    cls = service([])
    bare = ServiceContainer(cls, Config())
    served = service_container(cls, Config())
    assert bare._extra == [] and served._extra == [ServiceAnnouncer]


@pytest.mark.parametrize(("attrs", "problem"), [
    ({"name": "x"}, "has no entrypoints"),
    ({"name": "bad name", "m": manual(lambda self: None)}, "may hold only letters"),
    ({"name": "x", "_m": manual(lambda self: None)}, "private methods cannot be entrypoints"),
])
def test_a_class_that_cannot_be_a_service_is_refused_at_once(attrs, problem):
    with pytest.raises(ConfigError, match=problem):
        ServiceContainer(type("Bad", (), attrs), Config())
