"""S1: a bounded chaos soak, in every CI run (marker ``faults``; about a minute).

Three ``amqprpc run`` worker processes serve calls and handle events on the session's
private node. For ``CHAOS_SECONDS`` a client makes ``CALLS`` calls and a publisher
dispatches ``EVENTS`` events at a steady rate, while the test SIGKILLs a random worker
every second or so (a new one takes its place) and, halfway through, restarts the broker.

The invariants (reliability.md §3, Jepsen's checker plus ours for callers):

* every call ends exactly once, by its deadline (plus the deadline sweep's slack): with
  the value it sent, or an error (``RpcTimeout``, ``ConnectionLost``, ``WorkerLost``);
* every event the broker confirmed is handled at least once (duplicates allowed: lost = 0);
* at the end the service queue, the event queue and its DLQ are empty, and no call is
  still pending in the client.

A failure names its seed; ``AMQPRPC_SOAK_SEED=<seed>`` replays the same kill schedule
(the load itself is paced by the clock, so a replay is close, not identical).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amqprpc import ClusterRpcClient, Config, EventPublisher, UnknownService
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
CALLS = 3000
EVENTS = 2000
CHAOS_SECONDS = 30.0
CALL_TIMEOUT = 8.0
SLACK = 3.0  # the client sweeps deadlines once a second; a loaded machine adds a little


@dataclass
class Call:
    value: int
    sent: float
    future: Future[Any]
    done: float | None = None


@dataclass
class Soak:
    """What the load threads did, for the checks at the end."""

    calls: list[Call] = field(default_factory=list)
    events: dict[int, Future[None]] = field(default_factory=dict)
    kills: int = 0
    errors: list[BaseException] = field(default_factory=list)


class WorkerPool:
    """``amqprpc run`` processes of tests/faults/apps/soak.py; kill one, start another."""

    def __init__(self, url: str, env: dict[str, str], logs: Path) -> None:
        self.url, self.env, self.logs = url, env, logs
        self.alive: list[subprocess.Popen[bytes]] = []
        self.all: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> None:
        log = (self.logs / f"worker-{len(self.all)}.log").open("wb")
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "amqprpc.cli", "run", "tests.faults.apps.soak",
                 "--broker", self.url, "--log-level", "WARNING"],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.alive.append(process)
        self.all.append(process)

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.alive)
        victim.kill()
        victim.wait(10)
        self.alive.remove(victim)
        self.spawn()

    def stop(self) -> None:
        for process in self.alive:
            process.send_signal(signal.SIGTERM)
        for process in self.all:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def make_calls(client: ClusterRpcClient, service: str, soak: Soak, start: float) -> None:
    """``CALLS`` calls spread evenly over the chaos window (paced, not waited on)."""
    pace = threading.Event()  # never set: its wait() is the pacing clock
    try:
        for value in range(CALLS):
            pace.wait(max(0.0, start + value * CHAOS_SECONDS / CALLS - time.monotonic()))
            call = Call(value, time.monotonic(), client.call_async(service, "echo", value))
            call.future.add_done_callback(lambda _, call=call: setattr(call, "done", time.monotonic()))
            soak.calls.append(call)
    except BaseException as exc:  # the check at the end reports it
        soak.errors.append(exc)


def dispatch_events(publisher: EventPublisher, source: str, soak: Soak, start: float) -> None:
    pace = threading.Event()
    try:
        for event_id in range(EVENTS):
            pace.wait(max(0.0, start + event_id * CHAOS_SECONDS / EVENTS - time.monotonic()))
            soak.events[event_id] = publisher.dispatch(source, "tick", {"id": event_id})
    except BaseException as exc:
        soak.errors.append(exc)


def handled_ids(folder: Path) -> Counter[int]:
    seen: Counter[int] = Counter()
    for path in folder.glob("*.events"):
        seen.update(int(line) for line in path.read_text().split())
    return seen


def message_count(url: str, queue: str) -> int | None:
    with broker_admin(url) as channel:
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except Exception:  # NOT_FOUND: the queue does not exist
            return None


def test_S1_chaos_soak(rabbit_node: RabbitNode, unique_name, tmp_path: Path) -> None:
    seed = int(os.environ.get("AMQPRPC_SOAK_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    service, source = unique_name("soak"), unique_name("soak-src")
    rpc_queue = f"rpc-{service}"
    event_queue = f"evt-{source}-tick--{service}.record"
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOAK_SERVICE_NAME": service,
           "SOAK_SOURCE": source, "SOAK_EVENTS_DIR": str(events_dir), "AMQPRPC_HEARTBEAT": "2"}
    pool = WorkerPool(rabbit_node.url, env, tmp_path)
    config = Config(broker_url=rabbit_node.url, heartbeat=2.0)
    client = ClusterRpcClient(config=config, timeout=CALL_TIMEOUT)
    publisher = EventPublisher(config=config)
    soak = Soak()
    try:
        for _ in range(WORKERS):
            pool.spawn()
        client._connection.max_backoff = publisher.connection.max_backoff = 1.0
        client.start()
        publisher.start()

        def serving() -> bool:
            try:
                return client.call(service, "echo", -1, _timeout=5) == -1
            except UnknownService:
                return False

        wait_until(serving, "the workers to serve", timeout=30)
        wait_until(lambda: message_count(rabbit_node.url, event_queue) is not None,
                   "the event queue to be declared", timeout=30)

        start = time.monotonic()
        load = [threading.Thread(target=make_calls, args=(client, service, soak, start)),
                threading.Thread(target=dispatch_events, args=(publisher, source, soak, start))]
        for thread in load:
            thread.start()
        restarted = False
        chaos = threading.Event()  # never set: the chaos clock
        while time.monotonic() - start < CHAOS_SECONDS:
            chaos.wait(rng.uniform(0.5, 1.5))
            pool.kill_one(rng)
            soak.kills += 1
            if not restarted and time.monotonic() - start > CHAOS_SECONDS / 2:
                rabbit_node.restart()  # here: the node must be started by the main thread
                restarted = True
        for thread in load:
            thread.join(CHAOS_SECONDS + 30)
        assert not soak.errors, f"seed {seed}: the load threads failed: {soak.errors!r}"
        assert restarted and len(soak.calls) == CALLS and len(soak.events) == EVENTS

        # Every call: one outcome, by its deadline.
        outcomes: Counter[str] = Counter()
        for call in soak.calls:
            try:
                result = call.future.result(timeout=max(0.1, call.sent + CALL_TIMEOUT + SLACK
                                                        - time.monotonic()))
            except Exception as exc:  # a typed error is an outcome; not done is not
                assert call.future.done(), f"seed {seed}: call {call.value} never ended"
                outcomes[type(exc).__name__] += 1
                continue
            assert result == call.value, f"seed {seed}: call {call.value} got {result!r}"
            outcomes["ok"] += 1
        late = [c.value for c in soak.calls if c.done is None or c.done > c.sent + CALL_TIMEOUT + SLACK]
        assert not late, f"seed {seed}: {len(late)} calls ended after their deadline: {late[:10]}"
        assert set(outcomes) <= {"ok", "RpcTimeout", "ConnectionLost", "RemoteError"}, outcomes
        assert outcomes["ok"] > CALLS / 2, f"seed {seed}: too few calls answered: {outcomes}"
        assert client._caller.pending_count() == 0

        # Every confirmed event: handled at least once.
        confirmed = set()
        for event_id, future in soak.events.items():
            try:
                future.result(timeout=30)
                confirmed.add(event_id)
            except Exception:
                pass  # not confirmed (the broker restarted under it): no promise was made
        assert len(confirmed) > EVENTS / 2, f"seed {seed}: too few events confirmed"

        def all_handled() -> bool:
            return confirmed <= set(handled_ids(events_dir))

        wait_until(all_handled, f"every confirmed event to be handled (seed {seed})", timeout=60)
        wait_until(lambda: message_count(rabbit_node.url, rpc_queue) == 0
                   and message_count(rabbit_node.url, event_queue) == 0,
                   f"the queues to drain (seed {seed})", timeout=30)
        assert message_count(rabbit_node.url, f"{event_queue}.dlq") in (None, 0)
    finally:
        publisher.stop()
        client.stop()
        pool.stop()
        with broker_admin(rabbit_node.url) as channel:
            for queue in (rpc_queue, event_queue, f"{event_queue}.dlq"):
                channel.queue_delete(queue)
            channel.exchange_delete(f"{source}.events")
