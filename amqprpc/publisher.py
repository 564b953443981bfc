"""Publishing events: the message, and ``EventPublisher``/``dispatch_event`` for code outside
services (scripts, web apps, the CLI). Inside a service use ``EventDispatcher``.

An event is published on ``<source>.events`` (topic, durable) with the event type as the
routing key, the payload as the body, ``delivery_mode`` 2 (persistent) and a fresh
``message_id`` that stays the same through retries and replays, for handlers that want to
do things once. Publisher confirms are asynchronous: ``dispatch`` returns a future that
the broker's confirm resolves, so a thousand events cost a thousand publishes and no
round trip each.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import Future, wait
from typing import Any

from .config import Config
from .exceptions import BrokerBlocked, BrokerError, ConfigError, ConfirmTimeout, ConnectionLost
from .futures import settle
from .messages import Context, build_event
from .serialization import Codec, codec_named
from .topology import MAX_NAME_LENGTH, event_exchange_entity
from .transport import Outgoing, create_transport

_log = logging.getLogger(__name__)


def event_message(source: str, event_type: str, payload: Any, *, codec: Codec,
                  context: Context | None, header_prefix: str) -> Outgoing:
    """The event as published; raises ConfigError for bad names, TypeError for a payload
    the codec cannot encode (in the dispatching code, where it can be fixed)."""
    check_event_names(source, event_type)
    message = build_event(source, event_type, payload, codec=codec, context=context,
                          header_prefix=header_prefix)
    message.properties["message_id"] = uuid.uuid4().hex
    message.mandatory = True  # an event no queue takes comes back: see UnroutableEvents
    return message


class UnroutableEvents:
    """A return callback that counts events the broker could route to no queue (R3).

    Events stay fire-and-forget (the dispatch is still confirmed, nobody raises), but an
    event nobody subscribes to is usually a typo or a handler not deployed yet: the first
    of each exchange and event type is logged as a warning, and every one is counted in
    ``counts``. Memory grows with distinct event types only. Runs on the I/O thread.
    """

    def __init__(self, exchange: str | None = None) -> None:
        self.exchange = exchange  # only this exchange's events (None: every ``*.events``)
        self.counts: dict[tuple[str, str], int] = {}

    def __call__(self, message: Outgoing, reply_text: str) -> None:
        if self.exchange is not None and message.exchange != self.exchange:
            return
        if not message.exchange.endswith(".events"):
            return  # a request: the caller that sent it handles its return
        key = (message.exchange, message.routing_key)
        count = self.counts[key] = self.counts.get(key, 0) + 1
        if count == 1:
            _log.warning("event %r on exchange %r reached no queue (%s): nobody subscribes to "
                         "it; further ones are only counted", message.routing_key,
                         message.exchange, reply_text)


def check_event_names(source: str, event_type: str) -> None:
    """Source and event type become an exchange name and a routing key: say so if they can't."""
    for what, value in (("event source", source), ("event type", event_type)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
        if len(value.encode("utf-8")) > MAX_NAME_LENGTH - len(".events"):
            raise ConfigError(f"{what} {value[:40]!r}... is too long for the broker")


class EventPublisher:
    """A connection for dispatching events from outside a service; reusable and thread-safe.

    ::

        with EventPublisher("amqp://guest:guest@localhost/") as events:
            for order in orders:
                events.dispatch("orders", "order_created", order)
        # leaving the block waits for every confirm and raises if one failed

    It declares ``<source>.events`` before the first event of each source (publishing to a
    missing exchange would close the channel). It owns one connection and its I/O thread,
    from ``start()`` to ``stop()``.
    """

    def __init__(self, broker_url: str | None = None, *, config: Config | None = None,
                 context: Context | None = None, name: str | None = None) -> None:
        config = config or Config()
        self.config = config.replace(broker_url=broker_url) if broker_url else config
        self.context = dict(context or {})
        self._codec = codec_named(self.config.serializer)
        self.connection = create_transport(self.config, name=name or f"events-{os.getpid()}")
        self._unroutable = UnroutableEvents()
        self.connection.on_return(self._unroutable)
        # Sources whose exchange this transport declared (and declares again on every
        # reconnect): written on the I/O thread, read by dispatchers.
        self._declared: set[str] = set()
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> EventPublisher:
        self.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                self.flush(self.config.rpc_timeout)
        finally:
            self.stop()

    @property
    def unroutable(self) -> dict[tuple[str, str], int]:
        """Events the broker routed to no queue, by ``(exchange, event type)``."""
        return self._unroutable.counts

    def start(self, wait: bool = True) -> None:
        """Connect (raising BrokerUnreachable at once with ``wait``, else retrying)."""
        self.connection.start(wait=wait)

    def stop(self, timeout: float = 5.0) -> None:
        """Close; events still unconfirmed fail with ConnectionLost (nothing waits forever)."""
        self.connection.stop(timeout)
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            settle(future, ConnectionLost("the event publisher stopped before the broker "
                                          "confirmed this event"))

    def dispatch(self, source: str, event_type: str, payload: Any, *,
                 context: Context | None = None) -> Future[None]:
        """Publish an event; the future resolves when the broker has it (or fails)."""
        merged = {**self.context, **(context or {})}
        message = event_message(source, event_type, payload, codec=self._codec, context=merged,
                                header_prefix=self.config.header_prefix)
        future: Future[None] = Future()
        blocked = self.connection.blocked_reason
        if blocked is not None:  # a resource alarm: fail now rather than time out later
            settle(future, BrokerBlocked(f"{source}.{event_type}: the broker refuses messages "
                                         f"for now ({blocked})"))
            return future
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        if source in self._declared:  # the common case: a plain publish, batched by the I/O thread
            self.connection.publish(message, on_confirm=lambda error: settle(future, error))
        else:
            self.connection.call_soon(lambda: self._send(source, message, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event dispatched so far is confirmed; raise the first failure.

        Raises ConfirmTimeout (a TimeoutError) when confirms are still missing after ``timeout`` seconds.
        """
        with self._lock:
            pending = list(self._pending)
        done, not_done = wait(pending, timeout)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
        if not_done:
            raise ConfirmTimeout(f"{len(not_done)} events not confirmed by the broker "
                               f"within {timeout:g}s")

    # ------------------------------------------------------------ I/O thread

    def _send(self, source: str, message: Outgoing, future: Future[None]) -> None:
        if future.done():  # stopped meanwhile
            return
        if source not in self._declared:
            exchange = event_exchange_entity(source)
            try:
                self.connection.declare(exchange)
            except BrokerError as exc:  # refused: the transport replaces its channel
                settle(future, BrokerError(f"cannot declare exchange {exchange.name!r}: {exc}"))
                return
            self._declared.add(source)
        self.connection.publish(message, on_confirm=lambda error: settle(future, error))

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)


def dispatch_event(source: str, event_type: str, payload: Any, *, broker_url: str | None = None,
                   config: Config | None = None, context: Context | None = None,
                   timeout: float | None = None) -> None:
    """Publish one event as ``source`` and wait for the broker's confirm.

    It opens and closes a connection: to send many events, keep an ``EventPublisher``.
    Raises BrokerUnreachable, BrokerError (refused) or TimeoutError (no confirm within
    ``timeout``, default the config's ``rpc_timeout``).
    """
    with EventPublisher(broker_url, config=config, name=f"dispatch-{os.getpid()}") as publisher:
        future = publisher.dispatch(source, event_type, payload, context=context)
        future.result(publisher.config.rpc_timeout if timeout is None else timeout)
