"""The pieces of the realtime edge that need no broker: topic mapping, declarations, rules.

Plus ``@topic_handler`` and ``EventSubscriber`` on the in-memory broker (``memory://``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from amqprpc import (
    Config,
    ConfigError,
    EventPublisher,
    EventSubscriber,
    ServiceContainer,
    ServiceRegistry,
    rpc,
    topic_handler,
)
from amqprpc.dependencies.topic import TopicPublisher
from amqprpc.devservers import RabbitServer
from amqprpc.discovery import DescriptorError, parse_descriptor
from amqprpc.entrypoints.topic import amqp_to_mqtt, check_filter, mqtt_to_amqp
from amqprpc.transport import Outgoing, create_transport
from http_bridge import BridgeSettings
from http_bridge.ws_events import rule_for, split_event_key
from tests.http_bridge.support import descriptor_of
from tests.waiting import wait_until


@pytest.mark.parametrize(("mqtt", "amqp"), [
    ("sensors/t1/temperature", "sensors.t1.temperature"),
    ("sensors/+/temperature", "sensors.*.temperature"),
    ("sensors/#", "sensors.#"),
    ("#", "#"),
    ("v1.2/x", "v1/2.x"),  # the plugin swaps '.' and '/'
])
def test_mqtt_filters_map_onto_amqp_patterns(mqtt: str, amqp: str) -> None:
    assert mqtt_to_amqp(mqtt) == amqp
    if "+" not in mqtt:
        assert amqp_to_mqtt(amqp) == mqtt


@pytest.mark.parametrize("bad", ["", "sensors/#/x", "sensors/a+/x", "sensors/*/x", "a/b#"])
def test_filters_mqtt_refuses_are_refused_at_import(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_filter(bad)
    with pytest.raises(ConfigError):
        topic_handler(bad)(lambda self, topic, payload: None)


def test_payload_kind_and_signature_are_checked() -> None:
    with pytest.raises(ConfigError, match="payload"):
        topic_handler("a/b", payload="xml")(lambda self, topic, payload: None)
    with pytest.raises(ConfigError, match="payload"):
        TopicPublisher(payload="xml")


def test_topic_publisher_messages() -> None:
    publisher = TopicPublisher()
    message = publisher.message("devices/d1/commands", {"target": 20})
    assert (message.exchange, message.routing_key) == ("amq.topic", "devices.d1.commands")
    assert json.loads(message.body) == {"target": 20}
    assert message.properties["delivery_mode"] == 2
    with pytest.raises(ConfigError):
        publisher.message("devices/+/commands", {})
    with pytest.raises(TypeError):
        TopicPublisher(payload="bytes").message("a/b", "text")


def service(name: str, ws_events: Any = None) -> type:
    """A service class with one @rpc method (a container needs an entrypoint)."""

    def ping(self: Any) -> None:
        """Nothing."""

    attributes: dict[str, Any] = {"name": name, "ping": rpc(ping)}
    if ws_events is not None:
        attributes["ws_events"] = ws_events
    return type(name.title(), (), attributes)


def test_ws_events_are_announced_and_parsed() -> None:
    rules = {"order_paid": ["customer", "support"], "order_created": ()}
    descriptor = descriptor_of(service("orders", rules))
    assert descriptor["ws_events"] == [{"event": "order_created", "roles": []},
                                       {"event": "order_paid", "roles": ["customer", "support"]}]
    parsed = parse_descriptor(descriptor)
    assert {(e.event, e.roles) for e in parsed.ws_events} == {("order_created", ()),
                                                              ("order_paid", ("customer", "support"))}

    plain = service("plain")
    assert "ws_events" not in descriptor_of(plain)  # other descriptors stay as they were
    bad_ones = ({"ws_events": "all"}, {"ws_events": [{"event": ""}]},
                {"ws_events": [{"event": "x", "roles": [1]}]})
    for bad in bad_ones:
        with pytest.raises(DescriptorError):
            parse_descriptor({**descriptor_of(plain), **bad})
    with pytest.raises(ConfigError, match="list of role names"):
        descriptor_of(service("wrong", {"x": "admin"}))


def test_instances_that_disagree_get_the_narrower_rule() -> None:
    registry = ServiceRegistry(Config())

    def announce(rules: dict[str, list[str]]) -> None:
        registry.ingest(descriptor_of(service("shop", rules)))

    announce({"sale": ["a", "b"], "both": []})
    assert rule_for(registry.service("shop"), "sale").roles == ("a", "b")
    announce({"sale": ["b", "c"]})  # a second instance, mid-deploy
    view = registry.service("shop")
    assert rule_for(view, "sale").roles == ("b",)
    assert rule_for(view, "both") is None  # not every instance offers it
    assert rule_for(view, "nothing") is None
    assert rule_for(None, "sale") is None
    assert split_event_key("shop.sale.eu") == ("shop", "sale.eu")
    assert split_event_key("shop") is None


def test_websocket_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="ws_slow_client"):
        BridgeSettings(ws_slow_client="block")
    with pytest.raises(ConfigError, match="ws_max_inflight"):
        BridgeSettings(ws_max_inflight=0)


def test_dev_node_with_mqtt_enables_the_plugin_on_its_port(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("amqprpc.devservers.rabbitmq_installed", lambda: True)
    node = RabbitServer(tmp_path, mqtt_port=18830)
    node._command()
    assert "mqtt.listeners.tcp.default = 127.0.0.1:18830" in (tmp_path / "rabbitmq.conf").read_text()
    assert (tmp_path / "enabled_plugins").read_text().strip() == "[rabbitmq_mqtt]."
    RabbitServer(tmp_path / "plain")._command()
    assert (tmp_path / "plain" / "enabled_plugins").read_text().strip() == "[]."


def test_topic_handler_on_the_memory_broker(unique_name) -> None:
    seen: list[tuple[str, Any]] = []

    class Sensors:
        name = unique_name("sensors")

        @topic_handler("sensors/+/temperature")
        def on_reading(self, topic: str, reading: Any) -> None:
            seen.append((topic, reading))

    config = Config(broker_url=f"memory://{unique_name('topic')}")
    container = ServiceContainer(Sensors, config)
    container.start()
    sender = create_transport(config, name="sender")
    sender.start()
    try:
        for key, body in (("sensors.a.temperature", b"21.5"), ("sensors.a.humidity", b"50"),
                          ("sensors.b.temperature", b'{"c": 1}')):
            sender.publish(Outgoing("amq.topic", key, body, {"delivery_mode": 2}))
        wait_until(lambda: len(seen) >= 2, "two readings", timeout=5)
    finally:
        sender.stop()
        container.stop()
    assert sorted(seen, key=lambda item: item[0]) == [("sensors/a/temperature", 21.5),
                                                      ("sensors/b/temperature", {"c": 1})]


def test_a_topic_handler_takes_topic_and_payload(unique_name) -> None:
    class OneArgument:
        name = unique_name("one")

        @topic_handler("a/b")
        def handle(self, payload: Any) -> None: ...

    with pytest.raises(ConfigError, match="topic and the payload"):
        ServiceContainer(OneArgument, Config(broker_url=f"memory://{unique_name('t')}")).start()


def test_event_subscriber_gets_what_it_subscribed_to(unique_name) -> None:
    config = Config(broker_url=f"memory://{unique_name('subscriber')}")
    got: list[tuple[str, str, Any]] = []
    lock = threading.Lock()

    def on_event(source: str, event_type: str, payload: Any) -> None:
        with lock:
            got.append((source, event_type, payload))

    subscriber = EventSubscriber(config, on_event, name="test-subscriber", max_queued=100)
    subscriber.start()
    try:
        subscriber.subscribe("orders", "order_paid")
        subscriber.subscribe("orders", "order_paid")  # idempotent
        assert subscriber.subscriptions == {("orders", "order_paid")}
        with EventPublisher(config=config) as events:
            events.dispatch("orders", "order_created", {"id": 0})
            events.dispatch("orders", "order_paid", {"id": 1})
            events.flush(5)
        wait_until(lambda: got, "the event", timeout=5)
    finally:
        subscriber.stop()
    assert got == [("orders", "order_paid", {"id": 1})]
