"""Fixtures for fault tests: a private RabbitMQ node and a fault proxy in front of it.

* ``rabbit_node`` (session): one started :class:`RabbitNode`, booted once per session
  because a boot costs ~10 s of CPU; stopped and deleted at the end (and the leftovers of
  earlier, hard-killed sessions are reaped first). Tests may kill, freeze
  or stop it: after every test that used it, it is thawed and, if it no longer runs,
  started again, so one test's fault never leaks into the next.
* ``rabbit_node_factory`` (function): ``make(**kwargs)`` starts an extra node with its own
  settings (e.g. a short ``consumer_timeout``); every node made is cleaned up after the test.
* ``fault_proxy`` (function): a :class:`FaultProxy` in front of ``rabbit_node``, without
  toxics. Point the component under test at ``fault_proxy.url_for(rabbit_node.url)`` and
  the rest straight at ``rabbit_node.url``, so each fault hits one component only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .proxy import FaultProxy
from .rabbit_node import RabbitNode, reap_orphans


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    reap_orphans()  # nodes and directories of earlier sessions that were killed hard
    node = RabbitNode()
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


@pytest.fixture(autouse=True)
def _heal_rabbit_node(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo a freeze, kill or stop of the session node once the test is over."""
    yield
    if "rabbit_node" in request.fixturenames:
        node: RabbitNode = request.getfixturevalue("rabbit_node")
        node.thaw()
        if not node.is_running():
            node.start()


@pytest.fixture
def rabbit_node_factory() -> Iterator[Callable[..., RabbitNode]]:
    nodes: list[RabbitNode] = []

    def make(**kwargs: Any) -> RabbitNode:
        node = RabbitNode(**kwargs)
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.cleanup()


@pytest.fixture
def fault_proxy(rabbit_node: RabbitNode) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        yield proxy
