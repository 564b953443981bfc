"""Faults from the matrix in shared/notes/reliability.md, on a private broker node.

Every test asserts the same three things: each call ends in exactly one outcome by its
deadline (a result or a clear error, never a hang), no message is lost, and the worker is
still alive and serving afterwards. The machine's broker on 5672 is never touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from amqprpc import (
    BrokerUnreachable,
    CallContext,
    ClusterRpcClient,
    Config,
    ConnectionLost,
    RpcTimeout,
    ServiceContainer,
    ServiceUnavailable,
    UnknownService,
    rpc,
)
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until
from .proxy import FaultProxy
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

HEARTBEAT = 2.0


class Probe:
    """Shared state the test service reports into (per test: set on a subclass)."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()

    def ran(self, request_id: str) -> None:
        with self.lock:
            self.runs[request_id] = self.runs.get(request_id, 0) + 1
        self.started.set()


class FaultService:
    name = "fault"
    probe: Probe
    ctx = CallContext()

    @rpc
    def echo(self, value: Any) -> Any:
        return value

    @rpc
    def hold(self, seconds: float = 30.0) -> str:
        """Count the run, then wait until released (or ``seconds`` pass)."""
        self.probe.ran(self.ctx.request_id)
        self.probe.release.wait(seconds)
        return "held"


@pytest.fixture
def service(unique_name) -> type:
    cls = type("FaultService", (FaultService,), {"name": unique_name("fault"), "probe": Probe()})
    return cls


@pytest.fixture
def start_container(rabbit_node: RabbitNode) -> Iterator[Callable[..., ServiceContainer]]:
    started: list[ServiceContainer] = []

    def start(cls: type, url: str | None = None, wait: bool = True, **settings: Any) -> ServiceContainer:
        config = Config(broker_url=url or rabbit_node.url, heartbeat=HEARTBEAT, **settings)
        container = ServiceContainer(cls, config)
        container.connection.max_backoff = 1.0  # tests wait for recovery: keep retries brisk
        container.start(wait=wait)
        started.append(container)
        return container

    yield start
    for container in started:
        container.kill()


@pytest.fixture
def client_for(rabbit_node: RabbitNode) -> Iterator[Callable[..., ClusterRpcClient]]:
    clients: list[ClusterRpcClient] = []

    def make(url: str | None = None, timeout: float = 10.0) -> ClusterRpcClient:
        config = Config(broker_url=url or rabbit_node.url, heartbeat=HEARTBEAT)
        client = ClusterRpcClient(config=config, timeout=timeout)
        client._connection.max_backoff = 1.0
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()


def one_outcome(future: Future[Any], by: float) -> tuple[str, Any]:
    """The call's single outcome, which must arrive by ``by`` seconds from now."""
    try:
        return "result", future.result(timeout=by)
    except (RpcTimeout, ConnectionLost) as exc:
        assert future.done(), f"the call did not end by its deadline: {exc!r}"
        return "error", exc


def serves_again(client: ClusterRpcClient, name: str, timeout: float = 40.0) -> None:
    """The worker and the client are back: a fresh call succeeds within ``timeout``."""

    def answered() -> bool:
        try:
            return client.call(name, "echo", "ping", _timeout=2) == "ping"
        except (RpcTimeout, ConnectionLost, UnknownService, ServiceUnavailable):
            return False  # the worker has not re-declared (or consumed) its queue yet

    wait_until(answered, f"{name} to serve again", timeout=timeout)


def queue_depth(url: str, queue: str) -> int:
    with broker_admin(url) as channel:
        return channel.queue_declare(queue, passive=True).message_count


# --------------------------------------------------------------------------- broker faults


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_broker_restart_and_crash(how, rabbit_node, service, start_container, client_for):
    """B1/B2: calls in flight end with an error by their deadline; everything reconnects."""
    container = start_container(service)
    client = client_for(timeout=5)
    assert client.call(service.name, "echo", 1) == 1
    in_flight = client.call_async(service.name, "hold", 60)
    wait_until(service.probe.started.is_set, "the call to start", timeout=10)
    if how == "restart":
        rabbit_node.stop()
    else:
        rabbit_node.kill()
    assert one_outcome(in_flight, by=10)[0] == "error"
    rabbit_node.start()
    service.probe.release.set()
    serves_again(client, service.name)
    assert container.connection.generation >= 2
    assert client.call(service.name, "echo", "after") == "after"


def test_broker_frozen(rabbit_node, service, start_container, client_for):
    """B3: a frozen broker is detected by heartbeats; calls end by their deadline."""
    container = start_container(service)
    client = client_for(timeout=3)
    assert client.call(service.name, "echo", 1) == 1
    rabbit_node.freeze()
    try:
        started = time.monotonic()
        assert one_outcome(client.call_async(service.name, "echo", 2), by=10)[0] == "error"
        wait_until(lambda: not container.connection.is_connected,
                   "the worker to notice the frozen broker", timeout=4 * HEARTBEAT + 5)
        assert time.monotonic() - started < 4 * HEARTBEAT + 5
    finally:
        rabbit_node.thaw()
    serves_again(client, service.name)


def test_worker_started_while_broker_down(rabbit_node, service, start_container, client_for):
    """W9: a worker started while the broker is down waits, retries, then serves."""
    rabbit_node.stop()
    with pytest.raises(BrokerUnreachable):
        ServiceContainer(service, Config(broker_url=rabbit_node.url)).start(wait=True)
    container = start_container(service, wait=False)
    assert not container.connection.is_connected
    rabbit_node.start()
    client = client_for()
    serves_again(client, service.name)


# --------------------------------------------------------------------------- network faults


def test_worker_connection_reset_mid_call(rabbit_node, service, start_container, client_for):
    """N1 + W2-like: the worker's connection resets with a call in flight.

    The request was unacked, so the broker redelivers it and it runs again; the caller
    still gets exactly one result (the duplicate reply is dropped).
    """
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        container = start_container(service, url=proxy.url_for(rabbit_node.url))
        client = client_for(timeout=20)
        assert client.call(service.name, "echo", 1) == 1
        future = client.call_async(service.name, "hold", 20)
        wait_until(service.probe.started.is_set, "the call to start", timeout=10)
        service.probe.started.clear()
        proxy.reset()
        wait_until(service.probe.started.is_set, "the redelivered call to start again", timeout=20)
        service.probe.release.set()
        kind, result = one_outcome(future, by=20)
        assert (kind, result) == ("result", "held")
        assert sum(service.probe.runs.values()) == 2 and len(service.probe.runs) == 1
        assert container.connection.generation >= 2
        assert client.call(service.name, "echo", "next") == "next"
        assert client._caller.pending_count() == 0


def test_worker_blackholed(rabbit_node, service, start_container, client_for):
    """N2: the worker's link goes silent; heartbeats notice, it reconnects and serves."""
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        container = start_container(service, url=proxy.url_for(rabbit_node.url))
        client = client_for(timeout=3)
        assert client.call(service.name, "echo", 1) == 1
        proxy.blackhole()
        assert one_outcome(client.call_async(service.name, "echo", 2), by=10)[0] == "error"
        wait_until(lambda: not container.connection.is_connected,
                   "the worker to notice the silent link", timeout=4 * HEARTBEAT + 12)
        proxy.clear()
        serves_again(client, service.name)
        assert queue_depth(rabbit_node.url, f"rpc-{service.name}") == 0


def test_caller_blackholed(rabbit_node, service, start_container, client_for):
    """N3: the caller's link goes silent: its calls end by their deadline, then it recovers."""
    start_container(service)
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        client = client_for(url=proxy.url_for(rabbit_node.url), timeout=2)
        assert client.call(service.name, "echo", 1) == 1
        proxy.blackhole()
        started = time.monotonic()
        futures = [client.call_async(service.name, "echo", i) for i in range(5)]
        outcomes = [one_outcome(f, by=10) for f in futures]
        assert all(kind == "error" for kind, _ in outcomes)
        assert time.monotonic() - started < 10
        proxy.clear()
        serves_again(client, service.name)


def test_calls_made_during_an_outage_end_by_their_deadline(rabbit_node, service, start_container,
                                                            client_for):
    """Calls made while the client cannot reach the broker end by their deadline, not later."""
    start_container(service)
    proxy = FaultProxy("127.0.0.1", rabbit_node.port).start()
    try:
        client = client_for(url=proxy.url_for(rabbit_node.url), timeout=1)
        assert client.call(service.name, "echo", 1) == 1
    finally:
        proxy.stop()  # connections reset, nothing listens: every reconnect is refused
    wait_until(lambda: not client.is_connected, "the client to notice the outage", timeout=10)
    started = time.monotonic()
    futures = [client.call_async(service.name, "echo", i) for i in range(3)]
    for future in futures:
        kind, outcome = one_outcome(future, by=5)
        assert kind == "error" and isinstance(outcome, RpcTimeout | ConnectionLost)
    assert time.monotonic() - started < 3
    assert client._caller.pending_count() == 0


def test_handler_blocking_for_three_heartbeats(rabbit_node, service, start_container, client_for):
    """W6: heartbeats flow while a handler blocks for 3x the heartbeat: no reconnect."""
    container = start_container(service)
    client = client_for(timeout=30)
    future = client.call_async(service.name, "hold", 3 * HEARTBEAT + 1)
    assert one_outcome(future, by=30) == ("result", "held")
    assert container.connection.generation == 1
    assert client._connection.generation == 1


def test_caller_gone_before_the_reply(rabbit_node, service, start_container, client_for):
    """R5: the caller disconnects mid-call; the worker replies into the void and serves on."""
    container = start_container(service)
    leaving = client_for(timeout=30)
    future = leaving.call_async(service.name, "hold", 30)
    wait_until(service.probe.started.is_set, "the call to start", timeout=10)
    leaving.stop()
    kind, outcome = one_outcome(future, by=5)
    assert kind == "error" and isinstance(outcome, ConnectionLost)
    service.probe.release.set()
    assert container.wait_idle(10)
    client = client_for()
    assert client.call(service.name, "echo", "still here") == "still here"
    wait_until(lambda: queue_depth(rabbit_node.url, f"rpc-{service.name}") == 0,
               "the request to be acked", timeout=10)


def test_killed_after_reply_before_ack(rabbit_node, service, start_container, client_for):
    """W2: a worker dies after publishing its reply but before its ack reached the broker.

    Simulated by suppressing acks, then killing the container: the request is redelivered
    to a second worker and runs again, yet the caller sees one result.
    """
    first = start_container(service)
    first.connection.ack = lambda delivery: None  # dies before any ack goes out
    client = client_for(timeout=20)
    service.probe.release.set()
    assert client.call(service.name, "hold", 1) == "held"
    assert sum(service.probe.runs.values()) == 1
    first.kill()
    start_container(service)
    wait_until(lambda: sum(service.probe.runs.values()) == 2,
               "the redelivered request to run again", timeout=20)
    assert client.call(service.name, "echo", "once") == "once"
    assert client._caller.pending_count() == 0
    wait_until(lambda: queue_depth(rabbit_node.url, f"rpc-{service.name}") == 0,
               "the redelivered request to be acked", timeout=10)


def test_events_dispatched_during_an_outage_go_out_after_it(rabbit_node, unique_name):
    """A dispatch while the broker is down waits for the next connection: confirmed, not lost."""
    from amqprpc import EventPublisher

    source = unique_name("src")
    queue = f"{source}-probe"
    with broker_admin(rabbit_node.url) as channel:
        channel.exchange_declare(f"{source}.events", "topic", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.queue_bind(queue, f"{source}.events", "happened")
    publisher = EventPublisher(rabbit_node.url)
    publisher.connection.max_backoff = 1.0
    publisher.start()
    try:
        rabbit_node.stop()
        wait_until(lambda: not publisher.connection.is_connected, "the publisher to notice", timeout=10)
        future = publisher.dispatch(source, "happened", {"n": 1})
        rabbit_node.start()
        future.result(timeout=40)
        assert queue_depth(rabbit_node.url, queue) == 1
        publisher.dispatch(source, "happened", {"n": 2}).result(timeout=10)  # still serving
    finally:
        publisher.stop()
        with broker_admin(rabbit_node.url) as channel:
            channel.queue_delete(queue)
            channel.exchange_delete(f"{source}.events")
