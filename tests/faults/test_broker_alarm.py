"""B4: a real memory alarm on a private node. Publishers fail fast, nothing hangs, and
everything works again once the alarm clears."""

from __future__ import annotations

import pytest

from amqprpc import (
    BrokerBlocked,
    ClusterRpcClient,
    Config,
    EventPublisher,
    RpcTimeout,
    ServiceContainer,
    rpc,
)

from ..waiting import wait_until
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


class Alarmed:
    name = "alarmed"

    @rpc
    def echo(self, value: int) -> int:
        return value


def test_B4_memory_alarm_fails_publishes_fast_and_recovers(rabbit_node: RabbitNode, unique_name):
    cls = type("Alarmed", (Alarmed,), {"name": unique_name("alarmed")})
    config = Config(broker_url=rabbit_node.url, heartbeat=2.0)
    container = ServiceContainer(cls, config)
    container.start()
    client = ClusterRpcClient(config=config, timeout=30)
    client.start()
    events = EventPublisher(rabbit_node.url, config=config)
    events.start()
    try:
        assert client.call(cls.name, "echo", 1) == 1
        events.dispatch(cls.name, "tick", {}).result(10)
        rabbit_node.ctl("set_vm_memory_high_watermark", "0.0001")
        try:
            # RabbitMQ blocks a connection at its first publish under the alarm: that publish
            # is held (its call ends by its own deadline); from then on we know, and fail fast.
            with pytest.raises((RpcTimeout, BrokerBlocked)):
                client.call(cls.name, "echo", 2, _timeout=2)
            held = events.dispatch(cls.name, "tick", {})
            wait_until(lambda: client.blocked_reason is not None and events.connection.blocked_reason,
                       "the broker to block the publishers", timeout=30)
            # A 30 s timeout: BrokerBlocked now, not RpcTimeout at the deadline.
            with pytest.raises(BrokerBlocked, match="refuses messages"):
                client.call(cls.name, "echo", 3)
            with pytest.raises(BrokerBlocked):
                events.dispatch(cls.name, "tick", {}).result(1)
        finally:
            rabbit_node.ctl("set_vm_memory_high_watermark", "0.4")
        wait_until(lambda: client.blocked_reason is None, "the alarm to clear", timeout=30)
        assert client.call(cls.name, "echo", 4) == 4
        held.result(30)  # the publish the broker held is confirmed once the alarm clears
        events.dispatch(cls.name, "tick", {}).result(10)
    finally:
        events.stop()
        client.stop()
        container.stop()
