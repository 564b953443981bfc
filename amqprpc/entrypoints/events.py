"""``@event_handler(source, event_type)``: run a method for every event another service dispatches.

Topology per handler type (the queues Nameko 2.x declares, so both interoperate)::

    SERVICE_POOL (default): one queue per service + method; the instances of a service
    compete for it, so each event is handled once per (service, method).

        [<source>.events] --(event_type)--> evt-<source>-<type>--<svc>.<method> --> svc #1
                                                                                 \\-> svc #2

    SINGLETON: one queue for the whole cluster; each event is handled once, by any one
    handler of any service.

        [<source>.events] --(event_type)--> evt-<source>-<type> --> svc-a, svc-b, ...

    BROADCAST: one queue per instance; every instance handles every event. By default the
    id is random, new at each start, and the queue exclusive and auto-delete: an instance
    gets the events dispatched while it runs. With ``broadcast_identifier`` (a hostname, a
    configured name) the id is stable and the queue durable, not exclusive, not
    auto-delete (Nameko's reliable broadcast): a restarted instance gets what was
    dispatched while it was down, and instances sharing one id compete for its events.

        [<source>.events] --(event_type)--> evt-<source>-<type>--<svc>.<method>-<id1> --> #1
                           \\-------------> evt-<source>-<type>--<svc>.<method>-<id2> --> #2

Delivery is at least once: an event is acked only after the handler returned, or after
the copy that retries or dead-letters it is confirmed by the broker. A handler that raises
is retried ``max_attempts - 1`` times with exponential backoff (``retry_delay`` doubling up
to ``max_retry_delay``) through ``<queue>.retry.<ms>`` delay queues, then dead-lettered to
``<queue>.dlq`` with its error and attempt count. An event that cannot be decoded goes to
the DLQ at once. On a classic queue, an event the broker redelivers (the worker that had it
died, or lost its connection, before the ack) counts as a failed attempt too: an event
that kills every worker taking it ends in the DLQ instead of looping (quorum queues have
the broker count deliveries). The worker keeps consuming whatever happens. See
docs/events.md.
"""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, Final

from ..dead_letters import Received, RetryPolicy, attempts_of, dead_letter, retry_copy
from ..exceptions import AmqpRpcError, ConfigError, MalformedRequest
from ..extensions import Entrypoint, ExcInfo, WorkerContext
from ..messages import decode_context
from ..publisher import check_event_names
from ..serialization import DecodeLimits, decode
from ..topology import (
    BROADCAST,
    HANDLER_TYPES,
    SERVICE_POOL,
    check_name,
    dead_letter_queue,
    dead_letter_queue_arguments,
    delay_queue,
    delay_queue_arguments,
    durable_queue,
    event_exchange,
    event_exchange_entity,
    handler_queue,
    service_queue_arguments,
)
from ..transport import Binding, Delivery, Entity, Queue, Transport
from .consuming import ConsumesQueue

_log = logging.getLogger(__name__)


class WorkerLost(AmqpRpcError):
    """An earlier delivery of the event never finished: what a redelivery records as its error."""

BroadcastIdentifier = str | Callable[[], str]

# The queue-name characters of the AMQP 0-9-1 grammar: safe for every broker and tool, and
# what hostnames and configured instance names are made of.
_BROADCAST_ID: Final = re.compile(r"[A-Za-z0-9_.:-]+")


class EventHandler(ConsumesQueue, Entrypoint):
    """Handle ``event_type`` events of the service ``source``; the method gets the payload.

    ``handler_type``: ``SERVICE_POOL``, ``SINGLETON`` or ``BROADCAST`` (see the module).
    ``max_attempts``: handler runs before the event is dead-lettered (1: no retry).
    ``retry_delay``/``max_retry_delay``: seconds before the first retry, and the cap as
    the delay doubles. ``expected_exceptions`` are logged as warnings, not errors (they
    are retried all the same). ``reliable_delivery=False`` makes a pool or singleton queue
    auto-delete (gone, with its events, when its last consumer stops), as in Nameko: set it
    to match a Nameko service that declares the same queue that way.

    ``broadcast_identifier`` (BROADCAST only): the instance's id in its queue name, a str
    or a zero-argument callable evaluated at setup (``socket.gethostname``), instead of a
    random one: Nameko's overridden ``EventHandler.broadcast_identifier``. Its queue is then
    reliable (durable, kept while the instance is down) unless ``reliable_delivery=False``
    (exclusive and auto-delete, like the random id's). A BROADCAST handler without it is
    never reliable, so it refuses ``reliable_delivery=True``, as Nameko does.
    """

    def __init__(
        self,
        source: str,
        event_type: str,
        handler_type: str = SERVICE_POOL,
        *,
        max_attempts: int = 5,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = (),
        reliable_delivery: bool | None = None,
        broadcast_identifier: BroadcastIdentifier | None = None,
    ) -> None:
        check_event_names(source, event_type)
        if handler_type not in HANDLER_TYPES:
            raise ConfigError(f"handler_type must be one of {', '.join(HANDLER_TYPES)}, "
                              f"got {handler_type!r}")
        self.reliable_delivery = _reliable_delivery(source, event_type, handler_type,
                                                    reliable_delivery, broadcast_identifier)
        self.broadcast_identifier = broadcast_identifier
        self.broadcast_id = ""  # the resolved id, once set up (BROADCAST only)
        try:
            self.retry = RetryPolicy(max_attempts, retry_delay, max_retry_delay)
        except ValueError as exc:
            raise ConfigError(f"@event_handler({source!r}, {event_type!r}): {exc}") from None
        if isinstance(expected_exceptions, type):
            expected_exceptions = (expected_exceptions,)
        self.expected_exceptions = tuple(expected_exceptions)
        self.source = source
        self.event_type = event_type
        self.handler_type = handler_type
        self.queue_name = ""
        self.dead_letter_queue_name = ""
        self._consumer_tag: str | None = None
        self._counts_redeliveries = False
        self.on_dead_letter: Callable[[], None] = _nothing  # counts dead letters if metrics are on

    @property
    def declared_queues(self) -> list[str]:
        """Every queue this handler may declare: its own, its DLQ and its delay queues
        (known once the container has set it up)."""
        if not self.queue_name:
            return []
        delays = [delay_queue(self.queue_name, ms) for ms in self.retry.all_delays_ms()]
        return [self.queue_name, self.dead_letter_queue_name, *delays]

    def setup(self) -> None:
        container = self.container
        service, method = container.service_name, self.method_name
        self._check_signature()
        self._config = container.config
        self._limits = DecodeLimits.from_config(self._config)  # once: read per message
        self._connection: Transport = container.connection
        # A quorum queue counts deliveries itself (delivery_limit); only reliable queues are
        # quorum queues (exclusive or auto-delete ones cannot be).
        quorum = self.reliable_delivery and self._config.queue_type == "quorum"
        self._counts_redeliveries = not quorum
        who = f"{container.service_cls.__name__}.{method}"
        if self.handler_type == BROADCAST:
            self.broadcast_id = self._resolve_broadcast_id(who)
        try:
            self.queue_name = check_name(
                handler_queue(self.source, self.event_type, self.handler_type, service, method,
                              self.broadcast_id), "queue name")
            # A random broadcast id dies with its instance; its dead letters must outlive
            # it, in one DLQ all instances share. A stable id keeps its own, as a pool does.
            dlq_base = (handler_queue(self.source, self.event_type, SERVICE_POOL, service, method)
                        + "-broadcast" if self.handler_type == BROADCAST
                        and self.broadcast_identifier is None else self.queue_name)
            self.dead_letter_queue_name = check_name(dead_letter_queue(dlq_base), "queue name")
            for name in self.declared_queues:
                check_name(name, "queue name")
        except ConfigError as exc:
            raise ConfigError(f"{who}: {exc}") from None
        self._connection.declare(*self._topology())
        self._consumer_tag = self._connection.consume(
            self.queue_name, self._on_delivery, prefetch=self._config.effective_prefetch)

    def _resolve_broadcast_id(self, who: str) -> str:
        """The id in this instance's broadcast queue name: random, or the configured one."""
        option = self.broadcast_identifier
        if option is None:
            return uuid.uuid4().hex
        source = repr(option)
        if callable(option):
            source = f"{getattr(option, '__qualname__', None) or repr(option)}()"
            try:
                value: object = option()
            except Exception as exc:
                raise ConfigError(f"{who}: broadcast_identifier {source} raised "
                                  f"{type(exc).__name__}: {exc}") from exc
        else:
            value = option
        if not isinstance(value, str):
            raise ConfigError(f"{who}: broadcast_identifier {source} must give a str, "
                              f"got {type(value).__name__} {value!r}")
        if not value:
            raise ConfigError(f"{who}: broadcast_identifier {source} is empty; it names this "
                              f"instance's broadcast queue")
        if not _BROADCAST_ID.fullmatch(value):
            raise ConfigError(f"{who}: broadcast_identifier {value!r} may only contain letters, "
                              f"digits, '-', '_', '.' and ':' (it goes into a queue name)")
        return value

    def _topology(self) -> tuple[Entity, ...]:
        config = self._config
        # Nameko's flags exactly: durable always, exclusive for broadcast unless reliable,
        # auto-delete unless reliable (another flag or argument and declaring over Nameko's
        # queue would fail).
        return (
            event_exchange_entity(self.source),
            Queue(self.queue_name, durable=True,
                  exclusive=self.handler_type == BROADCAST and not self.reliable_delivery,
                  auto_delete=not self.reliable_delivery,
                  arguments=service_queue_arguments(config, dead_letter_to=self.dead_letter_queue_name)
                  if self.reliable_delivery else None),  # quorum queues cannot be exclusive/auto-delete
            Binding(self.queue_name, event_exchange(self.source), self.event_type),
            durable_queue(self.dead_letter_queue_name, dead_letter_queue_arguments(config)),
        )

    # ------------------------------------------------------------ per event

    def _handle(self, delivery: Delivery) -> None:
        received = Received(delivery.body, delivery.properties, delivery.exchange,
                            delivery.routing_key)
        attempts = attempts_of(delivery.headers)
        if delivery.redelivered and self._counts_redeliveries:
            # Whoever had it died mid-way (or its connection did). Nothing returned to count
            # that attempt, so count it here, before running the event again.
            self._failed(delivery, received, attempts + 1, WorkerLost(
                "an earlier delivery did not finish: the worker that had it died, or lost its "
                "connection to the broker, before the ack"))
            return
        try:
            args = self._arguments(delivery)
        except MalformedRequest as exc:
            _log.warning("%s: malformed event dead-lettered to %s: %s", self.queue_name,
                         self.dead_letter_queue_name, exc)
            self._dead_letter(delivery, received, attempts, exc)
            return
        def on_result(ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
            if exc_info is None:
                self._connection.ack(delivery)
            else:
                self._failed(delivery, received, attempts + 1, exc_info[1])

        self.container.spawn_worker(
            self, args, {}, decode_context(delivery.headers, self._config.header_prefix),
            on_result,
            request_id=delivery.properties.get("message_id"),
            redelivered=delivery.redelivered or attempts > 0,  # it may have run before
            headers=delivery.headers,
        )

    def _check_signature(self) -> None:
        """At setup: refuse a method that cannot take what ``_arguments`` gives (ConfigError)."""
        _check_takes_payload(self.container.service_cls, self.method_name)

    def _arguments(self, delivery: Delivery) -> tuple[Any, ...]:
        """The handler's arguments: the decoded payload (MalformedRequest: dead-lettered at once)."""
        return (decode(delivery.body, delivery.properties.get("content_type"), self._limits),)

    def _failed(self, delivery: Delivery, received: Received, attempts: int,
                error: BaseException) -> None:
        if attempts >= self.retry.max_attempts:
            _log.error("%s: dead-lettered to %s after %d attempts: %r", self.queue_name,
                       self.dead_letter_queue_name, attempts, error)
            self._dead_letter(delivery, received, attempts, error)
            return
        delay_ms = self.retry.delay_ms(attempts)
        target = delay_queue(self.queue_name, delay_ms)
        _log.info("%s: attempt %d failed (%r); retrying in %d ms", self.queue_name, attempts,
                  error, delay_ms)
        message = retry_copy(received, queue=self.queue_name, delay_queue=target,
                             attempts=attempts, error=error)
        self._republish(delivery, message, delay_queue_arguments(self.queue_name, delay_ms))

    def _dead_letter(self, delivery: Delivery, received: Received, attempts: int,
                     error: BaseException) -> None:
        message = dead_letter(received, queue=self.queue_name, dlq=self.dead_letter_queue_name,
                              attempts=attempts, error=error)
        self.on_dead_letter()
        self._republish(delivery, message, dead_letter_queue_arguments(self._config))


event_handler = EventHandler.decorator


def _nothing() -> None:
    """``on_dead_letter`` while metrics are off."""


def _reliable_delivery(source: str, event_type: str, handler_type: str, reliable: bool | None,
                       identifier: BroadcastIdentifier | None) -> bool:
    """``reliable_delivery`` as declared, or its default: Nameko's, except that a BROADCAST
    handler with a random id is unreliable (Nameko refuses it instead of defaulting)."""
    handler = f"@event_handler({source!r}, {event_type!r}, handler_type={handler_type!r})"
    if identifier is not None:
        if handler_type != BROADCAST:
            raise ConfigError(f"{handler}: broadcast_identifier is for BROADCAST handlers only")
        if not (isinstance(identifier, str) or callable(identifier)):
            raise ConfigError(f"{handler}: broadcast_identifier must be a str or a zero-argument "
                              f"callable returning one, got {type(identifier).__name__}")
    if handler_type != BROADCAST:
        return True if reliable is None else reliable
    if identifier is None:
        if reliable:
            raise ConfigError(f"{handler}: reliable_delivery=True needs a broadcast_identifier; "
                              f"the default id is random, new at each start, so its queue "
                              f"cannot outlive the instance")
        return False
    return True if reliable is None else reliable


def _check_takes_payload(service_cls: type, method_name: str) -> None:
    """A handler is called with one argument, the payload: refuse one that can't be, at start."""
    signature = inspect.signature(getattr(service_cls, method_name))
    try:
        signature.bind(None, {})
    except TypeError:
        raise ConfigError(f"{service_cls.__name__}.{method_name}: an @event_handler method takes "
                          f"one argument, the event payload; its signature is {signature}") from None
