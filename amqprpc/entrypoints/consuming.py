"""What every extension that consumes one queue does the same way: hand off, stop, kill."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..containers import ServiceContainer
    from ..transport import BrokerConnection, Delivery


class ConsumesQueue:
    """Mixin for an extension with one consumer on its container's connection.

    The subclass declares and consumes in an ``on_connect`` callback (skipping it once
    ``_stopping`` is set, so a reconnect never re-consumes a stopped queue), stores the
    tag in ``_consumer_tag``, and implements ``_handle`` (run on the handler pool).
    """

    container: ServiceContainer
    _connection: BrokerConnection
    _consumer_tag: str | None = None
    _stopping: bool = False

    def stop(self) -> None:
        """Stop taking messages; those already received still run and are acked."""
        self._stopping = True
        tag, self._consumer_tag = self._consumer_tag, None
        self._connection.cancel_and_wait(tag)

    def kill(self) -> None:
        self._stopping = True

    def _on_delivery(self, delivery: Delivery) -> None:
        """On the I/O thread: hand the message to the pool at once."""
        self.container.submit(lambda: self._handle(delivery))

    def _handle(self, delivery: Delivery) -> None:
        raise NotImplementedError
