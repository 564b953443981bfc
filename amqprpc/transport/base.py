"""The contract between amqprpc and a broker: what every transport does, and nothing more.

Two transports implement it: :mod:`.pyamqp` (RabbitMQ over py-amqp, the only module that
imports ``amqp``) and :mod:`.memory` (an in-process broker, product code for fast tests).
Both pass the same behaviour suite (``tests/unit/transport``, and again on RabbitMQ).

Threads. A transport owns one I/O thread, started by ``start`` and ended by ``stop``. Every
callback it makes (deliveries, confirms, returns, connection events, ``call_soon`` and
``call_later`` functions) runs on that thread, one at a time: a callback must never block
on the broker, and hands real work to a pool. Methods marked *any thread* are safe from
every thread, including the I/O thread itself.

Topology is data. Owners describe the exchanges, queues and bindings they need as
:data:`Entity` values and hand them to ``declare``; consumers to ``consume``. The transport
declares and consumes again, in the order given, after every (re)connect, before it runs
the ``on_connect`` callbacks and before anything queued goes out. No channel object ever
leaves the transport.

Delivery guarantees. A delivery not acked when its connection dies is redelivered by the
broker; ``ack`` and ``reject`` of a delivery whose connection died (``generation`` older
than the transport's) are dropped, never sent on the new connection. A publish given an
``on_confirm`` callback gets exactly one call: ``None`` once the broker has it, or the
error (``BrokerError`` when refused, ``ConnectionLost`` when the connection died first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "Binding",
    "ConfirmCallback",
    "Delivery",
    "DeliveryCallback",
    "Entity",
    "Exchange",
    "ExchangeType",
    "LostCallback",
    "Outgoing",
    "Queue",
    "QueueInfo",
    "ReturnCallback",
    "Transport",
]

ExchangeType = Literal["direct", "topic", "fanout", "headers"]
Arguments = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange as it is declared; redeclaring it with other flags fails at the broker."""

    name: str
    type: ExchangeType = "topic"
    durable: bool = True
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue as it is declared (RabbitMQ ``x-*`` arguments in ``arguments``)."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Arguments | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """Route messages of ``exchange`` whose routing key matches ``routing_key`` to ``queue``."""

    queue: str
    exchange: str
    routing_key: str


Entity = Exchange | Queue | Binding


@dataclass(slots=True)
class Outgoing:
    """A message ready to publish; ``properties`` are AMQP basic properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)
    mandatory: bool = False


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``generation`` ties it to one connection."""

    tag: int
    generation: int
    body: bytes
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool
    no_ack: bool

    @property
    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = self.properties.get("application_headers") or {}
        return headers


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What a passive declare tells about a queue that exists."""

    name: str
    message_count: int
    consumer_count: int


ConfirmCallback = Callable[[BaseException | None], None]
DeliveryCallback = Callable[[Delivery], None]
ReturnCallback = Callable[[Outgoing, str], None]
LostCallback = Callable[[BaseException], None]


class Transport(Protocol):
    """One connection to a broker (one channel on it), owned by the I/O thread it starts."""

    name: str
    confirms: bool  # publishes are confirmed by the broker (else on_confirm runs on write)
    # After stop(): publishes not confirmed plus deliveries not acked when the connection
    # closed (redelivered); None when the close went unanswered (then nothing sent last is
    # known to have arrived). The container's exit status says so.
    left_undone: int | None

    # ------------------------------------------------------------ lifecycle (owner's thread)

    def start(self, wait: bool = True) -> None:
        """Start the I/O thread; with ``wait``, raise ``BrokerUnreachable`` if the first
        connect fails, else keep retrying in the background."""

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (publishes, acks), give confirms a moment, close."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def generation(self) -> int:
        """Counts connections made; a delivery of an older one can no longer be acked."""

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocked publishing on this connection (a resource alarm), or None."""

    # ------------------------------------------------------------ topology (any thread)

    def declare(self, *entities: Entity, remember: bool = True) -> None:
        """Declare ``entities`` in order, now if connected and after every reconnect.

        With ``remember=False`` they are declared once, ahead of anything this thread queues
        after (a delay queue declared right before the publish that needs it). Raises
        ``BrokerError`` when the broker refuses one (other flags than the existing entity's):
        it is forgotten, and on RabbitMQ the connection is replaced (the channel is closed).
        """

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        prefetch: int | None = None,
        arguments: Arguments | None = None,
    ) -> str:
        """Consume ``queue`` until cancelled, again after every reconnect; returns the tag.

        ``prefetch`` bounds unacked deliveries of this consumer (``basic.qos``, not global).
        """

    def cancel(self, consumer_tag: str, timeout: float = 5.0) -> None:
        """Stop a consumer, waiting up to ``timeout`` for the broker when called off the
        I/O thread. Deliveries already received still run and may be acked."""

    # ------------------------------------------------------------ messages (any thread)

    def publish(self, message: Outgoing, on_confirm: ConfirmCallback | None = None) -> None:
        """Send ``message``; queued while disconnected and sent after the reconnect."""

    def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` (batched with others); dropped if its connection died."""

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        """Reject ``delivery``: back to its queue, or dead-lettered/dropped without requeue."""

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` after every (re)connect, once topology and consumers are back."""

    def on_lost(self, callback: LostCallback) -> None:
        """Run ``callback(error)`` when a connection breaks, and once more at ``stop``."""

    def on_return(self, callback: ReturnCallback) -> None:
        """Run ``callback(message, reply_text)`` when the broker returns a mandatory publish."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread (at once when called from it)."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread after ``delay`` seconds."""

    # ------------------------------------------------------------ admin (not the I/O thread)

    def queue_info(self, queue: str, timeout: float = 5.0) -> QueueInfo | None:
        """Counts of ``queue`` by a passive declare; None when it does not exist."""

    def get(self, queue: str, timeout: float = 5.0) -> Delivery | None:
        """Take one message (to ack or reject like any delivery), or None when empty."""

    def purge(self, queue: str, timeout: float = 5.0) -> int:
        """Drop every ready message of ``queue``; returns how many."""

    def delete_queue(self, queue: str, timeout: float = 5.0) -> None:
        """Delete ``queue`` and what it holds; a missing queue is not an error."""
