"""Topology faults from the matrix (B6, R3, B8's locked exclusive queue) on the session's private node.

B6: an operator (or a policy, or a broker bug) deletes a service's queue under a live
worker. R3: an event nobody subscribes to. Neither may go unnoticed: the worker re-declares
and serves on, with a warning; the unroutable event is logged and counted.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from amqprpc import (
    ClusterRpcClient,
    Config,
    EventDispatcher,
    EventPublisher,
    RpcTimeout,
    ServiceContainer,
    ServiceUnavailable,
    rpc,
)
from amqprpc.cancellation.worker import CancelListener
from amqprpc.testing.pytest import broker_admin
from amqprpc.topology import CANCEL_QUEUE_MAX_LENGTH

from ..waiting import wait_until
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


class Topology:
    name = "topology"
    dispatch = EventDispatcher()

    @rpc
    def echo(self, value: Any) -> Any:
        return value

    @rpc
    def announce(self, event_type: str) -> str:
        self.dispatch(event_type, {"n": 1})
        return event_type


@pytest.fixture
def service(unique_name) -> type:
    return type("Topology", (Topology,), {"name": unique_name("topology")})


@pytest.fixture
def container(rabbit_node: RabbitNode, service: type):
    container = ServiceContainer(service, Config(broker_url=rabbit_node.url, heartbeat=2.0))
    container.connection.max_backoff = 1.0
    container.start()
    yield container
    container.kill()
    with broker_admin(rabbit_node.url) as channel:
        channel.queue_delete(f"rpc-{service.name}")


@pytest.fixture
def client(rabbit_node: RabbitNode):
    with ClusterRpcClient(config=Config(broker_url=rabbit_node.url, heartbeat=2.0), timeout=5) as client:
        yield client


def test_B6_queue_deleted_under_a_live_worker_is_declared_again(rabbit_node, service, container,
                                                                client, caplog):
    """The broker cancels the consumer (basic.cancel); the worker re-declares and serves on.

    Exiting would turn an operator's mistake into an outage of every worker at once; a
    worker that idled silently would be worse. So: a warning naming the queue, then the
    queue, its binding and the consumer are back, and calls flow again.
    """
    queue = f"rpc-{service.name}"
    assert client.call(service.name, "echo", 1) == 1
    caplog.set_level(logging.WARNING)
    with broker_admin(rabbit_node.url) as channel:
        channel.queue_delete(queue)

    def consumed_again() -> bool:
        with broker_admin(rabbit_node.url) as channel:
            try:
                return channel.queue_declare(queue, passive=True).consumer_count == 1
            except Exception:  # NOT_FOUND closes the admin channel: not back yet
                return False

    wait_until(consumed_again, "the worker to declare and consume its queue again", timeout=20)
    assert client.call(service.name, "echo", 2) == 2
    assert any(queue in record.getMessage() and record.levelno >= logging.WARNING
               for record in caplog.records), "the cancel must be logged with the queue's name"


def test_R3_unroutable_event_is_logged_and_counted(rabbit_node, service, container, client, caplog,
                                                   unique_name):
    """An event with no bound queue is fire-and-forget (the call succeeds), yet visible."""
    caplog.set_level(logging.WARNING)
    dispatcher = container.dependencies["dispatch"]
    assert client.call(service.name, "announce", "nobody_listens") == "nobody_listens"
    assert client.call(service.name, "announce", "nobody_listens") == "nobody_listens"
    key = (f"{service.name}.events", "nobody_listens")
    wait_until(lambda: dispatcher.unroutable.get(key) == 2, "both returns to be counted", timeout=10)
    warnings = [r for r in caplog.records if "nobody_listens" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1, "logged once per exchange and event type, then only counted"

    source = unique_name("src")
    with EventPublisher(rabbit_node.url) as publisher:
        publisher.dispatch(source, "lonely", {}).result(10)  # still confirmed: not an error
        wait_until(lambda: publisher.unroutable.get((f"{source}.events", "lonely")) == 1,
                   "the publisher to count the return", timeout=10)
    with broker_admin(rabbit_node.url) as channel:
        channel.exchange_delete(f"{source}.events")


def test_B8_reconnect_takes_a_fresh_name_for_an_exclusive_queue_the_broker_still_holds(
        rabbit_node, fault_proxy, service, client, caplog):
    """The broker may hold our last connection's exclusive queue after we lost it (B8: on a
    node cut off by a partition, for as long as the partition lasts; a heartbeat's time after
    any link failure). Replaying the topology got RESOURCE_LOCKED on every reconnect, so the
    worker served nothing; now the queue is taken under a fresh name and the worker serves.

    Here another connection holds the worker's per-process cancel queue while the worker is
    kept from reconnecting: the same refusal, made deterministic.
    """
    container = ServiceContainer(service, Config(broker_url=fault_proxy.url_for(rabbit_node.url),
                                                 heartbeat=2.0))
    container.connection.max_backoff = 0.5
    container.start()
    try:
        assert client.call(service.name, "echo", 1) == 1
        cancels = container.shared_extension(CancelListener, CancelListener)
        locked = cancels.queue_name
        caplog.set_level(logging.WARNING)
        fault_proxy.refuse()
        fault_proxy.reset()  # the broker sees the RST: our old connection and its queue go

        def gone() -> bool:
            with broker_admin(rabbit_node.url) as channel:
                try:
                    channel.queue_declare(locked, passive=True)
                except Exception:  # NOT_FOUND: the old connection's queue is gone
                    return True
                return False

        wait_until(gone, "the broker to drop the old connection's cancel queue", timeout=20)
        with broker_admin(rabbit_node.url) as holder:  # someone else holds the name meanwhile
            holder.queue_declare(locked, exclusive=True, auto_delete=True, durable=False,
                                 arguments={"x-max-length": CANCEL_QUEUE_MAX_LENGTH,
                                            "x-overflow": "drop-head"})
            fault_proxy.refuse(False)
            assert call_until_served(client, service.name) == "served"
        assert any(locked in r.getMessage() and "instead" in r.getMessage() for r in caplog.records)
        # Cancellation still reaches this worker: the fresh queue is bound and consumed (before,
        # the refused queue, its binding and its consumer were dropped, one reconnect each).
        fresh = f"{locked}.re{container.connection.generation - 1}"
        listed = rabbit_node.ctl("list_queues", "-q", "--no-table-headers", "name", "consumers")
        assert f"{fresh}\t1" in listed.splitlines(), listed
    finally:
        container.kill()
        with broker_admin(rabbit_node.url) as channel:
            channel.queue_delete(f"rpc-{service.name}")


def call_until_served(client: ClusterRpcClient, service: str) -> Any:
    """Call ``echo`` until one is answered (the worker is reconnecting meanwhile)."""
    answers: list[Any] = []

    def served() -> bool:
        try:
            answers.append(client.call(service, "echo", "served", _timeout=2))
        except (RpcTimeout, ServiceUnavailable):
            return False
        return True

    wait_until(served, "the reconnected worker to answer", timeout=30)
    return answers[-1]
