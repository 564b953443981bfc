"""Events end to end on the real broker: handler types, retries, dead letters, crashes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
from click.testing import CliRunner

from amqprpc import (
    BROADCAST,
    SINGLETON,
    CallContext,
    ClusterRpcClient,
    Config,
    EventDispatcher,
    EventPublisher,
    dispatch_event,
    event_handler,
    rpc,
)
from amqprpc.cli import main as cli
from amqprpc.dead_letters import ATTEMPTS_HEADER, ERROR_HEADER
from amqprpc.dlq import DeadLetterQueue
from amqprpc.testing.pytest import broker_admin, with_name
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0


class Recorder:
    """What handlers saw, and a way to wait for it (no sleeps: a condition and a deadline)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Any]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"expected {count} records within {timeout}s, got {self.items}")
            return list(self.items)


def queue_depth(uri: str, queue: str) -> int:
    with broker_admin(uri) as channel:
        return int(channel.queue_declare(queue, passive=True).message_count)


def dispatch_all(publisher: EventPublisher, source: str, event_type: str, payloads: list[Any]) -> None:
    futures = [publisher.dispatch(source, event_type, payload) for payload in payloads]
    for future in futures:
        future.result(WAIT)


# ---------------------------------------------------------------- handler types


def test_service_pool_instances_compete(container_factory, unique_name, source, publisher):
    """Two instances, one queue: every event handled exactly once, by either instance.

    With concurrency 1 each instance holds one event at a time, and the first two events
    wait for each other: only two instances sharing the work can get past that barrier.
    """
    seen = Recorder()
    barrier = threading.Barrier(2)
    calls = iter(range(1_000_000))
    lock = threading.Lock()

    class Pool:
        name = unique_name("pool")
        ctx = CallContext()

        @event_handler(source, "tick")
        def handle(self, payload: int) -> None:
            with lock:
                first_two = next(calls) < 2
            if first_two:
                barrier.wait(timeout=10)
            seen.add((id(self.ctx.container), payload))

    one = container_factory(Pool, concurrency=1)
    two = container_factory(Pool, concurrency=1)
    assert one.entrypoints[0].queue_name == f"evt-{source}-tick--{Pool.name}.handle"
    dispatch_all(publisher, source, "tick", list(range(20)))
    records = seen.wait_for(20)
    assert sorted(payload for _, payload in records) == list(range(20))
    assert {instance for instance, _ in records} == {id(one), id(two)}
    wait_until(lambda: queue_depth(one.config.broker_url, one.entrypoints[0].queue_name) == 0, "drained")
    assert len(seen.items) == 20


def test_broadcast_reaches_every_instance(container_factory, unique_name, source, publisher):
    seen = Recorder()

    class Cache:
        name = unique_name("cache")
        ctx = CallContext()

        @event_handler(source, "invalidate", handler_type=BROADCAST)
        def invalidate(self, key: str) -> None:
            seen.add((id(self.ctx.container), key))

    one = container_factory(Cache)
    two = container_factory(Cache)
    queues = {c.entrypoints[0].queue_name for c in (one, two)}
    assert len(queues) == 2
    assert all(q.startswith(f"evt-{source}-invalidate--{Cache.name}.invalidate-") for q in queues)
    dispatch_all(publisher, source, "invalidate", ["a", "b", "c"])
    records = seen.wait_for(6)
    assert sorted(records) == sorted((id(c), key) for c in (one, two) for key in "abc")


def test_singleton_is_handled_once_across_services(container_factory, unique_name, source, publisher):
    seen = Recorder()
    barrier = threading.Barrier(2)
    calls = iter(range(1_000_000))
    lock = threading.Lock()

    class Auditor:
        name = unique_name("audit")

        @event_handler(source, "paid", handler_type=SINGLETON)
        def record(self, payload: int) -> None:
            with lock:
                first_two = next(calls) < 2
            if first_two:
                barrier.wait(timeout=10)
            seen.add((self.name, payload))

    Other = with_name(Auditor, unique_name("audit2"))
    one = container_factory(Auditor, concurrency=1)
    two = container_factory(Other, concurrency=1)
    assert one.entrypoints[0].queue_name == two.entrypoints[0].queue_name == f"evt-{source}-paid"
    dispatch_all(publisher, source, "paid", list(range(10)))
    records = seen.wait_for(10)
    assert sorted(payload for _, payload in records) == list(range(10))
    assert {service for service, _ in records} == {Auditor.name, Other.name}


def test_dispatcher_in_a_service_carries_context(container_factory, unique_name, amqp_uri):
    seen = Recorder()
    orders_name = unique_name("orders")

    class Orders:
        name = orders_name
        dispatch = EventDispatcher()

        @rpc
        def create(self, item: str) -> dict[str, Any]:
            order = {"id": 7, "item": item}
            self.dispatch("order_created", order)
            return order

    class Email:
        name = unique_name("email")
        ctx = CallContext()

        @event_handler(orders_name, "order_created")
        def send_confirmation(self, order: dict[str, Any]) -> None:
            seen.add((order, self.ctx.data.get("user_id"), self.ctx.call_id_stack, self.ctx.request_id))

    container_factory(Email)
    container_factory(Orders)
    try:
        with ClusterRpcClient(amqp_uri, timeout=10, context={"user_id": "u-7"}) as client:
            assert client.call(orders_name, "create", "book") == {"id": 7, "item": "book"}
        [(order, user_id, stack, request_id)] = seen.wait_for(1)
        assert order == {"id": 7, "item": "book"}
        assert user_id == "u-7"
        assert [entry.rsplit(".", 1)[0] for entry in stack] == [
            f"{orders_name}.create", f"{Email.name}.send_confirmation"]
        assert request_id and len(request_id) == 32  # the event's message_id
    finally:
        with broker_admin(amqp_uri) as channel:
            channel.exchange_delete(f"{orders_name}.events")


def test_async_handlers_dispatch_and_handle(container_factory, unique_name, amqp_uri):
    seen = Recorder()
    relay_name = unique_name("relay")

    class Relay:
        name = relay_name
        dispatch = EventDispatcher()

        @rpc
        async def announce(self, n: int) -> int:
            self.dispatch("announced", {"n": n})
            self.dispatch("announced", {"n": n + 1})
            return n

    class Listener:
        name = unique_name("alistener")

        @event_handler(relay_name, "announced")
        async def on_announced(self, payload: dict[str, int]) -> None:
            seen.add(payload["n"])

    container_factory(Listener)
    container_factory(Relay)
    try:
        with ClusterRpcClient(amqp_uri, timeout=10) as client:
            assert client.call(relay_name, "announce", 1) == 1
        assert sorted(seen.wait_for(2)) == [1, 2]
    finally:
        with broker_admin(amqp_uri) as channel:
            channel.exchange_delete(f"{relay_name}.events")


def test_dispatch_event_and_cli(container_factory, unique_name, source, amqp_uri):
    seen = Recorder()

    class Listener:
        name = unique_name("listener")
        ctx = CallContext()

        @event_handler(source, "ping")
        def ping(self, payload: Any) -> None:
            seen.add((payload, self.ctx.data.get("user_id")))

    container_factory(Listener)
    dispatch_event(source, "ping", {"n": 1}, broker_url=amqp_uri)
    result = CliRunner().invoke(cli, ["dispatch", source, "ping", '{"n": 2}', "--broker", amqp_uri,
                                      "--context", '{"user_id": "cli"}'])
    assert result.exit_code == 0, result.output
    assert sorted(seen.wait_for(2), key=str) == [({"n": 1}, None), ({"n": 2}, "cli")]
    bad = CliRunner().invoke(cli, ["dispatch", source, "ping", "{nope", "--broker", amqp_uri])
    assert bad.exit_code == 2 and "not valid JSON" in bad.output


# ---------------------------------------------------------------- retries and dead letters


def test_fails_twice_then_succeeds_with_backoff(container_factory, unique_name, source, publisher):
    attempts = Recorder()
    succeeded = Recorder()

    class Flaky:
        name = unique_name("flaky")
        ctx = CallContext()

        @event_handler(source, "job", max_attempts=5, retry_delay=0.05, max_retry_delay=1)
        def run(self, payload: str) -> None:
            attempts.add((time.monotonic(), self.ctx.request_id))
            if len(attempts.items) < 3:
                raise ConnectionError("downstream unavailable")
            succeeded.add(payload)

    container = container_factory(Flaky)
    dispatch_all(publisher, source, "job", ["j1"])
    assert succeeded.wait_for(1) == ["j1"]
    runs = attempts.items
    assert len(runs) == 3
    assert len({request_id for _, request_id in runs}) == 1  # one event, three runs
    # the backoff is a floor (a TTL): 50 ms before the 2nd run, 100 ms before the 3rd
    assert runs[1][0] - runs[0][0] >= 0.05
    assert runs[2][0] - runs[1][0] >= 0.1
    handler = container.entrypoints[0]
    uri = container.config.broker_url
    wait_until(lambda: queue_depth(uri, handler.queue_name) == 0, "handler queue drained")
    assert queue_depth(uri, handler.dead_letter_queue_name) == 0


@pytest.fixture
def quiet_transport() -> Iterator[None]:
    """The dlq commands turn transport warnings down for their one-shot process; undo it."""
    logger = logging.getLogger("amqprpc.transport")
    level = logger.level
    yield
    logger.setLevel(level)


def test_always_failing_event_is_dead_lettered_then_replayed(
        container_factory, unique_name, source, publisher, quiet_transport):
    runs = Recorder()
    fixed = threading.Event()

    class Broken:
        name = unique_name("broken")

        @event_handler(source, "job", max_attempts=3, retry_delay=0.01)
        def run(self, payload: dict[str, Any]) -> str:
            runs.add(payload)
            if not fixed.is_set():
                raise ValueError(f"cannot process {payload['id']}")
            return "done"

    container = container_factory(Broken)
    handler = container.entrypoints[0]
    uri = container.config.broker_url
    dispatch_all(publisher, source, "job", [{"id": 1}])
    wait_until(lambda: queue_depth(uri, handler.dead_letter_queue_name) == 1, "the dead letter")
    assert len(runs.items) == 3

    listed = CliRunner().invoke(cli, ["dlq", "list", handler.queue_name, "--broker", uri, "--json"])
    assert listed.exit_code == 0, listed.output
    [letter] = [json.loads(line) for line in listed.output.splitlines()]
    assert letter["attempts"] == 3
    assert letter["error"] == "ValueError: cannot process 1"
    assert letter["error_type"] == "builtins.ValueError"
    assert (letter["queue"], letter["exchange"], letter["routing_key"]) == (
        handler.queue_name, f"{source}.events", "job")
    assert json.loads(letter["payload"]) == {"id": 1}
    wait_until(lambda: queue_depth(uri, handler.dead_letter_queue_name) == 1, "the listed letter back")
    human = CliRunner().invoke(cli, ["dlq", "list", handler.dead_letter_queue_name, "--broker", uri])
    assert "1 dead letters" in human.output and "ValueError: cannot process 1" in human.output

    fixed.set()
    replayed = CliRunner().invoke(cli, ["dlq", "replay", handler.queue_name, "--broker", uri])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1" in replayed.output
    assert runs.wait_for(4)[3] == {"id": 1}
    wait_until(lambda: queue_depth(uri, handler.dead_letter_queue_name) == 0, "an empty DLQ")
    wait_until(lambda: queue_depth(uri, handler.queue_name) == 0, "a drained queue")

    missing = CliRunner().invoke(cli, ["dlq", "list", f"{handler.queue_name}-nope", "--broker", uri])
    assert missing.exit_code == 4 and "no queue named" in missing.output


def test_dlq_purge_and_replay_of_a_vanished_queue(
        container_factory, unique_name, source, publisher, amqp_uri, quiet_transport):
    class Broken:
        name = unique_name("gone")

        @event_handler(source, "job", max_attempts=1)
        def run(self, payload: Any) -> None:
            raise RuntimeError("no")

    container = container_factory(Broken)
    handler = container.entrypoints[0]
    dispatch_all(publisher, source, "job", [1, 2])
    wait_until(lambda: queue_depth(amqp_uri, handler.dead_letter_queue_name) == 2, "two dead letters")
    with DeadLetterQueue(handler.queue_name, config=Config(broker_url=amqp_uri)) as dlq:
        report = dlq.replay(target=f"{handler.queue_name}-vanished")
        assert report.replayed == 0 and len(report.kept) == 2
        assert "no longer exists" in report.kept[0][1]
        # kept, not lost (the broker may answer a count before it has taken them back)
        wait_until(lambda: dlq.count() == 2, "the kept letters back in the DLQ")
    purged = CliRunner().invoke(cli, ["dlq", "purge", handler.queue_name, "--yes", "--broker", amqp_uri])
    assert purged.exit_code == 0 and "purged 2" in purged.output
    assert queue_depth(amqp_uri, handler.dead_letter_queue_name) == 0


def test_malformed_events_go_straight_to_the_dlq(container_factory, unique_name, source, amqp_uri,
                                                  tmp_path):
    seen = Recorder()

    class Strict:
        name = unique_name("strict")

        @event_handler(source, "job")
        def run(self, payload: Any) -> None:
            seen.add(payload)

    container = container_factory(Strict, max_message_size=1000)
    handler = container.entrypoints[0]
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    bad = [
        (b"{not json", "application/json"),
        (pickle.dumps(Exploit()), "application/x-python-serialize"),
        (json.dumps("x" * 2000).encode(), "application/json"),
    ]
    with broker_admin(amqp_uri) as channel:
        for body, content_type in bad:
            channel.basic_publish(amqp.Message(body, content_type=content_type, delivery_mode=2),
                                  f"{source}.events", "job")
        channel.basic_publish(amqp.Message(b'"good"', content_type="application/json"),
                              f"{source}.events", "job")
    assert seen.wait_for(1) == ["good"]  # the worker kept consuming
    wait_until(lambda: queue_depth(amqp_uri, handler.dead_letter_queue_name) == 3, "three dead letters")
    with DeadLetterQueue(handler.queue_name, config=Config(broker_url=amqp_uri)) as dlq:
        letters = dlq.peek(10)
    assert [letter.attempts for letter in letters] == [0, 0, 0]
    errors = [letter.error or "" for letter in letters]
    assert all(error.startswith("MalformedRequest: ") for error in errors)
    # One each, in any order: handlers run concurrently, so the DLQ need not keep publish order.
    for problem in ("cannot decode json", "not accepted", "exceeds the limit"):
        assert sum(problem in error for error in errors) == 1, (problem, errors)
    assert not marker.exists()


# ---------------------------------------------------------------- crashes


def test_event_of_a_killed_worker_is_handled_by_another(container_factory, unique_name, source,
                                                        amqp_uri, tmp_path, publisher):
    service = unique_name("holder")
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "EVENTS_SERVICE_NAME": service, "EVENTS_SOURCE": source,
           "EVENTS_MARKER_DIR": str(markers), "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "amqprpc.cli", "run", "tests.integration.apps.events",
         "--broker", amqp_uri, "--log-level", "WARNING"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    queue = f"evt-{source}-hold--{service}.hold"
    try:
        def consumed() -> bool:
            try:
                with broker_admin(amqp_uri) as channel:
                    return channel.queue_declare(queue, passive=True).consumer_count > 0
            except amqp.exceptions.NotFound:
                return False

        wait_until(consumed, "the subprocess worker to consume", timeout=30)
        dispatch_all(publisher, source, "hold", [{"order": 1}])
        wait_until(lambda: (markers / f"{worker.pid}.started").exists(), "the worker to take the event")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)

        seen = Recorder()

        class Survivor:
            name = service
            ctx = CallContext()

            @event_handler(source, "hold")
            def hold(self, payload: Any) -> None:
                seen.add((payload, self.ctx.redelivered))

        container_factory(Survivor)
        assert seen.wait_for(1) == [({"order": 1}, True)]
        wait_until(lambda: queue_depth(amqp_uri, queue) == 0, "a drained queue")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        log.close()


def test_an_event_that_kills_every_worker_ends_in_the_dlq(container_factory, unique_name, source,
                                                         amqp_uri, publisher):
    """On a classic queue the broker does not count deliveries: each redelivery counts as a
    failed attempt, so a crash loop stops at ``max_attempts`` instead of going on forever."""
    started = threading.Semaphore(0)
    release = threading.Event()
    runs: list[tuple[Any, bool]] = []
    service = unique_name("crashy")

    class Crashy:
        name = service
        ctx = CallContext()

        @event_handler(source, "job", max_attempts=2, retry_delay=0.01)
        def job(self, payload: Any) -> None:
            runs.append((payload, self.ctx.redelivered))
            started.release()
            release.wait(30)  # "dies" here: the test kills its container

    try:
        first = container_factory(Crashy)
        handler = first.entrypoints[0]
        dispatch_all(publisher, source, "job", ["poison"])
        assert started.acquire(timeout=WAIT)
        first.kill()  # run 1 lost: the broker redelivers it
        second = container_factory(Crashy)  # counts the lost run, retries it after 10 ms
        assert started.acquire(timeout=WAIT)
        second.kill()  # run 2 lost too: that was the last attempt
        container_factory(Crashy)
        wait_until(lambda: queue_depth(amqp_uri, handler.dead_letter_queue_name) == 1, "the dead letter")
    finally:
        release.set()
    assert runs == [("poison", False), ("poison", True)]
    with DeadLetterQueue(handler.queue_name, config=Config(broker_url=amqp_uri)) as dlq:
        [letter] = dlq.peek()
    assert (letter.attempts, letter.error_type, letter.body) == (
        2, "amqprpc.entrypoints.events.WorkerLost", b'"poison"')
    assert "did not finish" in (letter.error or "")
    assert queue_depth(amqp_uri, handler.queue_name) == 0


# ---------------------------------------------------------------- wire compatibility


def test_queues_declared_as_nameko_does_are_accepted(container_factory, unique_name, source, amqp_uri):
    """Nameko 2.14 declares with kombu: queues durable, no arguments, not auto-delete unless
    the handler says ``reliable_delivery=False``.

    Declaring ours over theirs (and theirs over ours) must not fail with PRECONDITION_FAILED.
    """
    from kombu import Connection, Exchange, Queue

    service = unique_name("nk")
    exchange = Exchange(f"{source}.events", type="topic", durable=True, delivery_mode=2)
    nameko_queues = [
        Queue(f"evt-{source}-made--{service}.pooled", exchange=exchange, routing_key="made",
              durable=True, auto_delete=False, exclusive=False),
        Queue(f"evt-{source}-made", exchange=exchange, routing_key="made",
              durable=True, auto_delete=False, exclusive=False),
        Queue(f"evt-{source}-made--{service}.loose", exchange=exchange, routing_key="made",
              durable=True, auto_delete=True, exclusive=False),
    ]

    def declare_as_nameko() -> None:
        with Connection(amqp_uri) as connection:
            channel = connection.channel()
            for queue in nameko_queues:
                queue(channel).declare()

    seen = Recorder()

    class Migrated:
        name = service

        @event_handler(source, "made")
        def pooled(self, payload: Any) -> None:
            seen.add(("pool", payload))

        @event_handler(source, "made", handler_type=SINGLETON)
        def single(self, payload: Any) -> None:
            seen.add(("singleton", payload))

        @event_handler(source, "made", reliable_delivery=False)
        def loose(self, payload: Any) -> None:
            seen.add(("loose", payload))

    declare_as_nameko()
    container = container_factory(Migrated)
    assert {e.queue_name for e in container.entrypoints} == {q.name for q in nameko_queues}
    declare_as_nameko()  # and the other way round
    dispatch_event(source, "made", {"x": 1}, broker_url=amqp_uri)
    assert sorted(seen.wait_for(3)) == [("loose", {"x": 1}), ("pool", {"x": 1}), ("singleton", {"x": 1})]


def test_event_wire_format(source, amqp_uri):
    """What Nameko's handlers expect: body = payload, persistent, routing key = type, context."""
    with broker_admin(amqp_uri) as channel:
        channel.exchange_declare(f"{source}.events", "topic", durable=True, auto_delete=False)
        queue = channel.queue_declare("", exclusive=True).queue
        channel.queue_bind(queue, f"{source}.events", "shipped")
        dispatch_event(source, "shipped", {"id": 3, "note": "naïve"}, broker_url=amqp_uri,
                       context={"user_id": "u-1", "call_id_stack": ["a.b.1"]})
        message = wait_until(lambda: channel.basic_get(queue, no_ack=True), "the event")
    assert json.loads(message.body) == {"id": 3, "note": "naïve"}
    assert message.properties["content_type"] == "application/json"
    assert message.properties["delivery_mode"] == 2
    assert len(message.properties["message_id"]) == 32
    assert message.delivery_info["routing_key"] == "shipped"
    assert message.delivery_info["exchange"] == f"{source}.events"
    headers = message.properties["application_headers"]
    assert headers["nameko.user_id"] == "u-1"
    assert headers["nameko.call_id_stack"] == ["a.b.1"]
    assert ATTEMPTS_HEADER not in headers and ERROR_HEADER not in headers


# ---------------------------------------------------------------- quorum queues


def test_quorum_queues_retry_and_honour_the_delivery_limit(container_factory, unique_name, source,
                                                           amqp_uri, publisher):
    seen = Recorder()
    failures = iter([True])

    class Durable:
        name = unique_name("quorum")

        @rpc
        def ping(self) -> str:
            return "pong"

        @event_handler(source, "job", retry_delay=0.01)
        def run(self, payload: Any) -> None:
            if next(failures, False):
                raise ValueError("once")
            seen.add(payload)

    container = container_factory(Durable, queue_type="quorum", delivery_limit=2)
    handler = container.entrypoints[0] if container.entrypoints[0].method_name == "run" else \
        container.entrypoints[1]
    with ClusterRpcClient(amqp_uri, timeout=10) as client:
        assert client.call(Durable.name, "ping") == "pong"
    dispatch_all(publisher, source, "job", ["q1"])
    assert seen.wait_for(1) == ["q1"]  # failed once, retried through the delay queue

    with broker_admin(amqp_uri) as channel:  # a classic declaration of a quorum queue is refused
        with pytest.raises(amqp.exceptions.PreconditionFailed):
            channel.queue_declare(handler.queue_name, durable=True, auto_delete=False)

    container.stop(grace=5)  # now play a worker that dies with the event, again and again
    dispatch_all(publisher, source, "job", ["poison"])
    with broker_admin(amqp_uri) as channel:
        for _ in range(3):  # delivered, lost, delivered, lost, delivered, lost: over the limit
            message = wait_until(lambda: channel.basic_get(handler.queue_name), "a delivery")
            channel.basic_reject(message.delivery_tag, requeue=True)
    wait_until(lambda: queue_depth(amqp_uri, handler.dead_letter_queue_name) == 1, "the dead letter")
    with DeadLetterQueue(handler.queue_name, config=Config(broker_url=amqp_uri)) as dlq:
        [letter] = dlq.peek()
    assert (letter.reason, letter.queue, letter.body) == ("delivery_limit", handler.queue_name, b'"poison"')
