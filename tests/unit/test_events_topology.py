"""Event names and declarations: Nameko's names, our own queues, quorum arguments."""

from __future__ import annotations

import pytest

from amqprpc import BROADCAST, SERVICE_POOL, SINGLETON, Config, ConfigError
from amqprpc.topology import (
    check_name,
    dead_letter_queue,
    dead_letter_queue_arguments,
    delay_queue,
    delay_queue_arguments,
    event_exchange,
    handler_queue,
    service_queue_arguments,
)


def test_names_are_namekos():
    assert event_exchange("orders") == "orders.events"
    assert handler_queue("orders", "created", SERVICE_POOL, "email", "send") == \
        "evt-orders-created--email.send"
    assert handler_queue("orders", "created", SINGLETON, "email", "send") == "evt-orders-created"
    assert handler_queue("orders", "created", BROADCAST, "email", "send", "abc") == \
        "evt-orders-created--email.send-abc"
    with pytest.raises(ValueError):
        handler_queue("orders", "created", BROADCAST, "email", "send")
    with pytest.raises(ConfigError, match="handler_type"):
        handler_queue("orders", "created", "everyone", "email", "send")


def test_our_own_queues():
    assert dead_letter_queue("evt-a-b--c.d") == "evt-a-b--c.d.dlq"
    assert delay_queue("evt-a-b--c.d", 250) == "evt-a-b--c.d.retry.250"
    args = delay_queue_arguments("evt-a-b--c.d", 250)
    assert args["x-message-ttl"] == 250
    assert (args["x-dead-letter-exchange"], args["x-dead-letter-routing-key"]) == ("", "evt-a-b--c.d")
    assert args["x-expires"] > 250 + 30_000  # never before its messages expire
    assert delay_queue_arguments("q", 3_600_000)["x-expires"] == 7_200_000


def test_classic_queues_carry_no_arguments():
    """Nameko declares its queues without arguments: so must we, or declaring fails."""
    config = Config()
    assert service_queue_arguments(config) is None
    assert service_queue_arguments(config, dead_letter_to="q.dlq") is None
    assert dead_letter_queue_arguments(config) is None


def test_quorum_arguments():
    config = Config(queue_type="quorum", delivery_limit=7)
    assert service_queue_arguments(config) == {"x-queue-type": "quorum", "x-delivery-limit": 7}
    assert service_queue_arguments(config, dead_letter_to="q.dlq") == {
        "x-queue-type": "quorum", "x-delivery-limit": 7,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.dlq"}
    assert dead_letter_queue_arguments(config) == {"x-queue-type": "quorum"}  # no limit on a DLQ
    with pytest.raises(ConfigError, match="delivery_limit"):
        Config(delivery_limit=0)


def test_long_names_are_refused():
    assert check_name("q" * 255, "queue") == "q" * 255
    with pytest.raises(ConfigError, match="longer than 255 bytes"):
        check_name("é" * 128, "queue")
