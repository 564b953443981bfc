"""BROADCAST handlers with a ``broadcast_identifier`` on the real broker: one durable queue
per identifier, kept while its instance is down, shared by instances that share the id."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import amqp
import pytest

from amqprpc import BROADCAST, CallContext, event_handler
from amqprpc.testing.pytest import broker_admin
from tests.integration.test_events import Recorder, dispatch_all, queue_depth
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def cache_service(name: str, source: str, identifier: str | Callable[[], str], seen: Recorder,
                  before: Callable[[Any], None] = lambda payload: None, **options: Any) -> type:
    """The same service (``name``) as run by an instance known as ``identifier``."""

    class Cache:
        ctx = CallContext()

        @event_handler(source, "invalidate", handler_type=BROADCAST,
                       broadcast_identifier=identifier, **options)
        def drop(self, key: Any) -> None:
            before(key)
            seen.add((self.ctx.container.entrypoints[0].broadcast_id, id(self.ctx.container), key))

    Cache.name = name  # type: ignore[attr-defined]
    return Cache


def test_each_identifier_gets_every_event(container_factory, unique_name, source, publisher, amqp_uri):
    seen = Recorder()
    name = unique_name("cache")
    one = container_factory(cache_service(name, source, "node-1", seen))
    two = container_factory(cache_service(name, source, lambda: "node-2", seen))
    assert [c.entrypoints[0].queue_name for c in (one, two)] == [
        f"evt-{source}-invalidate--{name}.drop-node-1", f"evt-{source}-invalidate--{name}.drop-node-2"]
    dispatch_all(publisher, source, "invalidate", ["a", "b", "c"])
    records = seen.wait_for(6)
    assert sorted((ident, key) for ident, _, key in records) == [
        (ident, key) for ident in ("node-1", "node-2") for key in "abc"]


def test_a_restarted_instance_gets_what_was_dispatched_while_it_was_down(
        container_factory, unique_name, source, publisher, amqp_uri):
    seen = Recorder()
    name = unique_name("cache")
    Node1 = cache_service(name, source, "node-1", seen)
    first = container_factory(Node1)
    queue = first.entrypoints[0].queue_name
    dispatch_all(publisher, source, "invalidate", ["before"])
    seen.wait_for(1)
    first.stop(grace=5)

    dispatch_all(publisher, source, "invalidate", ["down-1", "down-2", "down-3"])
    assert queue_depth(amqp_uri, queue) == 3  # durable, not auto-delete: kept for node-1
    assert len(seen.items) == 1

    again = container_factory(Node1)
    assert again.entrypoints[0].queue_name == queue
    records = seen.wait_for(4)
    assert sorted(key for _, _, key in records) == ["before", "down-1", "down-2", "down-3"]
    assert {instance for _, instance, key in records if key != "before"} == {id(again)}
    wait_until(lambda: queue_depth(amqp_uri, queue) == 0, "node-1's queue drained")


def test_instances_sharing_an_identifier_handle_each_event_once(
        container_factory, unique_name, source, publisher, amqp_uri):
    """Two containers as ``node-1`` compete for its queue; ``node-2`` still gets everything.

    With concurrency 1 each holds one event at a time, and the first two events wait for
    each other: only the two ``node-1`` instances sharing the work get past that barrier.
    """
    seen = Recorder()
    barrier = threading.Barrier(2)
    node1_runs = iter(range(1_000_000))
    lock = threading.Lock()

    def first_two_of_node1_meet(tagged_key: str) -> None:
        if not tagged_key.startswith("node-1:"):
            return
        with lock:
            first_two = next(node1_runs) < 2
        if first_two:
            barrier.wait(timeout=10)

    name = unique_name("cache")

    def tagged(identifier: str) -> type:
        return cache_service(name, source, identifier, seen,
                             before=lambda key: first_two_of_node1_meet(f"{identifier}:{key}"))

    a = container_factory(tagged("node-1"), concurrency=1)
    b = container_factory(tagged("node-1"), concurrency=1)
    other = container_factory(tagged("node-2"))
    shared = a.entrypoints[0].queue_name
    assert b.entrypoints[0].queue_name == shared
    dispatch_all(publisher, source, "invalidate", list(range(20)))
    records = seen.wait_for(40)
    node1 = [(instance, key) for ident, instance, key in records if ident == "node-1"]
    node2 = [key for ident, _, key in records if ident == "node-2"]
    assert sorted(key for _, key in node1) == list(range(20))  # each once, none twice
    assert {instance for instance, _ in node1} == {id(a), id(b)}
    assert sorted(node2) == list(range(20))
    assert all(instance == id(other) for ident, instance, _ in records if ident == "node-2")
    wait_until(lambda: queue_depth(amqp_uri, shared) == 0, "the shared queue drained")
    assert len(seen.items) == 40


def test_retries_and_dead_letters_stay_with_the_identifier(
        container_factory, unique_name, source, publisher, amqp_uri):
    runs = Recorder()

    class Broken:
        name = unique_name("broken")

        @event_handler(source, "invalidate", handler_type=BROADCAST, broadcast_identifier="node-1",
                       max_attempts=3, retry_delay=0.01)
        def drop(self, key: Any) -> None:
            runs.add(key)
            raise ValueError(f"cannot drop {key}")

    container = container_factory(Broken)
    handler = container.entrypoints[0]
    assert handler.dead_letter_queue_name == f"{handler.queue_name}.dlq"
    dispatch_all(publisher, source, "invalidate", ["k"])
    wait_until(lambda: queue_depth(amqp_uri, handler.dead_letter_queue_name) == 1, "the dead letter")
    assert runs.items == ["k", "k", "k"]  # retried through <queue>.retry.<ms>, back to this queue
    assert queue_depth(amqp_uri, handler.queue_name) == 0


def test_queues_declared_as_nameko_does_are_accepted(container_factory, unique_name, source, amqp_uri):
    """Nameko 2.14 with an overridden ``broadcast_identifier``: durable, not exclusive, not
    auto-delete with reliable delivery (its default); exclusive and auto-delete without.

    Declaring ours over Nameko's reliable queue (and back) must not fail with
    PRECONDITION_FAILED; the unreliable one is exclusive to its connection, as Nameko's.
    """
    from kombu import Connection, Exchange, Queue

    seen = Recorder()
    name = unique_name("nk")
    exchange = Exchange(f"{source}.events", type="topic", durable=True, delivery_mode=2)
    reliable = Queue(f"evt-{source}-invalidate--{name}.drop-web-1", exchange=exchange,
                     routing_key="invalidate", durable=True, auto_delete=False, exclusive=False)

    def declare_as_nameko() -> None:
        with Connection(amqp_uri) as connection:
            reliable(connection.channel()).declare()

    declare_as_nameko()
    container = container_factory(cache_service(name, source, "web-1", seen))
    assert container.entrypoints[0].queue_name == reliable.name
    declare_as_nameko()  # and the other way round

    loose = container_factory(cache_service(unique_name("nk"), source, "web-2", seen,
                                            reliable_delivery=False))
    loose_queue = loose.entrypoints[0].queue_name
    with broker_admin(amqp_uri) as channel:
        with pytest.raises(amqp.exceptions.ResourceLocked):  # exclusive to its instance
            channel.queue_declare(loose_queue, passive=True)
    loose.stop(grace=5)
    with broker_admin(amqp_uri) as channel:
        with pytest.raises(amqp.exceptions.NotFound):  # gone with it
            channel.queue_declare(loose_queue, passive=True)


def test_quorum_queue_type_applies_as_to_a_pool_queue(container_factory, unique_name, source,
                                                      publisher, amqp_uri):
    seen = Recorder()
    container = container_factory(cache_service(unique_name("cache"), source, "node-1", seen),
                                  queue_type="quorum")
    queue = container.entrypoints[0].queue_name
    with broker_admin(amqp_uri) as channel:  # a classic declaration of a quorum queue is refused
        with pytest.raises(amqp.exceptions.PreconditionFailed):
            channel.queue_declare(queue, durable=True, auto_delete=False)
    dispatch_all(publisher, source, "invalidate", ["q"])
    assert [key for _, _, key in seen.wait_for(1)] == ["q"]
