"""MQTT devices on the bus: a private RabbitMQ node with ``rabbitmq_mqtt``, a real MQTT client.

One node for the module (a boot costs several seconds of CPU), on free ports of its own:
the MQTT listener is never 1883, which belongs to the machine's Mosquitto.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from amqprpc import ClusterRpcClient, Config, TopicPublisher, rpc, topic_handler
from amqprpc.transport import create_transport
from tests.faults.rabbit_node import RabbitNode, free_port, reap_orphans
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class Broker:
    def __init__(self, node: RabbitNode, mqtt_port: int) -> None:
        self.node = node
        self.mqtt_port = mqtt_port

    def config(self) -> Config:
        return Config(broker_url=self.node.url, discovery_interval=0.5)

    def mqtt_client(self) -> mqtt.Client:
        """A connected MQTT client (its network loop on paho's own thread, stopped by the caller)."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        client.username_pw_set("guest", "guest")
        connected = threading.Event()
        client.on_connect = lambda *args: connected.set()
        wait_until(lambda: _try_connect(client, self.mqtt_port), "the MQTT listener", timeout=30)
        client.loop_start()
        assert connected.wait(10), "no CONNACK"
        return client


def _try_connect(client: mqtt.Client, port: int) -> bool:
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    reap_orphans()
    mqtt_port = free_port()
    node = RabbitNode(plugins=["rabbitmq_mqtt"],
                      rabbitmq_conf=f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n"
                                    "mqtt.allow_anonymous = false\n")
    try:
        node.start()
        yield Broker(node, mqtt_port)
    finally:
        node.cleanup()


@pytest.fixture
def device(broker: Broker) -> Iterator[mqtt.Client]:
    client = broker.mqtt_client()
    yield client
    client.disconnect()
    client.loop_stop()


def test_qos1_readings_are_handled_once_each(container_factory, unique_name, broker, device):
    seen: list[tuple[str, Any]] = []

    class Telemetry:
        name = unique_name("telemetry")

        @topic_handler("sensors/+/temperature")
        def on_reading(self, topic: str, reading: dict[str, Any]) -> None:
            seen.append((topic, reading))

        @topic_handler("sensors/+/raw", payload="bytes")
        def on_raw(self, topic: str, body: bytes) -> None:
            seen.append((topic, body))

    container_factory(Telemetry, broker.config())
    for n in range(20):
        device.publish(f"sensors/s{n % 4}/temperature", json.dumps({"n": n}), qos=1).wait_for_publish(10)
    device.publish("sensors/s0/humidity", json.dumps({"n": -1}), qos=1).wait_for_publish(10)  # no match
    device.publish("sensors/s9/raw", b"\x00\xff", qos=1).wait_for_publish(10)
    wait_until(lambda: len(seen) >= 21, "21 messages handled", timeout=15)
    device.publish("sensors/end/temperature", json.dumps({"n": 99}), qos=1).wait_for_publish(10)
    wait_until(lambda: ("sensors/end/temperature", {"n": 99}) in seen, "the last reading", timeout=15)

    readings = sorted(reading["n"] for topic, reading in seen if topic.endswith("/temperature"))
    assert readings == [*range(20), 99]  # each once, the humidity one never
    assert ("sensors/s3/temperature", {"n": 3}) in seen  # the MQTT topic, not the routing key
    assert ("sensors/s9/raw", b"\x00\xff") in seen
    assert len(seen) == 22


def test_a_failing_handler_retries_then_dead_letters(container_factory, unique_name, broker, device):
    attempts: list[str] = []

    class Alarms:
        name = unique_name("alarms")

        @topic_handler("alarms/#", max_attempts=3, retry_delay=0.05, max_retry_delay=0.1)
        def on_alarm(self, topic: str, payload: dict[str, Any]) -> None:
            attempts.append(topic)
            raise RuntimeError("the pager is down")

    container = container_factory(Alarms, broker.config())
    (entrypoint,) = container.entrypoints
    device.publish("alarms/floor/1", json.dumps({"smoke": True}), qos=1).wait_for_publish(10)
    probe = create_transport(broker.node.url, name="probe")
    probe.start()
    try:
        wait_until(lambda: (info := probe.queue_info(entrypoint.dead_letter_queue_name)) is not None
                   and info.message_count == 1, "the dead letter", timeout=20)
        dead = probe.get(entrypoint.dead_letter_queue_name)
        assert dead is not None and json.loads(dead.body) == {"smoke": True}
        assert dead.headers["x-amqprpc-attempts"] == 3
        assert dead.headers["x-amqprpc-routing-key"] == "alarms.floor.1"
        probe.ack(dead)
    finally:
        probe.stop()
    assert attempts == ["alarms/floor/1"] * 3  # the topic survives the retries


def test_a_command_from_topic_publisher_reaches_a_subscribed_device(container_factory, unique_name,
                                                                     broker, device):
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    device.on_message = lambda client, userdata, message: received.append(message)
    device.on_subscribe = lambda *args: subscribed.set()
    device.subscribe("devices/d7/commands", qos=1)
    assert subscribed.wait(10)

    class Thermostats:
        name = unique_name("thermostats")
        send = TopicPublisher()

        @rpc
        def set_target(self, device: str, celsius: float) -> str:
            self.send(f"devices/{device}/commands", {"target": celsius})
            return "sent"

    container_factory(Thermostats, broker.config())
    with ClusterRpcClient(config=broker.config()) as client:
        assert client.call(Thermostats.name, "set_target", "d7", 21.5) == "sent"  # after the confirm
    wait_until(lambda: received, "the command at the device", timeout=10)
    (message,) = received
    assert message.topic == "devices/d7/commands"
    assert json.loads(message.payload) == {"target": 21.5}
    assert message.qos == 1
