"""``@topic_handler("sensors/+/temperature")``: handle what MQTT devices publish.

RabbitMQ's MQTT plugin publishes every MQTT message on the ``amq.topic`` exchange, with
the topic as the routing key, ``/`` and ``.`` swapped (``sensors/t1/temperature`` ->
``sensors.t1.temperature``). MQTT wildcards map onto AMQP topic patterns one for one::

    MQTT filter              AMQP binding key
    sensors/+/temperature    sensors.*.temperature     + : one level    -> *
    sensors/#                sensors.#                 # : any levels   -> #

Topology, per handler (a service pool: the instances of a service compete, each message
is handled once per service and method)::

    [amq.topic] --(sensors.*.temperature)--> evt-amq.topic-sensors.*.temperature--<svc>.<method>

The queue is durable and so is delivery: the handler is an ``EventHandler`` on another
exchange, with its at-least-once delivery, retries through delay queues and dead letters
to ``<queue>.dlq`` (docs/events.md), unchanged. An MQTT QoS 0 message is published by the
plugin as transient, a QoS 1 message as persistent; either way, once in this queue it is
acked only after the handler returned.

The method is called with ``(topic, payload)``: the MQTT topic (``sensors/t1/temperature``,
also on retries) and the payload, decoded as JSON within the decode limits
(``payload="json"``, a body that is not JSON is dead-lettered at once) or left as
``bytes`` (``payload="bytes"``).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..dead_letters import ROUTING_KEY_HEADER
from ..exceptions import ConfigError
from ..topology import (
    MQTT_EXCHANGE,
    PAYLOAD_KINDS,
    SERVICE_POOL,
    amqp_to_mqtt,
    check_filter,
    dead_letter_queue_arguments,
    durable_queue,
    exchange_entities,
    mqtt_to_amqp,
    service_queue_arguments,
)
from ..transport import Binding, Delivery, Entity, Queue
from .events import EventHandler


class TopicHandler(EventHandler):
    """Handle messages published on ``exchange`` (MQTT devices) whose topic matches ``topic_filter``.

    ``payload``: ``"json"`` (default) or ``"bytes"``. ``exchange``: where the MQTT plugin
    publishes (``amq.topic`` unless ``mqtt.exchange`` says otherwise). Retries and dead
    letters as ``@event_handler``: ``max_attempts``, ``retry_delay``, ``max_retry_delay``,
    ``expected_exceptions``.
    """

    def __init__(self, topic_filter: str, *, payload: str = "json", exchange: str = MQTT_EXCHANGE,
                 max_attempts: int = 5, retry_delay: float = 1.0, max_retry_delay: float = 60.0,
                 expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = ()) -> None:
        check_filter(topic_filter)
        if payload not in PAYLOAD_KINDS:
            raise ConfigError(f"@topic_handler({topic_filter!r}): payload must be 'json' or 'bytes', "
                              f"got {payload!r}")
        super().__init__(exchange, mqtt_to_amqp(topic_filter), SERVICE_POOL, max_attempts=max_attempts,
                         retry_delay=retry_delay, max_retry_delay=max_retry_delay,
                         expected_exceptions=expected_exceptions)
        self.topic_filter = topic_filter
        self.payload_kind = payload
        self.exchange = exchange

    def _topology(self) -> tuple[Entity, ...]:
        config = self._config
        return (
            *exchange_entities(self.exchange),
            Queue(self.queue_name, durable=True, auto_delete=False,
                  arguments=service_queue_arguments(config, dead_letter_to=self.dead_letter_queue_name)),
            Binding(self.queue_name, self.exchange, self.event_type),
            durable_queue(self.dead_letter_queue_name, dead_letter_queue_arguments(config)),
        )

    def _check_signature(self) -> None:
        service_cls, name = self.container.service_cls, self.method_name
        signature = inspect.signature(getattr(service_cls, name))
        try:
            signature.bind(None, "topic", {})
        except TypeError:
            raise ConfigError(f"{service_cls.__name__}.{name}: a @topic_handler method takes two "
                              f"arguments, the topic and the payload; its signature is {signature}") from None

    def _arguments(self, delivery: Delivery) -> tuple[Any, ...]:
        routing_key = delivery.headers.get(ROUTING_KEY_HEADER)  # set on retries: the original's
        topic = amqp_to_mqtt(routing_key if isinstance(routing_key, str) else delivery.routing_key)
        if self.payload_kind == "bytes":
            return topic, bytes(delivery.body)
        return topic, self._limits.decode(delivery.body, "application/json")


topic_handler = TopicHandler.decorator

__all__ = ["MQTT_EXCHANGE", "TopicHandler", "amqp_to_mqtt", "check_filter", "mqtt_to_amqp", "topic_handler"]
