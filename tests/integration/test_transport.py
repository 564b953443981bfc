"""The broker connection on the real broker: publishes from many threads at once.

A thread publishing while the I/O thread sleeps writes its publish itself; these tests
hold that shortcut to what the outbox guaranteed: every publish arrives once, each
thread's publishes keep their order, and every confirm callback runs once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from amqprpc.exceptions import BrokerError
from amqprpc.messages import Outgoing
from amqprpc.transport import Queue
from amqprpc.transport.pyamqp import _NACK_STREAK, _NACK_STREAK_COUNT, AmqpTransport
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(broker_uri: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("transport")
    yield name
    connection = AmqpTransport(broker_uri, name="cleanup", confirms=False)
    connection.start()
    connection.delete_queue(name)
    connection.stop()


@pytest.fixture
def connection(broker_uri: str, queue: str) -> Iterator[AmqpTransport]:
    conn = AmqpTransport(broker_uri, name="transport-test")
    conn.declare(Queue(queue, durable=False))
    conn.start()
    yield conn
    conn.stop()


@pytest.fixture
def wakes(connection: AmqpTransport) -> list[int]:
    """Counts the I/O thread's wake-ups: one per publish that went through the outbox."""
    count: list[int] = []
    real_wake = connection._wake

    def counting_wake() -> None:
        count.append(1)
        real_wake()

    connection._wake = counting_wake  # type: ignore[method-assign]
    return count


def drain(broker_uri: str, queue: str, expected: int) -> list[bytes]:
    """Every body in ``queue``, in queue order, once ``expected`` of them are there."""
    connection = AmqpTransport(broker_uri, name="transport-reader", confirms=False)
    bodies: list[bytes] = []
    connection.consume(queue, lambda delivery: bodies.append(delivery.body), no_ack=True)
    connection.start()
    try:
        wait_until(lambda: len(bodies) >= expected, f"{expected} messages")
    finally:
        connection.stop()
    return bodies


def test_publishes_from_many_threads_arrive_once_and_in_each_threads_order(
    broker_uri: str, connection: AmqpTransport, queue: str
) -> None:
    threads, per_thread = 4, 300
    confirms: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def confirmed(body: str) -> Callable[[BaseException | None], None]:
        def callback(error: BaseException | None) -> None:
            with lock:
                confirms[body] += 1
                if error is not None:
                    errors.append(error)
        return callback

    def publisher(n: int) -> None:
        for i in range(per_thread):
            body = f"{n}:{i}"
            connection.publish(Outgoing("", queue, body.encode()), on_confirm=confirmed(body))

    workers = [threading.Thread(target=publisher, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    wait_until(lambda: sum(confirms.values()) >= threads * per_thread, "every confirm")

    bodies = [body.decode() for body in drain(broker_uri, queue, threads * per_thread)]
    assert len(bodies) == len(set(bodies)) == threads * per_thread
    for n in range(threads):
        sequence = [int(body.split(":")[1]) for body in bodies if body.startswith(f"{n}:")]
        assert sequence == list(range(per_thread)), f"thread {n} out of order"
    assert set(confirms.values()) == {1} and not errors


def test_an_idle_connection_lets_the_publishing_thread_write(
    connection: AmqpTransport, queue: str, wakes: list[int]
) -> None:
    for _ in range(20):
        done = threading.Event()
        connection.publish(Outgoing("", queue, b"x"), on_confirm=lambda error, done=done: done.set())
        assert done.wait(5)
    # The I/O thread sleeps between publishes: a few may find it busy (a confirm being
    # read), most must go out without waking it.
    assert len(wakes) < 10


def test_a_blocked_connection_queues_publishes_for_the_io_thread(
    broker_uri: str, connection: AmqpTransport, queue: str, wakes: list[int]
) -> None:
    """A broker that blocked us stops reading: a direct write would stall the caller."""
    connection._blocked_reason = "test: low on memory"
    try:
        done = threading.Event()
        connection.publish(Outgoing("", queue, b"queued"), on_confirm=lambda error: done.set())
        assert wakes == [1]
        assert done.wait(5)
    finally:
        connection._blocked_reason = None
    assert drain(broker_uri, queue, 1) == [b"queued"]


def test_confirm_callbacks_without_publisher_confirms_run_once(
    broker_uri: str, queue: str
) -> None:
    conn = AmqpTransport(broker_uri, name="transport-noconfirm", confirms=False)
    conn.declare(Queue(queue, durable=False))
    conn.start()
    calls: list[BaseException | None] = []
    try:
        for _ in range(50):
            conn.publish(Outgoing("", queue, b"x"), on_confirm=calls.append)
        wait_until(lambda: len(calls) >= 50, "50 callbacks")
    finally:
        conn.stop()
    assert calls == [None] * 50
    assert len(drain(broker_uri, queue, 50)) == 50


def test_a_direct_write_that_fails_reconnects_and_publishes_once(
    broker_uri: str, connection: AmqpTransport, queue: str
) -> None:
    """Half a frame may have gone out: the stream is dropped, the publish goes out again."""
    transport = connection._conn.transport  # type: ignore[union-attr]
    real_write = transport._write
    failures: list[int] = []

    def write_once_broken(data: object) -> None:
        if not failures:
            failures.append(1)
            raise BrokenPipeError("simulated: the socket broke mid-write")
        real_write(data)

    transport._write = write_once_broken
    generation = connection.generation
    outcomes: list[BaseException | None] = []
    connection.publish(Outgoing("", queue, b"survivor"), on_confirm=outcomes.append)
    wait_until(lambda: outcomes, "the publish to be confirmed")
    assert failures == [1]
    assert connection.generation == generation + 1  # it reconnected
    assert outcomes == [None]
    assert drain(broker_uri, queue, 1) == [b"survivor"]


def test_publishes_from_an_event_loop_go_through_the_io_thread(
    connection: AmqpTransport, queue: str, wakes: list[int]
) -> None:
    """A broker that stops reading must never stall an event loop in a socket write."""

    async def publish() -> BaseException | None:
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[BaseException | None] = loop.create_future()
        connection.publish(Outgoing("", queue, b"from a loop"), on_confirm=lambda error:
                           loop.call_soon_threadsafe(confirmed.set_result, error))
        return await asyncio.wait_for(confirmed, 5)

    assert asyncio.run(publish()) is None
    assert wakes == [1]


def test_a_channel_that_only_nacks_is_replaced_once(
    broker_uri: str, queue: str
) -> None:
    """RabbitMQ 3.10 can keep nacking on one channel (a quorum leader election): a streak of
    ``_NACK_STREAK_COUNT`` nacks to one routing key over ``_NACK_STREAK`` with no ack gets a
    new connection; a few nacks (a full queue) do not, and a streak soon after a
    replacement does not churn connections (docs/resilience.md)."""
    conn = AmqpTransport(broker_uri, name="transport-nacks")
    conn.declare(Queue(queue, durable=False,
                       arguments={"x-max-length": 0, "x-overflow": "reject-publish"}))
    conn.start()
    outcomes: list[BaseException | None] = []

    def nacks(count: int) -> None:
        wanted = len(outcomes) + count  # before publishing: nacks may come back during the loop
        for _ in range(count):
            conn.publish(Outgoing("", queue, b"refused"), on_confirm=outcomes.append)
        wait_until(lambda: len(outcomes) >= wanted, f"{count} nacks")

    try:
        generation = conn.generation
        nacks(1)
        assert isinstance(outcomes[0], BrokerError) and "nacked" in str(outcomes[0])
        nacks(_NACK_STREAK_COUNT - 2)
        assert conn.generation == generation  # a few nacks: a full queue, not a broken channel
        time.sleep(_NACK_STREAK)  # the scenario: a second with nothing but nacks
        nacks(1)
        wait_until(lambda: conn.generation == generation + 1 and conn.is_connected,
                   "a new connection")
        assert all(isinstance(outcome, BrokerError) for outcome in outcomes)
        nacks(_NACK_STREAK_COUNT - 1)
        time.sleep(_NACK_STREAK)
        nacks(1)
        assert conn.generation == generation + 1  # within 5 s of the replacement: kept
    finally:
        conn.stop()
