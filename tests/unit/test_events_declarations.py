"""@event_handler, @timer and EventPublisher refuse bad input when declared, not later."""

from __future__ import annotations

import pytest

from amqprpc import (
    BROADCAST,
    Config,
    ConfigError,
    EventHandler,
    EventPublisher,
    ServiceContainer,
    Timer,
    event_handler,
    timer,
)
from amqprpc.entrypoints.events import _check_takes_payload
from amqprpc.entrypoints.timer import next_due
from amqprpc.extensions import entrypoints_of


def test_decorators_record_and_return_the_function():
    class Service:
        name = "svc"

        @event_handler("orders", "created", handler_type=BROADCAST, max_attempts=2)
        def on_created(self, payload):
            return payload

        @timer(5, eager=True)
        def tick(self):
            return "ticked"

    [handler] = entrypoints_of(Service.on_created)
    assert isinstance(handler, EventHandler)
    assert (handler.source, handler.event_type, handler.handler_type) == ("orders", "created", BROADCAST)
    assert handler.retry.max_attempts == 2
    [tick] = entrypoints_of(Service.tick)
    assert isinstance(tick, Timer) and (tick.interval, tick.eager) == (5.0, True)
    assert Service().on_created(1) == 1 and Service().tick() == "ticked"  # still plain methods


@pytest.mark.parametrize("args, kwargs, message", [
    (("", "created"), {}, "event source"),
    (("orders", ""), {}, "event type"),
    (("orders", "created", "everyone"), {}, "handler_type"),
    (("orders", "created"), {"max_attempts": 0}, "max_attempts"),
    (("orders", "created"), {"retry_delay": 2, "max_retry_delay": 1}, "max_retry_delay"),
])
def test_bad_event_handlers_are_refused(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):  # when the class body runs
        event_handler(*args, **kwargs)(lambda self, payload: None)


@pytest.mark.parametrize("interval", [0, -1, "5", True])
def test_bad_timers_are_refused(interval):
    with pytest.raises(ConfigError, match="interval"):
        timer(interval)(lambda self: None)


def test_handler_must_take_the_payload():
    class Service:
        def none(self): ...
        def two(self, a, b): ...
        def one(self, payload): ...
        def flexible(self, *args, **kwargs): ...
        def defaulted(self, payload, extra=None): ...

    for good in ("one", "flexible", "defaulted"):
        _check_takes_payload(Service, good)
    for bad in ("none", "two"):
        with pytest.raises(ConfigError, match="one argument, the event payload"):
            _check_takes_payload(Service, bad)


def test_container_refuses_a_handler_without_payload_at_start():
    class Service:
        name = "svc"

        @event_handler("orders", "created")
        def on_created(self): ...

    container = ServiceContainer(Service, Config(broker_url="amqp://127.0.0.1:1/"))
    with pytest.raises(ConfigError, match="payload"):
        container.start()


def test_next_due_skips_missed_ticks():
    assert next_due(10.0, 1.0, 10.5) == 11.0  # on time
    assert next_due(10.0, 1.0, 11.0) == 12.0  # exactly on a tick that is now: the next one
    assert next_due(10.0, 1.0, 13.7) == 14.0  # three missed: no burst, the next ahead
    assert next_due(10.0, 0.25, 10.1) == 10.25


def test_publisher_refuses_bad_names_and_payloads_before_sending():
    publisher = EventPublisher("amqp://127.0.0.1:1/")  # never started: nothing is sent
    with pytest.raises(ConfigError, match="event type"):
        publisher.dispatch("orders", "", {})
    with pytest.raises(ConfigError, match="too long"):
        publisher.dispatch("o" * 300, "created", {})
    with pytest.raises(TypeError, match="not JSON serializable"):
        publisher.dispatch("orders", "created", object())
