"""The transport behaviour suite (tests/unit/transport/behaviour.py) on AmqpTransport and RabbitMQ.

The same tests MemoryTransport passes, against the machine's broker: where the two differ,
the memory twin is the one to fix. Names are unique per test; every queue and exchange a
test named is deleted afterwards.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from amqprpc.testing.broker import broker_admin
from amqprpc.transport.pyamqp import AmqpTransport
from tests.unit.transport.behaviour import *  # noqa: F403  (the suite, collected here)


@pytest.fixture
def made() -> list[AmqpTransport]:
    return []


@pytest.fixture
def names(amqp_uri: str) -> Iterator[Callable[[str], str]]:
    used: list[str] = []

    def name(prefix: str) -> str:
        used.append(f"behaviour-{prefix}-{uuid.uuid4().hex[:8]}")
        return used[-1]

    yield name
    with broker_admin(amqp_uri) as channel:  # missing ones are not an error in RabbitMQ 3.x
        for entity in used:
            channel.queue_delete(entity)
            channel.queue_delete(f"{entity}.retry.100")
            channel.exchange_delete(entity)


@pytest.fixture
def make_transport(amqp_uri: str, made: list[AmqpTransport]) -> Iterator[Callable[..., AmqpTransport]]:
    def make(name: str | None = None, *, start: bool = True, **kwargs: object) -> AmqpTransport:
        transport = AmqpTransport(amqp_uri, name=name or f"behaviour-{uuid.uuid4().hex[:6]}",
                                  **kwargs)  # type: ignore[arg-type]
        made.append(transport)
        if start:
            transport.start()
        return transport

    yield make
    for transport in made:
        transport.stop()
    for transport in made:
        assert not any(t.name == f"amqprpc-io-{transport.name}" and t.is_alive()
                       for t in threading.enumerate()), f"{transport.name}: I/O thread left running"


@pytest.fixture
def lose_connection() -> Callable[[AmqpTransport], None]:
    """Shut our end of the socket down, as a network failure would (the broker is shared:
    it is not touched); the I/O thread sees the stream end and reconnects."""
    def lose(transport: AmqpTransport) -> None:
        transport.call_soon(lambda: transport._conn.transport.sock.shutdown(socket.SHUT_RDWR))
    return lose
