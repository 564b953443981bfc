"""The topology as data: every exchange, queue and binding amqprpc declares, as values.

Owners hand these to ``Transport.declare``, which declares them again on every reconnect;
each exchange is described here once (``rpc_exchange``, ``DISCOVERY``, ``event_exchange``).

Names and declare arguments of the event exchanges and queues are Nameko 2.x's, exactly.

Declaring an entity that already exists with other flags or arguments fails with
PRECONDITION_FAILED and closes the channel, so amqprpc declares what Nameko 2.14 declares
(``nameko/events.py``, ``nameko/standalone/events.py``) and the two can share a broker::

    exchange  <source>.events                             topic, durable, not auto-delete
    queue     evt-<source>-<type>--<service>.<method>     SERVICE_POOL: durable
    queue     evt-<source>-<type>                         SINGLETON: durable
    queue     evt-<source>-<type>--<service>.<method>-<id> BROADCAST: durable, exclusive,
                                                          auto-delete (one per instance);
                                                          with a broadcast_identifier and
                                                          reliable delivery: durable only

No queue above carries arguments, so retries and dead letters never need one: a failed
event is republished to a delay queue of our own (``<queue>.retry.<ms>``, a TTL that
dead-letters back into ``<queue>``), and a dead one to ``<queue>.dlq``, both declared by
amqprpc alone. Quorum queues (``queue_type = "quorum"``) are the one opt-in exception:
they add ``x-queue-type``, the broker's ``x-delivery-limit`` and a dead-letter route to the
DLQ, so they cannot share a queue with a Nameko service that declared it classic.
"""

from __future__ import annotations

from typing import Any, Final

from .config import Config
from .exceptions import ConfigError
from .resilience.overload import queue_bound_arguments
from .routing import version_binding, version_queue
from .transport.base import Binding, Entity, Exchange, Queue

SERVICE_POOL: Final = "service_pool"
SINGLETON: Final = "singleton"
BROADCAST: Final = "broadcast"
HANDLER_TYPES: Final = (SERVICE_POOL, SINGLETON, BROADCAST)

MAX_NAME_LENGTH: Final = 255  # AMQP short strings: queue names and routing keys
_MIN_DELAY_QUEUE_EXPIRY_MS: Final = 60_000

Arguments = dict[str, Any]

DISCOVERY: Final = Exchange("amqprpc.discovery", "topic", durable=True, auto_delete=False)
"""Where services announce themselves (``amqprpc.discovery``, topic, durable)."""

CONTROL: Final = Exchange("amqprpc.control", "topic", durable=True, auto_delete=False)
"""Where callers send cancels (``amqprpc.control``, topic, durable), routing key
``cancel.<service>``; every worker process of the service has its own queue bound to it."""

ROUTING: Final = Exchange("amqprpc.routing", "topic", durable=True, auto_delete=False)
"""Where ``amqprpc route`` sends live routing rules (routing key ``route.<service>``); every
caller that obeys them has its own queue bound to ``route.*`` (amqprpc.route_updates)."""

VERSION_QUEUE_EXPIRES_MS: Final = 30 * 60_000  # a version queue nobody consumed for 30 min goes
# A request no worker of its version took this long goes on to the shared queue (dead-lettered
# by the broker): a canary that died, or one that cannot keep up, strands nothing.
VERSION_QUEUE_MAX_WAIT_MS: Final = 5_000

CANCEL_QUEUE_MAX_LENGTH: Final = 10_000  # cancels a slow worker's queue holds; older ones drop


def cancel_routing_key(service: str) -> str:
    """The routing key of cancels for ``service``'s calls."""
    return f"cancel.{service}"


def cancel_queue_topology(service: str, queue: str) -> tuple[Entity, ...]:
    """One worker process's cancel queue: exclusive, auto-delete, bounded (drop-head)."""
    arguments = {"x-max-length": CANCEL_QUEUE_MAX_LENGTH, "x-overflow": "drop-head"}
    return (CONTROL,
            Queue(queue, durable=False, exclusive=True, auto_delete=True, arguments=arguments),
            Binding(queue, CONTROL.name, cancel_routing_key(service)))


def rpc_exchange(config: Config) -> Exchange:
    """The RPC exchange (``nameko-rpc`` by default): topic, durable, as Nameko declares it."""
    return Exchange(config.rpc_exchange, "topic", durable=True, auto_delete=False)


def event_exchange(source: str) -> str:
    """The topic exchange a service's events are published on."""
    return f"{source}.events"


def event_exchange_entity(source: str) -> Exchange:
    """``<source>.events`` as Nameko declares it."""
    return Exchange(event_exchange(source), "topic", durable=True, auto_delete=False)


def rpc_queue_topology(config: Config, service: str, max_queue_length: int = 0) -> tuple[Entity, ...]:
    """A service's RPC queue ``rpc-<service>`` bound to ``<service>.*`` (durable, Nameko's flags;
    quorum: with the delivery limit; bounded: ``resilience.overload.queue_bound_arguments``)."""
    queue = f"rpc-{service}"
    arguments = service_queue_arguments(config)
    if max_queue_length:
        arguments = {**(arguments or {}), **queue_bound_arguments(max_queue_length)}
    return (rpc_exchange(config),
            Queue(queue, durable=True, auto_delete=False, arguments=arguments),
            Binding(queue, config.rpc_exchange, f"{service}.*"))


def version_queue_topology(config: Config, service: str, version: str,
                           max_queue_length: int = 0) -> tuple[Entity, ...]:
    """The queue of ``version``'s workers, ``rpc-<service>@<version>``, bound to
    ``<service>@<token>.*`` (amqprpc.routing): durable like the shared queue; a request
    waiting in it longer than ``VERSION_QUEUE_MAX_WAIT_MS`` is dead-lettered into the shared
    queue ``rpc-<service>``; the queue itself goes once unused for 30 minutes."""
    queue = version_queue(service, version)
    arguments = {**(service_queue_arguments(config) or {}), "x-expires": VERSION_QUEUE_EXPIRES_MS,
                 "x-message-ttl": VERSION_QUEUE_MAX_WAIT_MS, "x-dead-letter-exchange": "",
                 "x-dead-letter-routing-key": f"rpc-{service}"}
    if max_queue_length:
        arguments.update(queue_bound_arguments(max_queue_length))
    return (rpc_exchange(config),
            Queue(queue, durable=True, auto_delete=False, arguments=arguments),
            Binding(queue, config.rpc_exchange, version_binding(service, version)))


def route_listener_topology(queue: str) -> tuple[Entity, ...]:
    """A caller's own queue of live routing rules: exclusive, auto-delete, bounded."""
    return (ROUTING,
            Queue(queue, durable=False, exclusive=True, auto_delete=True,
                  arguments={"x-max-length": 1000, "x-overflow": "drop-head"}),
            Binding(queue, ROUTING.name, "route.*"))


def reply_queue_topology(config: Config, queue: str, routing_key: str) -> tuple[Entity, ...]:
    """A caller's own reply queue (when not on direct reply-to), Nameko's scheme."""
    return (Queue(queue, durable=False, exclusive=True, auto_delete=True),
            Binding(queue, config.rpc_exchange, routing_key))


def durable_queue(name: str, arguments: Arguments | None) -> Queue:
    """A DLQ or delay queue: durable, shared, with ``arguments``."""
    return Queue(name, durable=True, exclusive=False, auto_delete=False, arguments=arguments)


def handler_queue(source: str, event_type: str, handler_type: str, service: str, method: str,
                  broadcast_id: str = "") -> str:
    """The queue a handler consumes, named as Nameko names it."""
    if handler_type == SERVICE_POOL:
        return f"evt-{source}-{event_type}--{service}.{method}"
    if handler_type == SINGLETON:
        return f"evt-{source}-{event_type}"
    if handler_type == BROADCAST:
        if not broadcast_id:
            raise ValueError("a broadcast queue needs a broadcast id")
        return f"evt-{source}-{event_type}--{service}.{method}-{broadcast_id}"
    raise ConfigError(f"handler_type must be one of {', '.join(HANDLER_TYPES)}, got {handler_type!r}")


def dead_letter_queue(queue: str) -> str:
    """Where events that could not be handled are kept for an operator: ``<queue>.dlq``."""
    return f"{queue}.dlq"


def delay_queue(queue: str, delay_ms: int) -> str:
    """The holding queue for retries of ``queue`` after ``delay_ms``; one per delay value.

    One queue per delay keeps every message in it on the same TTL, so the head always
    expires first (per-message TTLs in one queue would wait behind a longer one).
    """
    return f"{queue}.retry.{delay_ms}"


def check_name(name: str, what: str) -> str:
    """Raise ConfigError if ``name`` is too long for the broker; return it otherwise."""
    if len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what} {name[:60]!r}... is longer than {MAX_NAME_LENGTH} bytes")
    return name


def service_queue_arguments(config: Config, dead_letter_to: str | None = None) -> Arguments | None:
    """Arguments of a durable service queue (RPC or event handler): none unless quorum.

    Quorum queues get the broker's delivery limit, so a message that kills every worker
    that takes it stops after ``config.delivery_limit`` deliveries; with ``dead_letter_to``
    it then goes to that queue instead of being dropped.
    """
    if config.queue_type != "quorum":
        return None
    arguments: Arguments = {"x-queue-type": "quorum", "x-delivery-limit": config.delivery_limit}
    if dead_letter_to is not None:
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = dead_letter_to
    return arguments


def dead_letter_queue_arguments(config: Config) -> Arguments | None:
    """A DLQ holds messages for people: quorum if configured, but never a delivery limit
    (``amqprpc dlq list`` reads messages and gives them back, which counts as a delivery)."""
    return {"x-queue-type": "quorum"} if config.queue_type == "quorum" else None


def delay_queue_arguments(queue: str, delay_ms: int) -> Arguments:
    """A classic queue whose messages expire after ``delay_ms`` back into ``queue``.

    It expires itself when unused (it is redeclared before every retry publish, and the
    expiry is far longer than the TTL), so delay queues of removed handlers vanish.
    """
    return {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": max(2 * delay_ms, delay_ms + _MIN_DELAY_QUEUE_EXPIRY_MS),
    }


def subscriber_queue(name: str, max_length: int) -> Queue:
    """A listener's own queue (``EventSubscriber``): gone with its connection, and bounded.

    Exclusive and auto-delete, so nothing outlives the listener; ``x-max-length`` with
    ``drop-head`` keeps the broker from holding more than ``max_length`` events for a
    listener that falls behind (the oldest go first: a live feed wants the newest).
    """
    return Queue(check_name(name, "queue name"), durable=False, exclusive=True, auto_delete=True,
                 arguments={"x-max-length": max_length, "x-overflow": "drop-head"})


# ---------------------------------------------------------------------- MQTT (RabbitMQ's plugin)

MQTT_EXCHANGE: Final = "amq.topic"  # the plugin's default (mqtt.exchange in rabbitmq.conf)
PAYLOAD_KINDS: Final = ("json", "bytes")
_SWAP: Final = str.maketrans("/.", "./")  # the plugin's mapping, both ways


def exchange_entities(name: str) -> tuple[Entity, ...]:
    """What to declare for ``name``: nothing for the broker's own ``amq.*`` exchanges, which
    always exist and which a broker may refuse to see declared."""
    if name.startswith("amq."):
        return ()
    return (Exchange(name, "topic", durable=True, auto_delete=False),)


def mqtt_to_amqp(topic: str) -> str:
    """An MQTT topic or filter as the plugin routes it: ``/`` <-> ``.``, ``+`` -> ``*``."""
    swapped = topic.translate(_SWAP)
    return ".".join("*" if level == "+" else level for level in swapped.split("."))


def amqp_to_mqtt(routing_key: str) -> str:
    """The MQTT topic of a routing key the plugin published (``/`` <-> ``.`` swapped back)."""
    return routing_key.translate(_SWAP)


def check_filter(topic_filter: str) -> None:
    """ConfigError for a filter MQTT would refuse: ``#`` only last, wildcards whole levels."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ConfigError(f"an MQTT topic filter must be a non-empty string, got {topic_filter!r}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ConfigError(f"MQTT topic filter {topic_filter!r}: '+' must be a whole level and '#' "
                              "the whole last level (sensors/+/temperature, sensors/#)")
        if "*" in level:
            raise ConfigError(f"MQTT topic filter {topic_filter!r}: '*' is AMQP's wildcard; MQTT's is '+'")
