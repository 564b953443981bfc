"""The transport contract (amqprpc/transport/base.py) as tests, written once for every transport.

Each test takes two fixtures the running module provides:

* ``make_transport(name=None, *, start=True, **kwargs)``: a new transport on this module's
  broker (stopped at teardown); ``start=False`` to declare or consume before it connects;
* ``names(prefix)``: a unique queue or exchange name (removed from the broker afterwards);
* ``lose_connection(transport)``: break the transport's connection as a network failure
  would (on RabbitMQ: our end of the socket is shut down; tests/faults breaks the network
  itself, with a private node).

``tests/unit/transport/test_memory.py`` runs them on MemoryTransport, and
``tests/integration/test_transport_behaviour.py`` on AmqpTransport against RabbitMQ.
Names say which row of the matrix they cover: routing, prefetch, redelivery,
ttl-dead-letter, max-length reject-publish, mandatory return, confirms, direct reply-to,
admin ops, consumer survives reconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from amqprpc.exceptions import BrokerError, ConnectionLost
from amqprpc.topology import delay_queue_arguments
from amqprpc.transport.base import Binding, Delivery, Exchange, Outgoing, Queue, Transport
from tests.waiting import wait_until

REPLY_TO = "amq.rabbitmq.reply-to"
TIMEOUT = 10.0


class Inbox:
    """A delivery callback that records what arrived, on which thread, and can ack it."""

    def __init__(self, transport: Transport | None = None, *, ack: bool = False) -> None:
        self.transport = transport
        self.ack = ack
        self.deliveries: list[Delivery] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, delivery: Delivery) -> None:
        with self._cond:
            self.deliveries.append(delivery)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()
        if self.ack:
            assert self.transport is not None
            self.transport.ack(delivery)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Delivery]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries after {timeout}s")
            return list(self.deliveries)

    @property
    def bodies(self) -> list[bytes]:
        with self._cond:
            return [d.body for d in self.deliveries]


class Confirms:
    """An ``on_confirm`` factory recording results in the order the confirms ran."""

    def __init__(self) -> None:
        self.results: list[tuple[Any, BaseException | None]] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, key: Any) -> Callable[[BaseException | None], None]:
        def confirmed(error: BaseException | None) -> None:
            with self._cond:
                self.results.append((key, error))
                self.threads.add(threading.current_thread().name)
                self._cond.notify_all()
        return confirmed

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[tuple[Any, BaseException | None]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.results) >= count, timeout):
                raise AssertionError(f"{len(self.results)} of {count} confirms after {timeout}s")
            return list(self.results)


def to_queue(queue: str, body: bytes, **properties: Any) -> Outgoing:
    return Outgoing("", queue, body, dict(properties))


def ready(transport: Transport, queue: str) -> int:
    info = transport.queue_info(queue)
    assert info is not None, f"queue {queue} is gone"
    return info.message_count


# ---------------------------------------------------------------- routing

def test_routing_default_exchange_reaches_the_queue_named_by_the_key(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    inbox = Inbox(transport, ack=True)
    transport.consume(queue, inbox)
    transport.publish(to_queue(queue, b"hello", content_type="text/plain"))
    [delivery] = inbox.wait_for(1)
    assert (delivery.body, delivery.exchange, delivery.routing_key) == (b"hello", "", queue)
    assert delivery.properties["content_type"] == "text/plain"
    assert not delivery.redelivered and delivery.generation == transport.generation


def test_routing_direct_exchange_by_exact_key(make_transport, names):
    transport = make_transport()
    exchange, red, blue = names("ex"), names("red"), names("blue")
    transport.declare(Exchange(exchange, "direct", durable=False), Queue(red, durable=False),
                      Queue(blue, durable=False), Binding(red, exchange, "red"),
                      Binding(blue, exchange, "blue"))
    for key in ("red", "blue", "red", "green"):
        transport.publish(Outgoing(exchange, key, key.encode()))
    wait_until(lambda: ready(transport, red) == 2 and ready(transport, blue) == 1, "direct routing")


def test_routing_topic_star_is_one_word_and_hash_zero_or_more(make_transport, names):
    transport = make_transport()
    exchange, star, hash_ = names("ex"), names("star"), names("hash")
    transport.declare(Exchange(exchange, "topic", durable=False), Queue(star, durable=False),
                      Queue(hash_, durable=False), Binding(star, exchange, "orders.*"),
                      Binding(hash_, exchange, "orders.#"))
    star_inbox, hash_inbox = Inbox(transport, ack=True), Inbox(transport, ack=True)
    transport.consume(star, star_inbox)
    transport.consume(hash_, hash_inbox)
    for key in ("orders", "orders.created", "orders.eu.created", "users.created"):
        transport.publish(Outgoing(exchange, key, key.encode()))
    hash_inbox.wait_for(3)
    star_inbox.wait_for(1)
    transport.publish(to_queue(star, b"marker"))  # after the topic publishes, on one connection
    star_inbox.wait_for(2)
    assert star_inbox.bodies == [b"orders.created", b"marker"]
    assert sorted(hash_inbox.bodies) == [b"orders", b"orders.created", b"orders.eu.created"]


def test_routing_fanout_reaches_every_bound_queue_whatever_the_key(make_transport, names):
    transport = make_transport()
    exchange, one, two = names("ex"), names("one"), names("two")
    transport.declare(Exchange(exchange, "fanout", durable=False), Queue(one, durable=False),
                      Queue(two, durable=False), Binding(one, exchange, ""), Binding(two, exchange, "x"))
    transport.publish(Outgoing(exchange, "anything", b"all"))
    wait_until(lambda: ready(transport, one) == 1 and ready(transport, two) == 1, "fanout")


def test_declare_is_idempotent_and_a_redeclare_with_other_arguments_fails(make_transport, names):
    transport = make_transport()
    queue, exchange = names("q"), names("ex")
    transport.declare(Queue(queue, durable=False, arguments={"x-message-ttl": 1000}),
                      Exchange(exchange, "topic", durable=False))
    transport.declare(Queue(queue, durable=False, arguments={"x-message-ttl": 1000}),
                      Exchange(exchange, "topic", durable=False))
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED"):
        make_transport().declare(Queue(queue, durable=False, arguments={"x-message-ttl": 2000}))
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED"):
        make_transport().declare(Exchange(exchange, "direct", durable=False))
    assert transport.queue_info(queue) is not None  # the first declarer is unharmed


def test_messages_are_copies_a_publisher_change_after_publish_is_not_seen(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    headers = {"tags": ["a"]}
    message = to_queue(queue, b"body", application_headers=headers)
    confirms = Confirms()
    transport.publish(message, confirms("m"))
    confirms.wait_for(1)
    headers["tags"].append("changed")
    inbox = Inbox(transport, ack=True)
    transport.consume(queue, inbox)
    [delivery] = inbox.wait_for(1)
    assert delivery.headers["tags"] == ["a"]


# ---------------------------------------------------------------- threads

def test_callbacks_run_on_the_io_thread(make_transport, names):
    transport = make_transport(name=names("threads"))
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    inbox, confirms = Inbox(transport, ack=True), Confirms()
    transport.consume(queue, inbox)
    ran: list[str] = []
    done = threading.Event()
    transport.call_soon(lambda: ran.append(threading.current_thread().name))
    transport.call_later(0.05, lambda: (ran.append(threading.current_thread().name), done.set()))
    transport.publish(to_queue(queue, b"x"), confirms("x"))
    inbox.wait_for(1)
    confirms.wait_for(1)
    assert done.wait(TIMEOUT)
    io_thread = f"amqprpc-io-{transport.name}"
    assert inbox.threads == confirms.threads == set(ran) == {io_thread}


def test_call_soon_on_the_io_thread_runs_at_once_and_call_later_waits(make_transport):
    transport = make_transport()
    order: list[str] = []
    done = threading.Event()

    def on_io_thread() -> None:
        transport.call_later(0.1, lambda: (order.append("later"), done.set()))
        transport.call_soon(lambda: order.append("soon"))
        order.append("after call_soon")

    transport.call_soon(on_io_thread)
    assert done.wait(TIMEOUT)
    assert order == ["soon", "after call_soon", "later"]


# ---------------------------------------------------------------- prefetch

def test_prefetch_bounds_unacked_deliveries_of_one_consumer(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    for i in range(5):
        transport.publish(to_queue(queue, b"%d" % i))
    wait_until(lambda: ready(transport, queue) == 5, "5 ready")
    inbox = Inbox()
    transport.consume(queue, inbox, prefetch=2)
    inbox.wait_for(2)
    wait_until(lambda: ready(transport, queue) == 3, "3 still ready behind a prefetch of 2")
    assert len(inbox.deliveries) == 2
    transport.ack(inbox.deliveries[0])
    inbox.wait_for(3)
    wait_until(lambda: ready(transport, queue) == 2, "one more taken after one ack")
    assert inbox.bodies == [b"0", b"1", b"2"]


def test_prefetch_is_per_consumer_not_per_connection(make_transport, names):
    transport = make_transport()
    one, two = names("one"), names("two")
    transport.declare(Queue(one, durable=False), Queue(two, durable=False))
    for queue in (one, two):
        for i in range(3):
            transport.publish(to_queue(queue, b"%d" % i))
    first, second = Inbox(), Inbox()
    transport.consume(one, first, prefetch=1)
    transport.consume(two, second, prefetch=1)
    first.wait_for(1)
    second.wait_for(1)
    wait_until(lambda: ready(transport, one) == 2 and ready(transport, two) == 2, "one each out")


# ---------------------------------------------------------------- redelivery

def test_redelivery_reject_with_requeue_goes_back_to_the_head_redelivered(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    for body in (b"first", b"second"):
        transport.publish(to_queue(queue, body))
    wait_until(lambda: ready(transport, queue) == 2, "2 ready")
    inbox = Inbox()
    transport.consume(queue, inbox, prefetch=1)
    [first] = inbox.wait_for(1)
    transport.reject(first, requeue=True)
    deliveries = inbox.wait_for(2)
    assert deliveries[1].body == b"first" and deliveries[1].redelivered
    transport.ack(deliveries[1])
    third = inbox.wait_for(3)[2]
    assert third.body == b"second" and not third.redelivered
    transport.ack(third)


def test_redelivery_reject_without_requeue_dead_letters(make_transport, names):
    transport = make_transport()
    queue, dlq = names("q"), names("dlq")
    transport.declare(Queue(dlq, durable=False), Queue(queue, durable=False, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}))
    inbox, dead = Inbox(), Inbox(transport, ack=True)
    transport.consume(queue, inbox)
    transport.consume(dlq, dead)
    transport.publish(to_queue(queue, b"poison"))
    transport.reject(inbox.wait_for(1)[0], requeue=False)
    [letter] = dead.wait_for(1)
    assert letter.body == b"poison" and letter.routing_key == dlq
    death = letter.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", queue)


def test_redelivery_of_unacked_deliveries_when_their_transport_stops(make_transport, names):
    first = make_transport()
    queue = names("q")
    first.declare(Queue(queue, durable=False))
    first.publish(to_queue(queue, b"unfinished"))
    inbox = Inbox()
    first.consume(queue, inbox)
    inbox.wait_for(1)
    first.stop()
    second = make_transport()
    again = Inbox(second, ack=True)
    second.consume(queue, again)
    [delivery] = again.wait_for(1)
    assert delivery.body == b"unfinished" and delivery.redelivered


def test_redelivery_quorum_delivery_limit_dead_letters_after_the_limit(make_transport, names):
    transport = make_transport()
    queue, dlq = names("quorum"), names("dlq")
    transport.declare(Queue(dlq), Queue(queue, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}))
    inbox, dead = Inbox(), Inbox(transport, ack=True)
    transport.consume(queue, inbox)
    transport.consume(dlq, dead)
    transport.publish(to_queue(queue, b"crashes"))
    transport.reject(inbox.wait_for(1)[0], requeue=True)
    second = inbox.wait_for(2)[1]
    assert second.redelivered and second.headers.get("x-delivery-count") == 1
    transport.reject(second, requeue=True)  # returned more often than the limit: dead
    [letter] = dead.wait_for(1)
    assert letter.body == b"crashes"
    assert letter.headers["x-death"][0]["reason"] == "delivery_limit"
    assert len(inbox.deliveries) == 2


# ---------------------------------------------------------------- ttl and dead letters

def test_ttl_dead_letter_delay_queue_expires_back_into_its_queue(make_transport, names):
    transport = make_transport()
    queue = names("q")
    delay = f"{queue}.retry.100"
    transport.declare(Queue(queue, durable=False), Queue(delay, arguments=delay_queue_arguments(queue, 100)))
    inbox = Inbox(transport, ack=True)
    transport.consume(queue, inbox)
    transport.publish(to_queue(delay, b"retry me", application_headers={"attempt": 1}))
    [delivery] = inbox.wait_for(1)
    assert delivery.body == b"retry me" and delivery.routing_key == queue
    assert delivery.headers["attempt"] == 1
    death = delivery.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("expired", delay, 1)
    transport.delete_queue(delay)


def test_ttl_dead_letter_per_message_expiration(make_transport, names):
    transport = make_transport()
    holding, target = names("hold"), names("target")
    transport.declare(Queue(target, durable=False), Queue(holding, durable=False, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}))
    inbox = Inbox(transport, ack=True)
    transport.consume(target, inbox)
    transport.publish(to_queue(holding, b"short-lived", expiration="50"))
    [delivery] = inbox.wait_for(1)
    assert delivery.body == b"short-lived"
    assert "expiration" not in delivery.properties  # dead letters do not expire again
    assert delivery.headers["x-death"][0]["reason"] == "expired"


def test_ttl_x_expires_deletes_a_queue_nobody_uses(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False, arguments={"x-expires": 200}))
    assert transport.queue_info(queue) is not None
    # A passive declare counts as use and restarts the expiry (RabbitMQ does so): ask
    # less often than the queue expires.
    wait_until(lambda: transport.queue_info(queue) is None, "the unused queue to expire", poll=0.5)


# ---------------------------------------------------------------- max length

def test_max_length_reject_publish_nacks_the_publish(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False,
                            arguments={"x-max-length": 1, "x-overflow": "reject-publish"}))
    confirms = Confirms()
    transport.publish(to_queue(queue, b"fits"), confirms("fits"))
    confirms.wait_for(1)
    transport.publish(to_queue(queue, b"full"), confirms("full"))
    results = dict(confirms.wait_for(2))
    assert results["fits"] is None
    assert isinstance(results["full"], BrokerError)
    wait_until(lambda: make_transport().queue_info(queue) is not None, "the queue still there")
    assert ready(make_transport(), queue) == 1


def test_max_length_reject_publish_nacks_keep_the_connection(make_transport, names):
    """A full queue's nacks are not a broken channel: no reconnect while it also accepts.

    (RabbitMQ 3.10's broken quorum channel nacks *every* publish to its queue; only a
    streak of nothing but nacks replaces the channel: test_transport.py.)"""
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False,
                            arguments={"x-max-length": 1, "x-overflow": "reject-publish"}))
    generation = transport.generation
    confirms = Confirms()
    for i in range(30):  # each round: one fits, one is refused, a consumer takes one
        transport.publish(to_queue(queue, b"fits"), confirms(("fits", i)))
        transport.publish(to_queue(queue, b"full"), confirms(("full", i)))
        results = dict(confirms.wait_for(2 * (i + 1)))
        assert results[("fits", i)] is None and isinstance(results[("full", i)], BrokerError)
        delivery = transport.get(queue)
        assert delivery is not None
        transport.ack(delivery)
    assert transport.generation == generation and transport.is_connected
    transport.publish(to_queue(queue, b"after"), confirms("after"))
    assert dict(confirms.wait_for(61))["after"] is None


# ---------------------------------------------------------------- mandatory and confirms

def test_mandatory_return_of_an_unroutable_publish_then_confirmed(make_transport, names):
    transport = make_transport()
    exchange = names("ex")
    transport.declare(Exchange(exchange, "topic", durable=False))
    events: list[tuple[str, Any]] = []
    returned = threading.Event()

    def on_return(message: Outgoing, reply_text: str) -> None:
        events.append(("return", (message.routing_key, message.body, reply_text)))
        returned.set()

    transport.on_return(on_return)
    confirms = Confirms()
    transport.publish(Outgoing(exchange, "nobody.listens", b"lost", mandatory=True), confirms("m"))
    transport.publish(Outgoing(exchange, "nobody.listens", b"quiet"), confirms("plain"))
    results = confirms.wait_for(2)
    assert returned.wait(TIMEOUT)
    assert events == [("return", ("nobody.listens", b"lost", "NO_ROUTE"))]
    assert [error for _, error in results] == [None, None]


def test_confirms_run_once_each_in_publish_order(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    confirms = Confirms()
    for i in range(200):
        transport.publish(to_queue(queue, b"%d" % i), confirms(i))
    results = confirms.wait_for(200)
    assert [key for key, _ in results] == list(range(200))
    assert all(error is None for _, error in results)
    wait_until(lambda: ready(transport, queue) == 200, "200 queued")


# ---------------------------------------------------------------- direct reply-to

def test_direct_reply_to_round_trip(make_transport, names):
    client, server = make_transport(), make_transport()
    queue = names("svc")
    server.declare(Queue(queue, durable=False))
    replies = Inbox()
    client.consume(REPLY_TO, replies, no_ack=True)

    def serve(request: Delivery) -> None:
        reply_to = request.properties["reply_to"]
        assert reply_to.startswith(REPLY_TO + ".")
        server.publish(Outgoing("", reply_to, b"re: " + request.body,
                                {"correlation_id": request.properties["correlation_id"]}))
        server.ack(request)

    server.consume(queue, serve)
    client.publish(to_queue(queue, b"ping", reply_to=REPLY_TO, correlation_id="c-1"))
    [reply] = replies.wait_for(1)
    assert reply.body == b"re: ping" and reply.no_ack
    assert reply.properties["correlation_id"] == "c-1"


# ---------------------------------------------------------------- admin ops

def test_admin_ops_queue_info_get_purge_delete(make_transport, names):
    transport = make_transport()
    queue = names("q")
    assert transport.queue_info(queue) is None
    transport.declare(Queue(queue, durable=False))
    for body in (b"a", b"b", b"c"):
        transport.publish(to_queue(queue, body))
    wait_until(lambda: ready(transport, queue) == 3, "3 ready")
    got = transport.get(queue)
    assert got is not None and got.body == b"a" and got.generation == transport.generation
    transport.reject(got, requeue=True)
    again = transport.get(queue)
    assert again is not None and again.body == b"a" and again.redelivered
    transport.ack(again)
    wait_until(lambda: ready(transport, queue) == 2, "2 left after the ack")
    info = transport.queue_info(queue)
    assert info is not None and (info.name, info.consumer_count) == (queue, 0)
    assert transport.purge(queue) == 2
    assert transport.get(queue) is None
    transport.delete_queue(queue)
    assert transport.queue_info(queue) is None
    transport.delete_queue(queue)  # missing: not an error


def test_admin_ops_consumer_count_and_cancel(make_transport, names):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    inbox = Inbox(transport, ack=True)
    tag = transport.consume(queue, inbox)
    wait_until(lambda: transport.queue_info(queue).consumer_count == 1, "one consumer")
    transport.publish(to_queue(queue, b"before"))
    inbox.wait_for(1)
    transport.cancel(tag)
    wait_until(lambda: transport.queue_info(queue).consumer_count == 0, "no consumer")
    transport.publish(to_queue(queue, b"after"))
    wait_until(lambda: ready(transport, queue) == 1, "the later message stays queued")
    assert inbox.bodies == [b"before"]


# ---------------------------------------------------------------- queue lifetimes

def test_exclusive_queue_belongs_to_one_transport_and_goes_when_it_stops(make_transport, names):
    owner, other = make_transport(), make_transport()
    queue = names("excl")
    owner.declare(Queue(queue, durable=False, exclusive=True, auto_delete=True))
    with pytest.raises(BrokerError):
        other.consume(queue, Inbox())
    owner.stop()
    wait_until(lambda: other.queue_info(queue) is None, "the exclusive queue to go")


def test_auto_delete_queue_goes_when_its_last_consumer_cancels(make_transport, names):
    transport = make_transport()
    queue = names("auto")
    transport.declare(Queue(queue, durable=False, auto_delete=True))
    first, second = transport.consume(queue, Inbox()), transport.consume(queue, Inbox())
    transport.cancel(first)
    assert transport.queue_info(queue) is not None
    transport.cancel(second)
    wait_until(lambda: transport.queue_info(queue) is None, "the auto-delete queue to go")


def test_declare_and_consume_before_start_happen_on_connect(make_transport, names):
    transport = make_transport(start=False)
    queue = names("q")
    inbox = Inbox(transport, ack=True)
    connected: list[int] = []
    transport.declare(Queue(queue, durable=False))
    transport.consume(queue, inbox)
    transport.on_connect(lambda: connected.append(transport.generation))
    transport.publish(to_queue(queue, b"queued before start"))
    transport.start()
    assert inbox.wait_for(1)[0].body == b"queued before start"
    assert connected == [1] and transport.is_connected


# ---------------------------------------------------------------- reconnect

def test_consumer_survives_reconnect(make_transport, names, lose_connection):
    transport = make_transport()
    queue = names("q")
    transport.declare(Queue(queue, durable=False))
    inbox = Inbox()
    transport.consume(queue, inbox)
    connects: list[int] = []
    lost: list[BaseException] = []
    transport.on_connect(lambda: connects.append(transport.generation))
    transport.on_lost(lost.append)
    transport.publish(to_queue(queue, b"in flight"))
    [old] = inbox.wait_for(1)
    lose_connection(transport)
    [redelivered] = inbox.wait_for(2)[1:]
    assert redelivered.body == b"in flight" and redelivered.redelivered
    assert redelivered.generation == transport.generation == old.generation + 1
    assert connects == [transport.generation] and isinstance(lost[0], ConnectionLost)
    transport.ack(old)  # of the dead connection: dropped, never acks the redelivered one
    transport.publish(to_queue(queue, b"after"))
    assert inbox.wait_for(3)[2].body == b"after"
    wait_until(lambda: transport.queue_info(queue).consumer_count == 1, "the consumer back")
    transport.stop()
    checker = make_transport()
    wait_until(lambda: ready(checker, queue) == 2, "both unacked messages requeued")
