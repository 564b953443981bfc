"""B7 (shared/notes/reliability.md): kill -9 the leader of a service's quorum queues.

A worker, an RPC client and an event publisher use the cluster's failover URL list
(``amqp://...node1/;amqp://...node2/;amqp://...node3/``, tried in order). The worker
declares its quorum queues on node 1, so RabbitMQ's client-local placement makes node 1
their leader. While calls and events flow, node 1's beam is SIGKILLed, in two shapes:

* ``clients-on-leader``: the client and the publisher are on node 1 too, so everyone loses
  their connection with the leader and fails over to node 2 during the election;
* ``clients-on-follower``: the client and the publisher are on node 2 (their list starts
  there) and keep their connections; only the worker fails over.

The invariants are Jepsen's for quorum queues plus ours for callers:

* every call ends in exactly one outcome by its deadline: its own result, or
  ``RpcTimeout``/``ConnectionLost`` (never a hang, never another call's result);
* the worker and the client reconnect to a survivor and serve again;
* no confirmed event is lost: every event whose publish the broker confirmed is handled at
  least once (duplicates are allowed and counted: at-least-once, never exactly-once);
* the killed node comes back, rejoins, and its replicas catch up; the queues drain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import pytest

from amqprpc import (
    BrokerError,
    ClusterRpcClient,
    Config,
    ConnectionLost,
    EventPublisher,
    RpcFuture,
    RpcTimeout,
    ServiceContainer,
    event_handler,
    rpc,
)

from ..waiting import wait_until
from .cluster import RabbitCluster

_log = logging.getLogger(__name__)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

HEARTBEAT = 2.0
CALL_TIMEOUT = 5.0
# How late past its deadline a call may resolve: the client sweeps deadlines periodically
# and a 2-core machine running 3 brokers is slow to schedule. A hang is minutes, not this.
DEADLINE_SLACK = 3.0
PACE = 0.02  # seconds between two calls (and two events) of the load: ~50/s each
RECOVERY_TIMEOUT = 30.0  # recovery takes ~1 s here; 30 s is "never"
POST_FAILOVER_CALLS = 50  # ~1 s of load once everyone has reconnected


class Probe:
    """What the service saw: events handled (by payload number, duplicates counted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: Counter[int] = Counter()

    def handled(self, n: int) -> None:
        with self.lock:
            self.events[n] += 1

    def distinct_events(self) -> set[int]:
        with self.lock:
            return set(self.events)


def make_service(name: str, source: str, probe: Probe) -> type:
    class ClusterService:
        @rpc
        def echo(self, value: Any) -> Any:
            return value

        @event_handler(source, "tick")
        def on_tick(self, payload: dict[str, int]) -> None:
            probe.handled(payload["n"])

    ClusterService.name = name  # type: ignore[attr-defined]
    return ClusterService


@dataclass
class Load:
    """Calls and events sent at a steady pace from two threads until stopped."""

    client: ClusterRpcClient
    publisher: EventPublisher
    service: str
    source: str
    stop: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[int, RpcFuture]] = field(default_factory=list)
    resolved_at: dict[int, float] = field(default_factory=dict)
    events: list[tuple[int, Future[None], float]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._call, self._dispatch):
            thread = threading.Thread(target=target, name=f"load-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} did not stop: a send blocked"

    def results_since(self, since: float) -> int:
        """Calls issued at or after ``since`` (monotonic) that returned their own value."""
        return sum(
            1 for i, f in list(self.calls)
            if f.deadline - f.timeout >= since and f.done() and f.exception() is None
        )

    def state_since(self, since: float) -> str:
        """What became of the calls issued at or after ``since``, for failure messages."""
        seen: Counter[str] = Counter()
        for _, f in list(self.calls):
            if f.deadline - f.timeout >= since:
                error = f.exception() if f.done() else None
                seen["pending" if not f.done() else type(error).__name__ if error else "result"] += 1
        return f"calls since: {dict(seen)}"

    def _call(self) -> None:
        i = 0
        while not self.stop.wait(PACE):
            future = self.client.call_async(self.service, "echo", i, _timeout=CALL_TIMEOUT)
            future.add_done_callback(lambda _, i=i: self.resolved_at.setdefault(i, time.monotonic()))
            self.calls.append((i, future))
            i += 1

    def _dispatch(self) -> None:
        n = 0
        while not self.stop.wait(PACE):
            self.events.append((n, self.publisher.dispatch(self.source, "tick", {"n": n}),
                                time.monotonic()))
            n += 1


@pytest.fixture
def started(rabbit_cluster: RabbitCluster) -> Iterator[Callable[[Any], Any]]:
    """``started(thing)`` registers a container/client/publisher to be stopped after the test."""
    things: list[Any] = []

    def register(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield register
    for thing in reversed(things):
        if isinstance(thing, ServiceContainer):
            thing.kill()
        else:
            thing.stop()


# Measured on RabbitMQ 3.10.8 with raw py-amqp (docs/production.md, "Cluster and partition
# tests"): a channel whose first publish to a quorum queue comes within ~0.2 s of its leader's
# death, before a new leader is elected, has every later publish to that queue nacked for the
# channel's lifetime (40 s and counting); a channel opened 0.5 s later is fine. A failover
# that reconnects at once hits exactly that window: the publisher's events are nacked
# (BrokerError) and the client's requests, sent without confirms, vanish (RpcTimeout) until
# the connection is replaced. The fix belongs in the transport (e.g. replace the channel on a
# nack); strict: this fails loudly once it is fixed, so drop the mark then.
LEADER_CHANNEL_NACKS = pytest.mark.xfail(
    reason="RabbitMQ 3.10 nacks every publish on a channel that first published to a quorum "
           "queue during its leader election; the transport keeps such a channel",
    raises=AssertionError, strict=True,
)


@pytest.mark.parametrize("clients_on", [
    pytest.param("leader", marks=LEADER_CHANNEL_NACKS),
    "follower",
], ids=lambda on: f"clients-on-{on}")
def test_quorum_leader_killed_mid_traffic(rabbit_cluster: RabbitCluster, started, unique_name,
                                          clients_on: str) -> None:
    """B7: kill -9 the queues' leader while calls and events flow; nothing confirmed is lost."""
    cluster = rabbit_cluster
    name, source = unique_name("b7"), unique_name("b7src")
    rpc_queue, event_queue = f"rpc-{name}", f"evt-{source}-tick--{name}.on_tick"
    probe = Probe()
    config = Config(broker_url=cluster.url, heartbeat=HEARTBEAT, queue_type="quorum")
    client_config = config.replace(broker_url=cluster.url_from(0 if clients_on == "leader" else 1))

    container = started(ServiceContainer(make_service(name, source, probe), config))
    container.connection.max_backoff = 1.0  # tests wait for recovery: keep retries brisk
    container.start(wait=True)
    client = started(ClusterRpcClient(config=client_config, timeout=CALL_TIMEOUT))
    client._connection.max_backoff = 1.0
    client.start()
    publisher = started(EventPublisher(config=client_config))
    publisher.connection.max_backoff = 1.0
    publisher.start()
    assert client.call(name, "echo", "ready") == "ready"

    leader = cluster.quorum_leader(rpc_queue)
    assert leader is cluster.nodes[0], (
        f"the worker declared {rpc_queue} on the first node of the URL list, so RabbitMQ's "
        f"client-local placement should make that node its leader, not {leader.nodename}"
    )
    assert cluster.quorum_leader(event_queue) is leader

    load = Load(client, publisher, name, source)
    load.start()
    try:
        wait_until(lambda: load.results_since(0) >= 20 and len(probe.distinct_events()) >= 20,
                   "calls and events to flow", timeout=30)
        generations = (container.connection.generation, client._connection.generation)
        leader.kill()

        # The worker (and, on the leader, the client and the publisher) fail over to a
        # survivor; calls and events sent after that are served again.
        def reconnected() -> bool:
            return container.connection.generation > generations[0] and (
                clients_on == "follower" or client._connection.generation > generations[1])

        wait_until(reconnected, "the worker and the client to reconnect", timeout=RECOVERY_TIMEOUT)
        recovered_at = time.monotonic()
        try:
            wait_until(lambda: load.results_since(recovered_at) >= POST_FAILOVER_CALLS,
                       f"{POST_FAILOVER_CALLS} calls issued after the failover to succeed",
                       timeout=RECOVERY_TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {load.state_since(recovered_at)}; worker connected: "
                                 f"{container.connection.is_connected}, client connected: "
                                 f"{client.is_connected}") from None
        wait_until(lambda: any(sent > recovered_at and n in probe.distinct_events()
                               for n, _, sent in list(load.events)),
                   "an event dispatched after the failover to be handled", timeout=RECOVERY_TIMEOUT)
    finally:
        load.finish()

    new_leader = cluster.quorum_leader(rpc_queue)
    assert new_leader is not leader and new_leader.is_running()

    # Every call: exactly one outcome, by its deadline.
    outcomes: Counter[str] = Counter()
    for i, future in load.calls:
        remaining = future.deadline - time.monotonic()
        try:
            value = future.result(timeout=max(0.0, remaining) + DEADLINE_SLACK)
        except (RpcTimeout, ConnectionLost) as exc:
            assert future.done(), f"call {i} did not end by its deadline: {exc!r}"
            outcomes[type(exc).__name__] += 1
        else:
            assert value == i, f"call {i} got another call's result: {value!r}"
            outcomes["result"] += 1
        late = load.resolved_at[i] - future.deadline
        assert late <= DEADLINE_SLACK, f"call {i} resolved {late:.1f}s after its deadline"
    assert client._caller.pending_count() == 0
    assert outcomes["result"] >= 20 + POST_FAILOVER_CALLS, outcomes

    # Every event: confirmed or failed (never left pending); no confirmed one lost.
    _, not_done = wait_futures([f for _, f, _ in load.events], timeout=RECOVERY_TIMEOUT)
    assert not not_done, f"{len(not_done)} events neither confirmed nor failed"
    confirmed = {n for n, f, _ in load.events if f.exception() is None}
    failed = [f.exception() for _, f, _ in load.events if f.exception() is not None]
    # Not confirmed is not lost: the publisher was told (connection gone, or the broker
    # nacked while the queue had no leader).
    assert all(isinstance(exc, BrokerError) for exc in failed), {
        repr(e) for e in failed}
    wait_until(lambda: confirmed <= probe.distinct_events(),
               "every confirmed event to be handled", timeout=RECOVERY_TIMEOUT)
    lost = confirmed - probe.distinct_events()
    assert not lost, f"{len(lost)} confirmed events lost: {sorted(lost)[:20]}"
    duplicates = sum(probe.events.values()) - len(probe.events)

    # The killed node restarts, rejoins, and its replicas of both queues come back online.
    cluster.heal()
    for queue in (rpc_queue, event_queue):
        cluster.wait_queue_online(queue)
    wait_until(lambda: cluster.queue_info(event_queue)["messages"] == 0,
               "the event queue to drain", timeout=RECOVERY_TIMEOUT, poll=0.5)
    assert client.call(name, "echo", "after", _timeout=CALL_TIMEOUT) == "after"
    _log.warning("B7: calls %s; events confirmed %d, failed %d, handled %d distinct, "
                 "%d duplicates", dict(outcomes), len(confirmed), len(failed), len(probe.events),
                 duplicates)
