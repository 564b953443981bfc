"""``TopicPublisher()``: send to MQTT devices (``devices/<id>/commands``) from inside a handler.

::

    class Thermostats:
        name = "thermostats"
        send = TopicPublisher()

        @rpc
        def set_target(self, device: str, celsius: float) -> None:
            self.send(f"devices/{device}/commands", {"target": celsius})

The message goes to ``amq.topic`` (where RabbitMQ's MQTT plugin routes to MQTT
subscriptions) with the topic as routing key (``/`` and ``.`` swapped, as the plugin
expects). QoS 1 semantics, at least once: the message is persistent and confirmed by
the broker; as with ``EventDispatcher``
(which this extends), the worker waits for the confirms of what it sent after the handler
returned and before its reply or ack, so an unconfirmed command fails the call instead of
vanishing. A device receives it at the QoS it subscribed with (at most 1). A device with
no subscription at the time (and no persistent session, ``clean_session=False``) does not
get it: MQTT has no queue for it.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import Future
from typing import Any

from ..exceptions import ConfigError
from ..extensions import WorkerContext
from ..futures import settle
from ..topology import MAX_NAME_LENGTH, MQTT_EXCHANGE, PAYLOAD_KINDS, exchange_entities, mqtt_to_amqp
from ..transport import Outgoing
from .events import EventDispatcher


class TopicPublisher(EventDispatcher):
    """Inject ``send(topic, payload) -> Future``: publish on ``exchange`` for MQTT subscribers.

    ``payload="json"`` (default) encodes the payload as JSON; ``"bytes"`` sends ``bytes``
    as they are. ``confirm_timeout``: as for ``EventDispatcher``.
    """

    def __init__(self, *, exchange: str = MQTT_EXCHANGE, payload: str = "json",
                 confirm_timeout: float | None = None) -> None:
        super().__init__(confirm_timeout=confirm_timeout)
        if payload not in PAYLOAD_KINDS:
            raise ConfigError(f"TopicPublisher: payload must be 'json' or 'bytes', got {payload!r}")
        self.exchange = exchange
        self.payload_kind = payload

    def setup(self) -> None:
        super().setup()
        self.exchange_name = self.exchange
        entities = exchange_entities(self.exchange)
        if entities:
            self._connection.declare(*entities)

    def get_dependency(self, worker_ctx: WorkerContext) -> TopicSend:  # type: ignore[override]
        return TopicSend(self, worker_ctx)

    def send(self, worker_ctx: WorkerContext, topic: str, payload: Any) -> Future[None]:
        message = self.message(topic, payload)
        future: Future[None] = Future()
        with self._lock:
            self._pending.setdefault(id(worker_ctx), []).append(future)
        self._connection.publish(message, on_confirm=lambda error: settle(future, error))
        return future

    def message(self, topic: str, payload: Any) -> Outgoing:
        """The message for ``topic``; ConfigError for a topic MQTT cannot carry, TypeError for
        a payload that cannot be encoded (raised in the handler, where it can be fixed)."""
        if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
            raise ConfigError(f"an MQTT topic to publish to is a non-empty string without "
                              f"wildcards, got {topic!r}")
        routing_key = mqtt_to_amqp(topic)
        if len(routing_key.encode("utf-8")) > MAX_NAME_LENGTH:
            raise ConfigError(f"MQTT topic {topic[:60]!r}... is longer than {MAX_NAME_LENGTH} bytes")
        if self.payload_kind == "bytes":
            if not isinstance(payload, bytes | bytearray):
                raise TypeError(f"TopicPublisher(payload='bytes') sends bytes, got {type(payload).__name__}")
            body, content_type = bytes(payload), "application/octet-stream"
        else:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
            content_type = "application/json"
        return Outgoing(self.exchange, routing_key, body, {
            # No x-mqtt-publish-qos header: RabbitMQ 3.10's plugin reads it only as an AMQP byte,
            # which py-amqp never writes, and drops the subscriber on any other type.
            "delivery_mode": 2, "content_type": content_type, "message_id": uuid.uuid4().hex,
        })


class TopicSend:
    """What a handler sees: ``self.send("devices/7/commands", {"target": 21.5})``."""

    __slots__ = ("_provider", "_worker_ctx")

    def __init__(self, provider: TopicPublisher, worker_ctx: WorkerContext) -> None:
        self._provider = provider
        self._worker_ctx = worker_ctx

    def __call__(self, topic: str, payload: Any) -> Future[None]:
        """Publish ``payload`` on the MQTT ``topic``; returns at once, confirmed before the reply."""
        return self._provider.send(self._worker_ctx, topic, payload)
