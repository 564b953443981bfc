"""Several broker nodes in one URL (``amqp://a/;amqp://b/``): connections move on to the next.

Node "a" is a fault proxy in front of the private node, node "b" the node itself: the
proxy refusing and resetting plays a cluster node that died.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from amqprpc import BrokerUnreachable, ClusterRpcClient, Config, rpc
from amqprpc.containers import ServiceContainer
from amqprpc.devservers import free_port
from amqprpc.transport.pyamqp import AmqpTransport

from ..waiting import wait_until
from .proxy import FaultProxy
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def dead_url() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there


def test_starts_on_the_first_node_that_answers(rabbit_node: RabbitNode) -> None:
    connection = AmqpTransport(f"{dead_url()};{rabbit_node.url}", name="failover-start")
    connection.start(wait=True)
    try:
        assert connection.is_connected
        assert connection.address == connection.addresses[1]
    finally:
        connection.stop()


def test_start_names_every_node_when_none_answers() -> None:
    first, second = dead_url(), dead_url()
    connection = AmqpTransport(f"{first};{second}", name="failover-none", connect_timeout=1)
    with pytest.raises(BrokerUnreachable) as raised:
        connection.start(wait=True)
    message = str(raised.value)
    for url in (first, second):
        assert url.rsplit("@", 1)[1].rstrip("/") in message


def test_a_worker_and_a_client_move_to_the_next_node_when_theirs_dies(
    rabbit_node: RabbitNode, fault_proxy: FaultProxy
) -> None:
    urls = f"{fault_proxy.url_for(rabbit_node.url)};{rabbit_node.url}"
    config = Config(broker_url=urls, heartbeat=2.0)

    class Echo:
        name = f"failover-{uuid.uuid4().hex[:8]}"

        @rpc
        def echo(self, value: Any) -> Any:
            return value

    container = ServiceContainer(Echo, config)
    container.start()
    try:
        with ClusterRpcClient(config=config, timeout=5) as client:
            assert client.call(Echo.name, "echo", 1) == 1
            assert fault_proxy.connection_count() == 2  # both went through node "a"
            generation = container.connection.generation
            fault_proxy.refuse()  # node "a" dies and stays down
            fault_proxy.reset()

            def serves_again() -> bool:
                try:
                    return client.call(Echo.name, "echo", 2) == 2
                except Exception:  # ConnectionLost, RpcTimeout, UnknownService while moving
                    return False

            wait_until(serves_again, "calls to work again through node b", timeout=30)
            assert container.connection.generation > generation
            assert container.connection.address == container.connection.addresses[1]
            assert fault_proxy.connection_count() == 0
    finally:
        container.stop()
