"""Tier-2 fault tests: a 3-node RabbitMQ cluster (and network partitions), opt-in.

They cost minutes of CPU on a 2-core machine, so a plain ``pytest`` (what CI runs) skips
them without starting any node. Run them with::

    AMQPRPC_TEST_CLUSTER=1 python -m pytest -p no:cacheprovider tests/cluster

Every test here carries the ``cluster`` marker (``-m cluster`` selects them, ``-m "not
cluster"`` leaves them out). See docs/production.md, "Cluster and partition tests".

* ``rabbit_cluster`` (module scope: one cluster at a time on 2 cores): a started
  :class:`RabbitCluster` of 3 private nodes on loopback (own ports, names, cookie and data
  dirs; never the machine's broker on 5672), deleted after the module. After each test
  that used it, frozen nodes are thawed and killed or stopped ones started again (they
  rejoin with their data), so faults don't leak.
* ``netns_cluster`` (per test): the same, each node in a network namespace of its own, so a
  test can partition them (B8); skipped with the reason where namespaces are unusable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amqprpc import ServiceContainer
from tests.faults.rabbit_node import reap_orphans

from .cluster import RabbitCluster
from .netns import NetnsCluster, netns_unavailable, reap_orphan_namespaces

OPT_IN_ENV = "AMQPRPC_TEST_CLUSTER"
SKIP_REASON = (
    f"cluster/partition tests start 3 RabbitMQ nodes (minutes of CPU); opt in with "
    f"{OPT_IN_ENV}=1 python -m pytest tests/cluster"
)


def cluster_tests_enabled() -> bool:
    return os.environ.get(OPT_IN_ENV, "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every ``cluster`` test unless opted in: no fixture of theirs ever runs then."""
    if cluster_tests_enabled():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    if not cluster_tests_enabled():  # a test that asked for it without the marker
        pytest.skip(SKIP_REASON)
    reap_orphans()  # nodes and directories of earlier sessions that were killed hard
    cluster = RabbitCluster(size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def netns_cluster() -> Iterator[NetnsCluster]:
    """3 nodes in network namespaces, for partitions; skipped where namespaces are unusable.

    A fresh cluster for every test (~18 s), so that no partition's after-effects (see
    test_partition.py on replicas) reach the next test.

    ``pause_minority``: a node that sees itself in the minority pauses (closes its clients'
    connections, refuses new ones) until the partition heals, the setting RabbitMQ
    recommends for a 3-node cluster. ``net_ticktime`` 8 s (default 60) detects a partition
    in ~8-10 s instead of ~60: a test-only setting.
    """
    if not cluster_tests_enabled():
        pytest.skip(SKIP_REASON)
    unavailable = netns_unavailable()
    if unavailable:
        pytest.skip(f"B8 partitions need network namespaces: {unavailable}")
    reap_orphans()
    reap_orphan_namespaces()
    cluster = NetnsCluster(
        size=3,
        rabbitmq_conf="cluster_partition_handling = pause_minority",
        advanced_config="[{kernel, [{net_ticktime, 8}]}].",
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(autouse=True)
def _heal_rabbit_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo a kill, stop or freeze of the module's cluster nodes once the test is over."""
    yield
    if "rabbit_cluster" in request.fixturenames:
        cluster: RabbitCluster = request.getfixturevalue("rabbit_cluster")
        cluster.heal()


@pytest.fixture
def started() -> Iterator[Callable[[Any], Any]]:
    """``started(thing)`` registers a container, client or publisher to stop after the test."""
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
