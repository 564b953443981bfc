"""``EventSubscriber``: events for a program that is not a service (the bridge's WebSocket hub).

A service handles events with ``@event_handler``: durable queues, acks, retries, dead
letters. A program that only *shows* events (a WebSocket feed, a dashboard) wants the
opposite: a live stream that costs nothing when it goes away. So the subscriber has one
queue of its own, exclusive and auto-delete (``topology.subscriber_queue``), bound to
``<source>.events`` once per ``subscribe(source, event_type)``, consumed without acks,
and capped on the broker (``max_queued``, oldest dropped first). Delivery is at most once:
an event published while the subscriber is disconnected is not seen.

::

    subscriber = EventSubscriber(config, on_event=lambda source, type_, payload: ...)
    subscriber.start()
    subscriber.subscribe("orders", "order_paid")   # any thread; idempotent
    subscriber.stop()

``on_event(source, event_type, payload)`` runs on the transport's I/O thread: it must
not block (hand the event to your loop, as the bridge does with ``call_soon_threadsafe``).
Payloads are decoded within the config's decode limits; one that cannot be is logged
and dropped.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from .config import Config
from .exceptions import MalformedRequest
from .publisher import check_event_names
from .serialization import DecodeLimits, decode
from .topology import event_exchange, event_exchange_entity, subscriber_queue
from .transport import Binding, Delivery, create_transport

_log = logging.getLogger(__name__)

EventCallback = Callable[[str, str, Any], None]
_EVENTS_SUFFIX = ".events"


class EventSubscriber:
    """One connection, one exclusive queue, a binding per subscribed event; start/stop owned by you."""

    def __init__(self, config: Config, on_event: EventCallback, *, name: str = "event-subscriber",
                 max_queued: int = 10_000) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self._on_event = on_event
        self._limits = DecodeLimits.from_config(config)
        self._connection = create_transport(config, name=name)
        self._queue = subscriber_queue(f"{name}-{uuid.uuid4().hex}", max_queued)
        self._subscribed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._started = False

    @property
    def queue_name(self) -> str:
        return self._queue.name

    @property
    def subscriptions(self) -> frozenset[tuple[str, str]]:
        with self._lock:
            return frozenset(self._subscribed)

    def start(self) -> None:
        """Connect (``BrokerUnreachable`` if the broker cannot be reached), declare, consume."""
        self._connection.declare(self._queue)
        self._connection.consume(self._queue.name, self._on_delivery, no_ack=True, exclusive=True)
        self._connection.start(wait=True)
        self._started = True

    def stop(self) -> None:
        """Close the connection; the broker deletes the queue with it."""
        if self._started:
            self._started = False
            self._connection.stop()

    def subscribe(self, source: str, event_type: str) -> None:
        """Bind the queue to ``source``'s ``event_type`` events (again after every reconnect)."""
        check_event_names(source, event_type)
        key = (source, event_type)
        with self._lock:
            if key in self._subscribed:
                return
            self._subscribed.add(key)
        try:
            self._connection.declare(event_exchange_entity(source),
                                     Binding(self._queue.name, event_exchange(source), event_type))
        except BaseException:
            with self._lock:
                self._subscribed.discard(key)
            raise

    def _on_delivery(self, delivery: Delivery) -> None:
        """On the I/O thread: decode and hand on; never raises into the transport."""
        exchange = delivery.exchange
        if not exchange.endswith(_EVENTS_SUFFIX):
            return
        source = exchange[:-len(_EVENTS_SUFFIX)]
        try:
            payload = decode(delivery.body, delivery.properties.get("content_type"), self._limits)
        except MalformedRequest as exc:
            _log.warning("%s: event %s.%s dropped, it cannot be decoded: %s", self._queue.name,
                         source, delivery.routing_key, exc)
            return
        try:
            self._on_event(source, delivery.routing_key, payload)
        except Exception:
            _log.exception("%s: on_event failed for %s.%s", self._queue.name, source,
                           delivery.routing_key)
