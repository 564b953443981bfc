"""What every extension that consumes one queue does the same way: hand off, republish, stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..exceptions import BrokerError
from ..topology import durable_queue

if TYPE_CHECKING:
    from ..extensions import Container
    from ..topology import Arguments
    from ..transport import Delivery, Outgoing, Transport

_log = logging.getLogger(__name__)


class ConsumesQueue:
    """Mixin for an extension with one consumer on its container's connection.

    The subclass declares its topology and consumes in ``setup`` (the transport does both
    again on every reconnect, until ``stop`` cancels the consumer), stores the tag in
    ``_consumer_tag``, and implements ``_handle`` (run on the handler pool).
    """

    container: Container
    queue_name: str
    _connection: Transport
    _consumer_tag: str | None = None

    def stop(self) -> None:
        """Stop taking messages; those already received still run and are acked."""
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None:
            self._connection.cancel(tag)

    def _on_delivery(self, delivery: Delivery) -> None:
        """On the I/O thread: hand the message to the pool at once."""
        self.container.submit(lambda: self._handle(delivery))

    def _handle(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def _republish(self, delivery: Delivery, message: Outgoing, arguments: Arguments | None) -> None:
        """Publish a copy to the queue it names, then ack the original once confirmed.

        The queue is (re)declared right before, once (not on reconnects): a delay queue
        expires when unused, and a deleted DLQ must not swallow the copy.
        """
        connection = self._connection

        def confirmed(error: BaseException | None) -> None:
            if error is None:
                connection.ack(delivery)
            else:  # unacked: the broker delivers the original again
                _log.warning("%s: copy to %s not confirmed (%s); the original will be redelivered",
                             self.queue_name, message.routing_key, error)

        def send() -> None:
            if delivery.generation != connection.generation:
                return  # its connection died: the broker redelivers the original anyway
            try:
                connection.declare(durable_queue(message.routing_key, arguments), remember=False)
            except BrokerError as exc:  # refused: unacked, the original comes back
                _log.warning("%s: cannot declare %s (%s); the original will be redelivered",
                             self.queue_name, message.routing_key, exc)
                return
            connection.publish(message, on_confirm=confirmed)

        connection.call_soon(send)
