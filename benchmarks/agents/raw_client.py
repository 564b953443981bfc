"""The raw py-amqp pipelined client (hotpath.md C1): one thread, ``window`` calls in flight.

Each reply (direct reply-to, no-ack) is decoded and checked, and triggers the next
request from inside the delivery callback; ``connection.blocked`` is not negotiated, so
publishing there does not re-enter the frame reader. Latency is issue -> reply arrival.

With ``nameko_wire`` it sends what amqprpc and Nameko send: through the ``nameko-rpc``
topic exchange to ``<service>.echo``, ``mandatory``, persistent (``delivery_mode`` 2: kombu's
default, so Nameko's requests are, and amqprpc's since issue #19), with a deadline header and
a TTL, on a channel in confirm mode (Nameko's ``Publisher.use_confirms`` is on by default, and
amqprpc confirms every publish). The confirms are counted as they come, never waited for: the
cheapest way to send a confirmed message, so the floor charges only the broker's side of it.
Results files before 2026-12-04 measured transient requests, and those before 2026-12-05
unconfirmed ones: the cheaper wire.
"""

from __future__ import annotations

import itertools
import json
import time

import _amqp
import _common
import amqp

amqp.connection.NEGOTIATE_CAPABILITIES["connection.blocked"] = False

REPLY_TO = "amq.rabbitmq.reply-to"


class PipelinedClient:
    def __init__(self, p: dict) -> None:
        self.payload = "x" * p["payload"]
        self.queue = p["queue"]
        self.nameko_wire = p.get("nameko_wire", False)
        self.service = p.get("service")
        self.window = p["window"]
        self.connection = _amqp.connect(p["url"])
        self.channel = self.connection.channel()
        self.channel.basic_consume(REPLY_TO, no_ack=True, callback=self.on_reply)
        if self.nameko_wire:
            self.channel.confirm_select()
            self.channel.events["basic_nack"].add(self.on_nack)
        self.ids = itertools.count()
        self.inflight: dict[str, float] = {}
        self.budget = 0  # requests still to send in this phase
        self.end = float("inf")
        self.latencies: list[float] | None = None
        self.errors = 0

    def send(self) -> None:
        correlation_id = str(next(self.ids))
        body = json.dumps({"args": [self.payload], "kwargs": {}}).encode()
        self.inflight[correlation_id] = time.perf_counter()
        if self.nameko_wire:
            self.channel.basic_publish(
                amqp.Message(body, correlation_id=correlation_id, reply_to=REPLY_TO,
                             content_type="application/json", content_encoding="utf-8",
                             application_headers={"x-amqprpc-deadline": time.time() + 30},
                             expiration="30000", delivery_mode=2),
                exchange="nameko-rpc", routing_key=f"{self.service}.echo", mandatory=True,
            )
        else:
            self.channel.basic_publish(
                amqp.Message(body, correlation_id=correlation_id, reply_to=REPLY_TO,
                             content_type="application/json"),
                exchange="", routing_key=self.queue,
            )
        self.budget -= 1

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.errors += 1

    def on_reply(self, message: amqp.Message) -> None:
        now = time.perf_counter()
        issued = self.inflight.pop(message.properties["correlation_id"])
        if json.loads(message.body)["result"] != self.payload:
            self.errors += 1
        if self.latencies is not None and now <= self.end:
            self.latencies.append(now - issued)
        if self.budget > 0:
            self.send()

    def phase(self, budget: float, until: float = float("inf")) -> None:
        """Send up to ``budget`` requests, keeping the window full, until ``until``."""
        self.budget = budget  # type: ignore[assignment]
        while self.budget > 0 and len(self.inflight) < self.window:
            self.send()
        while time.perf_counter() < until and self.inflight:
            self.drain()

    def finish(self) -> None:
        self.budget = 0
        while self.inflight:
            self.drain()

    def drain(self) -> None:
        try:
            self.connection.drain_events(timeout=1.0)
        except TimeoutError:
            pass


def main() -> None:
    p = _common.params()
    client = PipelinedClient(p)
    client.phase(p["warmup"])
    client.finish()
    _common.emit("ready", warmup_errors=client.errors)
    _common.wait_go()
    client.errors = 0
    client.latencies = []
    start = time.perf_counter()
    client.end = start + p["duration"]
    client.phase(float("inf"), until=client.end)
    _common.emit("done")
    client.finish()
    latencies = client.latencies
    _common.emit("result", calls=len(latencies), seconds=p["duration"], errors=client.errors,
                 **_common.percentiles(latencies))
    client.connection.close()


if __name__ == "__main__":
    main()
