"""The transport behaviour suite on MemoryTransport, plus what only a memory broker can show."""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from amqprpc.exceptions import BrokerError, BrokerUnreachable, ConfigError, ConnectionLost
from amqprpc.transport.base import Binding, Exchange, Outgoing, Queue
from amqprpc.transport.memory import MemoryBroker, MemoryTransport, broker_for_url
from amqprpc.transport.memory_broker import topic_matches
from tests.unit.transport.behaviour import *  # noqa: F403  (the suite, collected here)
from tests.unit.transport.behaviour import Confirms, Inbox, ready, to_queue
from tests.waiting import wait_until


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker("test")


@pytest.fixture
def make_transport(broker: MemoryBroker) -> Iterator[Callable[..., MemoryTransport]]:
    made: list[MemoryTransport] = []

    def make(name: str | None = None, *, start: bool = True, **kwargs: object) -> MemoryTransport:
        transport = MemoryTransport("memory://", name=name or f"t{len(made)}", broker=broker,
                                    **kwargs)  # type: ignore[arg-type]
        made.append(transport)
        if start:
            transport.start()
        return transport

    yield make
    for transport in made:
        transport.stop()
    for transport in made:
        assert not any(t.name == f"amqprpc-io-{transport.name}" and t.is_alive()
                       for t in threading.enumerate()), f"{transport.name}: I/O thread left running"


@pytest.fixture
def names() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def lose_connection() -> Callable[[MemoryTransport], None]:
    return lambda transport: transport.simulate_connection_loss()


# ---------------------------------------------------------------- simulated connection loss

def test_connection_loss_fails_unconfirmed_publishes_and_reconnects(broker, make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    lost: list[BaseException] = []
    transport.on_lost(lost.append)
    confirms = Confirms()
    broker.block("low on memory")
    transport.publish(to_queue(queue, b"sent while blocked"), confirms("blocked"))
    broker.drop_connections()
    [(_, error)] = confirms.wait_for(1)
    assert isinstance(error, ConnectionLost)
    wait_until(lambda: transport.generation == 2 and transport.is_connected, "the reconnect")
    assert isinstance(lost[0], ConnectionLost)
    broker.unblock()
    transport.publish(to_queue(queue, b"after"), confirms("after"))
    assert confirms.wait_for(2)[1] == ("after", None)
    assert ready(transport, queue) == 1


def test_connection_loss_keeps_publishes_made_while_disconnected(broker, make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    reconnected = threading.Event()
    transport.on_connect(reconnected.set)
    broker.refuse_connections()
    transport.simulate_connection_loss()
    wait_until(lambda: not transport.is_connected, "the loss")
    confirms = Confirms()
    transport.publish(to_queue(queue, b"queued offline"), confirms("offline"))
    broker.accept_connections()
    assert reconnected.wait(5)
    assert confirms.wait_for(1) == [("offline", None)]
    assert ready(transport, queue) == 1


def test_exclusive_queue_is_redeclared_after_a_reconnect(make_transport, names):
    transport = make_transport()
    queue = names("excl")
    transport.declare(Queue(queue, durable=False, exclusive=True))
    transport.simulate_connection_loss()
    wait_until(lambda: transport.generation == 2 and transport.is_connected, "the reconnect")
    assert transport.queue_info(queue) is not None


# ---------------------------------------------------------------- resource alarm

def test_block_holds_publishes_until_unblock(broker, make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    broker.block("disk alarm")
    assert transport.blocked_reason == "disk alarm"
    confirms = Confirms()
    for i in range(3):
        transport.publish(to_queue(queue, b"%d" % i), confirms(i))
    assert ready(transport, queue) == 0 and confirms.results == []
    broker.unblock()
    assert [key for key, _ in confirms.wait_for(3)] == [0, 1, 2]
    assert transport.blocked_reason is None and ready(transport, queue) == 3


# ---------------------------------------------------------------- connecting

def test_start_fails_fast_when_the_broker_refuses_connections(broker, make_transport):
    broker.refuse_connections()
    with pytest.raises(BrokerUnreachable):
        make_transport()


def test_start_without_wait_connects_once_the_broker_accepts(broker, make_transport):
    broker.refuse_connections()
    transport = make_transport(start=False)
    connected = threading.Event()
    transport.on_connect(connected.set)
    transport.start(wait=False)
    assert not transport.is_connected
    broker.accept_connections()
    assert connected.wait(5) and transport.generation == 1


def test_a_refused_declare_is_not_repeated_on_reconnect(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED"):
        transport.declare(Queue(queue, durable=True))
    with pytest.raises(BrokerError, match="NOT_FOUND"):
        transport.consume(names("missing"), Inbox())
    transport.simulate_connection_loss()
    wait_until(lambda: transport.generation == 2 and transport.is_connected, "a clean reconnect")


# ---------------------------------------------------------------- broker details

def test_quorum_delivery_limit_counts_returns_from_lost_connections(make_transport, names):
    transport = make_transport()
    queue, dlq = names("quorum"), names("dlq")
    transport.declare(Queue(dlq), Queue(queue, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}))
    inbox = Inbox()
    transport.consume(queue, inbox)
    transport.publish(to_queue(queue, b"kills its worker"))
    for attempt in range(1, 4):
        inbox.wait_for(attempt)
        transport.simulate_connection_loss()
    wait_until(lambda: ready(transport, dlq) == 1, "dead-lettered after 3 deliveries")
    assert [d.headers.get("x-delivery-count") for d in inbox.deliveries] == [None, 1, 2]


def test_quorum_queue_must_be_durable(make_transport, names):
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED"):
        make_transport().declare(Queue(names("q"), durable=False, arguments={"x-queue-type": "quorum"}))


def test_max_length_drop_head_dead_letters_the_oldest(make_transport, names):
    transport = make_transport()
    queue, dlq = names("q"), names("dlq")
    transport.declare(Queue(dlq, durable=False), Queue(queue, durable=False, arguments={
        "x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}))
    for body in (b"1", b"2", b"3"):
        transport.publish(to_queue(queue, body))
    wait_until(lambda: ready(transport, dlq) == 1, "the oldest dead-lettered")
    assert transport.get(dlq).headers["x-death"][0]["reason"] == "maxlen"
    assert [transport.get(queue).body, transport.get(queue).body] == [b"2", b"3"]


def test_publish_to_a_missing_exchange_is_refused(make_transport):
    confirms = Confirms()
    make_transport().publish(Outgoing("no-such-exchange", "x", b""), confirms("x"))
    [(_, error)] = confirms.wait_for(1)
    assert isinstance(error, BrokerError) and "NOT_FOUND" in str(error)


def test_direct_reply_to_without_a_reply_consumer_is_refused(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    confirms = Confirms()
    transport.publish(to_queue(queue, b"", reply_to="amq.rabbitmq.reply-to"), confirms("x"))
    [(_, error)] = confirms.wait_for(1)
    assert isinstance(error, BrokerError)


def test_direct_reply_to_publish_is_never_returned(make_transport):
    client, server = make_transport(), make_transport()
    returns: list[str] = []
    server.on_return(lambda message, text: returns.append(text))
    replies = Inbox()
    client.consume("amq.rabbitmq.reply-to", replies, no_ack=True)
    confirms = Confirms()
    server.publish(Outgoing("", "amq.rabbitmq.reply-to.gone", b"", mandatory=True), confirms("gone"))
    assert confirms.wait_for(1) == [("gone", None)] and returns == []


def test_consumers_share_a_queue_round_robin(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    one, two = Inbox(transport, ack=True), Inbox(transport, ack=True)
    transport.consume(queue, one)
    transport.consume(queue, two)
    for i in range(4):
        transport.publish(to_queue(queue, b"%d" % i))
    one.wait_for(2)
    two.wait_for(2)
    assert one.bodies == [b"0", b"2"] and two.bodies == [b"1", b"3"]


def test_auto_delete_exchange_goes_with_its_last_binding(make_transport, names):
    transport = make_transport()
    exchange, queue = names("ex"), names("q")
    transport.declare(Exchange(exchange, "fanout", durable=False, auto_delete=True),
                      Queue(queue, durable=False), Binding(queue, exchange, ""))
    transport.delete_queue(queue)
    transport.declare(Exchange(exchange, "topic", durable=False))  # a new one: no conflict


@pytest.mark.parametrize(("pattern", "key", "matches"), [
    ("a.*", "a.b", True), ("a.*", "a", False), ("a.*", "a.b.c", False),
    ("a.#", "a", True), ("a.#", "a.b.c", True), ("#", "", True), ("#.c", "a.b.c", True),
    ("*.b.#", "a.b", True), ("*.b.#", "b", False), ("a.b", "a.b", True), ("a.b", "a.c", False),
])
def test_topic_matching(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


# ---------------------------------------------------------------- the broker registry

def test_transports_given_the_same_url_share_a_broker_held_weakly():
    name = f"registry-{uuid.uuid4().hex[:8]}"
    one = MemoryTransport(f"memory://{name}", name="one")
    two = MemoryTransport(f"memory://{name}", name="two")
    assert one.broker is two.broker is broker_for_url(f"memory://{name}")
    assert MemoryTransport(f"memory://{name}-other", name="x").broker is not one.broker
    explicit = MemoryBroker()
    assert MemoryTransport(f"memory://{name}", name="e", broker=explicit).broker is explicit
    first_id = id(one.broker)
    del one, two
    gc.collect()
    fresh = broker_for_url(f"memory://{name}")
    assert fresh.name == name and (id(fresh) != first_id or not fresh._queues)


def test_an_unused_named_broker_goes_away():
    import weakref

    broker = broker_for_url(f"memory://gone-{uuid.uuid4().hex[:8]}")
    ref = weakref.ref(broker)
    del broker
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("url", ["amqp://localhost", "memory://a/b", "memory://a;memory://b"])
def test_a_bad_memory_url_is_a_config_error(url):
    with pytest.raises(ConfigError):
        broker_for_url(url)
