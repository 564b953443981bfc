"""The raw py-amqp echo server: the limit a framework is measured against (hotpath.md S1).

Inline: the delivery callback decodes the JSON request, encodes the reply, publishes it to
the caller's direct reply-to address and acks, all on the one thread that reads the
socket. ``connection.blocked`` is not negotiated, so ``basic_publish`` does not drain
incoming frames (the ~2,400 calls/s anchor of performance.md). Prefetch 100.
"""

from __future__ import annotations

import json
import signal

import _amqp
import _common
import amqp

amqp.connection.NEGOTIATE_CAPABILITIES["connection.blocked"] = False


def main() -> None:
    p = _common.params()
    connection = _amqp.connect(p["url"])
    channel = connection.channel()
    # Nameko's wire: a durable queue (as rpc-<service> is), so persistent requests are
    # handled as persistent, and requests through the nameko-rpc topic exchange
    channel.queue_declare(p["queue"], durable=bool(p.get("bind")), auto_delete=True)
    if p.get("bind"):
        channel.exchange_declare("nameko-rpc", "topic", durable=True, auto_delete=False)
        channel.queue_bind(p["queue"], "nameko-rpc", p["bind"])
    channel.basic_qos(0, p.get("prefetch", 100), False)
    if p.get("bind"):
        # and in confirm mode, as Nameko's replies (and amqprpc's) are; counted, not awaited
        channel.confirm_select()

    def on_request(message: amqp.Message) -> None:
        props = message.properties
        request = json.loads(message.body)
        reply = json.dumps({"result": request["args"][0], "error": None}).encode()
        channel.basic_publish(
            amqp.Message(reply, correlation_id=props["correlation_id"], content_type="application/json"),
            exchange="", routing_key=props["reply_to"],
        )
        channel.basic_ack(message.delivery_tag)

    channel.basic_consume(p["queue"], callback=on_request)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    while not stopping:
        try:
            connection.drain_events(timeout=0.5)
        except TimeoutError:
            pass
    connection.close()


if __name__ == "__main__":
    main()
