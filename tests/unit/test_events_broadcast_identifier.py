"""``@event_handler(..., handler_type=BROADCAST, broadcast_identifier=...)``: the names and
reliability it gives, and the ConfigErrors for bad identifiers (no broker involved)."""

from __future__ import annotations

import pytest

from amqprpc import BROADCAST, SINGLETON, Config, ConfigError, ServiceContainer, event_handler
from amqprpc.entrypoints.events import EventHandler

UNREACHABLE = Config(broker_url="amqp://127.0.0.1:1/")  # setup fails before any connect


def service_with(**options) -> type:
    class Cache:
        name = "cache"

        @event_handler("orders", "changed", handler_type=BROADCAST, **options)
        def drop(self, payload): ...

    return Cache


def set_up(service_cls: type) -> EventHandler:
    container = ServiceContainer(service_cls, UNREACHABLE)
    [handler] = container.entrypoints
    assert isinstance(handler, EventHandler)
    handler.setup()
    return handler


def test_without_an_identifier_nothing_changes():
    one, two = set_up(service_with()), set_up(service_with())
    assert one.reliable_delivery is False
    assert len(one.broadcast_id) == 32 and one.broadcast_id != two.broadcast_id
    assert one.queue_name == f"evt-orders-changed--cache.drop-{one.broadcast_id}"
    assert one.dead_letter_queue_name == "evt-orders-changed--cache.drop-broadcast.dlq"
    assert set_up(service_with(reliable_delivery=False)).reliable_delivery is False


def test_a_str_identifier_names_a_reliable_queue_with_its_own_dlq():
    handler = set_up(service_with(broadcast_identifier="web-1.example.com"))
    assert handler.reliable_delivery is True  # Nameko's default
    assert handler.broadcast_id == "web-1.example.com"
    assert handler.queue_name == "evt-orders-changed--cache.drop-web-1.example.com"
    assert handler.dead_letter_queue_name == "evt-orders-changed--cache.drop-web-1.example.com.dlq"
    assert handler.declared_queues[:2] == [handler.queue_name, handler.dead_letter_queue_name]


def test_a_callable_identifier_is_called_at_setup():
    calls = []

    def hostname() -> str:
        calls.append(1)
        return "host_A:2"

    Cache = service_with(broadcast_identifier=hostname)
    assert calls == []  # not when the class is defined
    handler = set_up(Cache)
    assert calls == [1]
    assert handler.queue_name == "evt-orders-changed--cache.drop-host_A:2"


def test_unreliable_with_an_identifier_keeps_the_name():
    handler = set_up(service_with(broadcast_identifier="web-1", reliable_delivery=False))
    assert handler.reliable_delivery is False
    assert handler.queue_name == "evt-orders-changed--cache.drop-web-1"


def failing() -> str:
    raise KeyError("SERVICE_IDENTIFIER")


@pytest.mark.parametrize("identifier, message", [
    ("", "broadcast_identifier '' is empty"),
    (lambda: "", "broadcast_identifier <lambda>\\(\\) is empty"),
    ("web 1", "'web 1' may only contain letters, digits"),
    ("web/1", "'web/1' may only contain"),
    ("wéb", "'wéb' may only contain"),
    ("web-1\n", "may only contain"),
    (failing, "broadcast_identifier failing\\(\\) raised KeyError: 'SERVICE_IDENTIFIER'"),
    (lambda: 42, "must give a str, got int 42"),
    (lambda: None, "must give a str, got NoneType None"),
    ("h" * 250, "longer than 255 bytes"),
])
def test_bad_identifiers_are_refused_at_start_naming_the_handler(identifier, message):
    container = ServiceContainer(service_with(broadcast_identifier=identifier), UNREACHABLE)
    with pytest.raises(ConfigError, match=message) as raised:
        container.start()  # a ConfigError, not BrokerUnreachable: nothing was started
    assert str(raised.value).startswith("Cache.drop: ")
    assert not container.running


def test_the_error_of_a_raising_callable_is_chained():
    with pytest.raises(ConfigError) as raised:
        set_up(service_with(broadcast_identifier=failing))
    assert isinstance(raised.value.__cause__, KeyError)


@pytest.mark.parametrize("kwargs, message", [
    ({"handler_type": BROADCAST, "reliable_delivery": True},
     "reliable_delivery=True needs a broadcast_identifier"),
    ({"handler_type": SINGLETON, "broadcast_identifier": "web-1"},
     "broadcast_identifier is for BROADCAST handlers only"),
    ({"broadcast_identifier": "web-1"}, "broadcast_identifier is for BROADCAST handlers only"),
    ({"handler_type": BROADCAST, "broadcast_identifier": 42},
     "must be a str or a zero-argument callable"),
    ({"handler_type": BROADCAST, "broadcast_identifier": b"web-1"},
     "must be a str or a zero-argument callable"),
])
def test_contradictory_declarations_are_refused_when_declared(kwargs, message):
    with pytest.raises(ConfigError, match=message) as raised:
        event_handler("orders", "changed", **kwargs)(lambda self, payload: None)
    assert "@event_handler('orders', 'changed'" in str(raised.value)
