"""Tier-2 fault tests: a 3-node RabbitMQ cluster (and network partitions), opt-in.

They cost minutes of CPU on a 2-core machine, so a plain ``pytest`` (what CI runs) skips
them without starting any node. Run them with::

    AMQPRPC_TEST_CLUSTER=1 python -m pytest -p no:cacheprovider tests/cluster

Every test here carries the ``cluster`` marker (``-m cluster`` selects them, ``-m "not
cluster"`` leaves them out). See docs/production.md, "Cluster and partition tests".

* ``rabbit_cluster`` (session): a started :class:`RabbitCluster` of 3 private nodes on
  loopback (own ports, names, cookie and data dirs; never the machine's broker on 5672),
  cleaned up at the end. After each test that used it, frozen nodes are thawed and killed
  or stopped ones started again (they rejoin with their data), so faults don't leak.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.rabbit_node import reap_orphans

from .cluster import RabbitCluster

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


@pytest.fixture(scope="session")
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


@pytest.fixture(autouse=True)
def _heal_rabbit_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo a kill, stop or freeze of cluster nodes once the test is over."""
    yield
    if "rabbit_cluster" in request.fixturenames:
        cluster: RabbitCluster = request.getfixturevalue("rabbit_cluster")
        cluster.heal()
