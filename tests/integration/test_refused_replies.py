"""A reply the broker refuses must not make its request run again and again (issue #19).

The worker acks a request only once its reply is confirmed. When the broker *refuses* the
reply (a nack: the caller's reply queue is full with ``reject-publish``, for one), leaving
the request unacked would get it redelivered and run again after every reconnect, without
end — Nameko callers send no deadline to stop it. A refused reply is logged and its request
acked: the call ran once, and only its answer is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator

import amqp
import pytest

from amqprpc import rpc
from amqprpc.testing.pytest import with_name

from ..waiting import wait_until

pytestmark = pytest.mark.integration


class Counted:
    name = "counted"
    runs: list[int]
    lock: threading.Lock

    @rpc
    def work(self, value: int) -> int:
        with self.lock:
            self.runs.append(value)
        return value


@pytest.fixture
def channel(amqp_uri) -> Iterator[amqp.Channel]:
    connection = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        yield connection.channel()
    finally:
        connection.close()


def ready(channel: amqp.Channel, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).message_count)


def test_a_refused_reply_acks_its_request_once(container_factory, unique_name, channel, caplog):
    cls = with_name(Counted, unique_name("counted"))
    cls.runs, cls.lock = [], threading.Lock()
    container = container_factory(cls)
    # A Nameko-style reply queue (bound on the RPC exchange) that refuses every message.
    reply_queue = unique_name("full-replies")
    channel.queue_declare(reply_queue, exclusive=True, auto_delete=True,
                          arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    channel.queue_bind(reply_queue, "nameko-rpc", reply_queue)

    with caplog.at_level(logging.WARNING, logger="amqprpc"):
        channel.basic_publish(
            amqp.Message(json.dumps({"args": [7], "kwargs": {}}), content_type="application/json",
                         correlation_id=uuid.uuid4().hex, reply_to=reply_queue),
            exchange="nameko-rpc", routing_key=f"{cls.name}.work", mandatory=True,
        )
        wait_until(lambda: "refused the reply" in caplog.text, "the worker to log the refusal",
                   timeout=10)
    container.stop()  # an unacked request would now be back in the queue
    assert ready(channel, f"rpc-{cls.name}") == 0
    assert cls.runs == [7]


@pytest.mark.parametrize("deadline", [True, "soon"])  # (RabbitMQ refuses a NaN header itself)
def test_a_malformed_deadline_gets_an_error_reply_not_silence(container_factory, unique_name,
                                                               channel, deadline):
    """A ``True`` deadline used to read as 1970: the request was skipped and never answered."""
    cls = with_name(Counted, unique_name("counted"))
    cls.runs, cls.lock = [], threading.Lock()
    container_factory(cls)
    replies = unique_name("replies")
    channel.queue_declare(replies, exclusive=True, auto_delete=True)
    channel.queue_bind(replies, "nameko-rpc", replies)
    channel.basic_publish(
        amqp.Message(json.dumps({"args": [1], "kwargs": {}}), content_type="application/json",
                     correlation_id="cid", reply_to=replies,
                     application_headers={"x-amqprpc-deadline": deadline}),
        exchange="nameko-rpc", routing_key=f"{cls.name}.work", mandatory=True,
    )
    reply = wait_until(lambda: channel.basic_get(replies, no_ack=True), "the error reply", timeout=10)
    error = json.loads(reply.body)["error"]
    assert error["exc_type"] == "MalformedRequest" and "finite unix time" in error["value"]
    assert cls.runs == []
