"""Retry copies, dead letters and replays as messages: what they keep, add and drop."""

from __future__ import annotations

import datetime

import pytest

from amqprpc.dead_letters import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    EXCHANGE_HEADER,
    QUEUE_HEADER,
    REPLAYS_HEADER,
    ROUTING_KEY_HEADER,
    Received,
    RetryPolicy,
    attempts_of,
    dead_letter,
    describe_error,
    read_dead_letter,
    replay_copy,
    retry_copy,
)

QUEUE = "evt-orders-created--email.send"


def event(**headers) -> Received:
    properties = {
        "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
        "message_id": "m-1", "user_id": "guest", "expiration": "60000",
        "application_headers": {"nameko.user_id": "u-1", **headers},
    }
    return Received(b'{"id": 1}', properties, "orders.events", "created")


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(max_attempts=6, retry_delay=0.5, max_retry_delay=3)
    assert [policy.delay_ms(n) for n in range(1, 6)] == [500, 1000, 2000, 3000, 3000]
    assert policy.all_delays_ms() == [500, 1000, 2000, 3000]
    assert RetryPolicy(max_attempts=1).all_delays_ms() == []
    assert RetryPolicy(retry_delay=0.0001).delay_ms(1) == 1  # never a zero TTL


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": 2.5}, {"retry_delay": 0}, {"retry_delay": -1},
    {"retry_delay": 5, "max_retry_delay": 1},
])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_attempts_header_is_read_defensively():
    assert attempts_of(None) == 0
    assert attempts_of({ATTEMPTS_HEADER: 3}) == 3
    assert attempts_of({ATTEMPTS_HEADER: "3"}) == 0
    assert attempts_of({ATTEMPTS_HEADER: -1}) == 0
    assert attempts_of({ATTEMPTS_HEADER: True}) == 0


def test_retry_copy_keeps_the_event_and_records_the_failure():
    copy = retry_copy(event(), queue=QUEUE, delay_queue=f"{QUEUE}.retry.100", attempts=1,
                      error=ValueError("boom"))
    assert (copy.exchange, copy.routing_key, copy.body) == ("", f"{QUEUE}.retry.100", b'{"id": 1}')
    props = copy.properties
    assert props["message_id"] == "m-1" and props["delivery_mode"] == 2
    assert "user_id" not in props and "expiration" not in props
    headers = props["application_headers"]
    assert headers["nameko.user_id"] == "u-1"
    assert headers[ATTEMPTS_HEADER] == 1
    assert headers[ERROR_HEADER] == "ValueError: boom"
    assert headers[ERROR_TYPE_HEADER] == "builtins.ValueError"
    assert (headers[QUEUE_HEADER], headers[EXCHANGE_HEADER], headers[ROUTING_KEY_HEADER]) == (
        QUEUE, "orders.events", "created")


def test_dead_letter_keeps_the_first_origin():
    # a retried copy comes back through the default exchange, routed by queue name
    came_back = Received(b"{}", {"application_headers": {
        QUEUE_HEADER: QUEUE, EXCHANGE_HEADER: "orders.events", ROUTING_KEY_HEADER: "created",
        ATTEMPTS_HEADER: 2}}, "", QUEUE)
    letter = dead_letter(came_back, queue=QUEUE, dlq=f"{QUEUE}.dlq", attempts=3,
                         error=KeyError("sku"), now=1000.0)
    headers = letter.properties["application_headers"]
    assert (letter.exchange, letter.routing_key) == ("", f"{QUEUE}.dlq")
    assert headers[EXCHANGE_HEADER] == "orders.events" and headers[ROUTING_KEY_HEADER] == "created"
    assert headers[ATTEMPTS_HEADER] == 3 and headers[DEAD_AT_HEADER] == 1000.0
    info = read_dead_letter(Received(letter.body, letter.properties, "", f"{QUEUE}.dlq"))
    assert (info.queue, info.attempts, info.error, info.routing_key) == (
        QUEUE, 3, "KeyError: 'sku'", "created")


def test_replay_starts_afresh_and_counts_replays():
    letter = dead_letter(event(), queue=QUEUE, dlq=f"{QUEUE}.dlq", attempts=5, error="x")
    dead = Received(letter.body, letter.properties, "", f"{QUEUE}.dlq")
    replayed = replay_copy(dead, QUEUE)
    headers = replayed.properties["application_headers"]
    assert (replayed.exchange, replayed.routing_key, replayed.mandatory) == ("", QUEUE, True)
    assert ATTEMPTS_HEADER not in headers and ERROR_HEADER not in headers
    assert headers[REPLAYS_HEADER] == 1 and headers[QUEUE_HEADER] == QUEUE
    again = replay_copy(Received(replayed.body, replayed.properties, "", QUEUE), QUEUE)
    assert again.properties["application_headers"][REPLAYS_HEADER] == 2


def test_broker_dead_letters_are_read_from_x_death():
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    received = Received(b"1", {"application_headers": {"x-death": [
        {"queue": QUEUE, "reason": "delivery_limit", "exchange": "orders.events",
         "routing-keys": ["created"], "time": when, "count": 1},
        {"queue": f"{QUEUE}.retry.100", "reason": "expired", "exchange": "",
         "routing-keys": [f"{QUEUE}.retry.100"], "time": when, "count": 1},
    ]}}, "", f"{QUEUE}.dlq")
    info = read_dead_letter(received)
    assert (info.queue, info.reason, info.routing_key, info.attempts, info.error) == (
        QUEUE, "delivery_limit", "created", None, None)
    assert info.dead_lettered_at == when.timestamp()


def test_errors_are_described_safely():
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_error(Broken("a"))[0] == "Broken: ('a',)"
    assert describe_error(ValueError())[0] == "ValueError"
    assert len(describe_error(ValueError("x" * 10_000))[0]) == 2000
    assert describe_error("plain reason") == ("plain reason", "")
