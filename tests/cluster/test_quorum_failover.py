"""B7 (shared/notes/reliability.md): kill -9 the leader of a service's quorum queues.

A worker, an RPC client and an event publisher use the cluster's failover URL list
(``amqp://...node1/;amqp://...node2/;amqp://...node3/``, tried in order). The worker
declares its quorum queues on node 1, so RabbitMQ's client-local placement makes node 1
their leader. While calls and events flow, node 1's beam is SIGKILLed, in two shapes:

* ``clients-on-leader``: the client and the publisher are on node 1 too, so everyone loses
  their connection with the leader and fails over to node 2 during the election. This is
  the case that found RabbitMQ 3.10.8 nacking, for its whole life, every publish of a
  channel whose first publish to a quorum queue fell in the election (docs/production.md);
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
import time

import pytest

from ..waiting import wait_until
from .cluster import RabbitCluster
from .traffic import (
    CALL_TIMEOUT,
    RECOVERY_TIMEOUT,
    Load,
    Probe,
    check_calls,
    check_events,
    deploy,
    make_service,
    wait_served_since,
)

_log = logging.getLogger(__name__)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

POST_FAILOVER_CALLS = 50  # ~1 s of load once everyone has reconnected

@pytest.mark.parametrize("clients_on", ["leader", "follower"], ids=lambda on: f"clients-on-{on}")
def test_quorum_leader_killed_mid_traffic(rabbit_cluster: RabbitCluster, started, unique_name,
                                          clients_on: str) -> None:
    """B7: kill -9 the queues' leader while calls and events flow; nothing confirmed is lost."""
    cluster = rabbit_cluster
    name, source = unique_name("b7"), unique_name("b7src")
    rpc_queue, event_queue = f"rpc-{name}", f"evt-{source}-tick--{name}.on_tick"
    probe = Probe()
    container, client, publisher = deploy(
        started, make_service(name, source, probe), worker_url=cluster.url,
        client_url=cluster.url_from(0 if clients_on == "leader" else 1))
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
        wait_served_since(load, probe, time.monotonic(), POST_FAILOVER_CALLS, "the failover",
                          extra=f"; client connected: {client.is_connected}")
    finally:
        load.finish()

    new_leader = cluster.quorum_leader(rpc_queue)
    assert new_leader is not leader and new_leader.is_running()
    outcomes = check_calls(load, client)
    assert outcomes["result"] >= 20 + POST_FAILOVER_CALLS, outcomes
    events = check_events(load, probe)

    # The killed node restarts, rejoins, and its replicas of both queues come back online.
    cluster.heal()
    for queue in (rpc_queue, event_queue):
        cluster.wait_queue_online(queue)
    wait_until(lambda: cluster.queue_info(event_queue)["messages"] == 0,
               "the event queue to drain", timeout=RECOVERY_TIMEOUT, poll=0.5)
    assert client.call(name, "echo", "after", _timeout=CALL_TIMEOUT) == "after"
    _log.warning("B7 clients-on-%s: calls %s; events %s", clients_on, dict(outcomes), events)
