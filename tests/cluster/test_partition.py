"""B8 (shared/notes/reliability.md): a network partition, minority against majority.

Three nodes, each in its own network namespace (tests/cluster/netns.py), with
``cluster_partition_handling = pause_minority`` and ``net_ticktime`` 8 s. The worker
declares its quorum queues on node 1 (so node 1 leads them). While calls and events flow,
node 1 is cut off from the other two (its bridge port goes down; clients still reach every
node). Node 1 sees itself in the minority and pauses, which drops its clients'
connections; the majority elects new leaders; the worker fails over to node 2. Then the
partition heals. Two shapes:

* ``clients-on-majority``: the client and the publisher use a list that starts at node 2,
  so they keep their connections and publish into queues whose leader just vanished;
* ``clients-on-minority``: they are on node 1 with the worker and fail over with it, while
  the majority elects (the case that found RabbitMQ's nacking channels, see B7).

What must hold (Jepsen's checker for quorum queues, plus ours for callers):

* every call ends in exactly one outcome by its deadline (its result, ``RpcTimeout`` or
  ``ConnectionLost``), during the partition as well: no caller hangs;
* the worker serves again from the majority while the partition lasts;
* after the heal, node 1 rejoins the cluster, traffic is served, no confirmed event is lost
  (duplicates allowed and counted), and the queues drain. Whether node 1's replicas run
  again is logged, not asserted (see the note in the test).
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.faults.rabbit_node import RabbitNodeError

from ..waiting import wait_until
from .netns import NetnsCluster
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

# net_ticktime 8 s: a node is declared down after 8-10 s of silence, then the minority pauses
# and the majority elects. 90 s is "never".
PARTITION_DETECTION_TIMEOUT = 90.0
SERVED_CALLS = 50  # ~1 s of load served after each change


@pytest.mark.parametrize("clients_on", ["majority", "minority"], ids=lambda on: f"clients-on-{on}")
def test_minority_partition_of_the_leader(netns_cluster: NetnsCluster, started, unique_name,
                                          clients_on: str) -> None:
    """B8: cut the queues' leader off; calls end by their deadline, nothing confirmed is lost."""
    cluster = netns_cluster
    name, source = unique_name("b8"), unique_name("b8src")
    rpc_queue, event_queue = f"rpc-{name}", f"evt-{source}-tick--{name}.on_tick"
    probe = Probe()
    container, client, publisher = deploy(
        started, make_service(name, source, probe), worker_url=cluster.url,
        client_url=cluster.url_from(1 if clients_on == "majority" else 0))
    assert client.call(name, "echo", "ready") == "ready"
    leader = cluster.quorum_leader(rpc_queue)
    assert leader is cluster.nodes[0], f"expected node 1 to lead {rpc_queue}, not {leader.nodename}"

    load = Load(client, publisher, name, source)
    load.start()
    try:
        wait_until(lambda: load.results_since(0) >= 20 and len(probe.distinct_events()) >= 20,
                   "calls and events to flow", timeout=30)
        generation = container.connection.generation
        cut_at = time.monotonic()
        cluster.isolate(0)

        # Node 1 pauses: the worker loses it and fails over to the majority, which serves.
        wait_until(lambda: container.connection.generation > generation,
                   "the worker to fail over from the paused minority node",
                   timeout=PARTITION_DETECTION_TIMEOUT)
        detected_after = time.monotonic() - cut_at
        wait_served_since(load, probe, time.monotonic(), SERVED_CALLS, "the worker's failover")
        assert cluster.quorum_leader(rpc_queue) is not leader

        # Heal: node 1 resumes and rejoins; traffic keeps being served meanwhile.
        healed_at = time.monotonic()
        cluster.heal_partition()
        cluster.wait_all_running(PARTITION_DETECTION_TIMEOUT)
        rejoined_after = time.monotonic() - healed_at
        wait_served_since(load, probe, time.monotonic(), SERVED_CALLS, "the heal")
    finally:
        load.finish()

    # Not asserted: whether node 1's replicas of the queues run again. RabbitMQ 3.10.8
    # restarted them within ~4 s of the heal in about half the runs and not within 90 s in
    # the others (no log line about the queue on that node after the partition; without
    # traffic, 5 partitions in a row all came back). The queues keep a majority either way,
    # which is what the invariants below rely on. See docs/production.md.
    replicas = {queue: _offline_members(cluster, queue) for queue in (rpc_queue, event_queue)}

    outcomes = check_calls(load, client)
    events = check_events(load, probe)
    wait_until(lambda: cluster.queue_info(event_queue)["messages"] == 0,
               "the event queue to drain", timeout=RECOVERY_TIMEOUT, poll=0.5)
    assert client.call(name, "echo", "after", _timeout=CALL_TIMEOUT) == "after"
    _log.warning("B8 clients-on-%s: worker failed over %.1fs after the cut; node rejoined "
                 "%.1fs after the heal; calls %s; events %s; replicas offline after the heal: "
                 "%s", clients_on, detected_after, rejoined_after, dict(outcomes), events, replicas)


def _offline_members(cluster: NetnsCluster, queue: str) -> list[str]:
    """Members of ``queue`` not running, after giving them 10 s to come back."""
    try:
        cluster.wait_queue_online(queue, timeout=10)
    except RabbitNodeError:
        info = cluster.queue_info(queue)
        return sorted(set(info.get("members") or ()) - set(info.get("online") or ()))
    return []
