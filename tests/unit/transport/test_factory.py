"""create_transport, the one place a connection is built, and the outbox's order rules."""

from __future__ import annotations

from amqprpc import Config
from amqprpc.transport import Outgoing, create_transport
from amqprpc.transport.memory import MemoryTransport
from amqprpc.transport.outbox import Call, Outbox, Publish
from amqprpc.transport.pyamqp import AmqpTransport


def test_a_config_gives_an_amqp_transport_with_its_settings() -> None:
    config = Config(broker_url="amqp://u:p@h:5673/vh", heartbeat=7.0, connect_timeout=2.5)
    transport = create_transport(config, name="svc-1", confirms=False)
    assert isinstance(transport, AmqpTransport)
    assert (transport.name, transport.heartbeat, transport.connect_timeout, transport.confirms) == (
        "svc-1", 7.0, 2.5, False)
    assert (transport.address.host, transport.address.port) == ("h", 5673)
    assert not transport.is_connected  # built, not started


def test_a_memory_url_gives_the_in_memory_transport() -> None:
    transport = create_transport("memory://factory-test", name="t", heartbeat=3.0)
    assert isinstance(transport, MemoryTransport)
    assert transport.broker.name == "factory-test" and transport.heartbeat == 3.0


def test_kept_operations_go_back_ahead_of_later_ones_in_their_order() -> None:
    outbox = Outbox()
    first, second = (Publish(Outgoing("", "q", b"%d" % i), None) for i in range(2))
    later = Call(lambda: None)
    outbox.put(first)
    outbox.put(second)
    taken = outbox.take_all()
    outbox.put(later)  # queued while the I/O thread was offline with the two
    outbox.keep(taken)
    assert [outbox.take() for _ in range(3)] == [first, second, later]
    assert outbox.take() is None and outbox.empty()
