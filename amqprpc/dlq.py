"""Operator tools for a dead-letter queue: look at it, replay it, purge it.

``amqprpc dlq list|replay|purge QUEUE`` is a thin layer over ``DeadLetterQueue``::

    with DeadLetterQueue("evt-orders-order_created--email.send", config=config) as dlq:
        for letter in dlq.peek(20):
            print(letter.error, letter.attempts)
        report = dlq.replay()

* ``peek`` takes messages without acking and gives them back at once: the DLQ is left as
  it was (the messages are marked redelivered, which nothing reads).
* ``replay`` moves each dead letter back to the queue it died in (or ``target``) for a
  fresh set of attempts, one at a time: it is published ``mandatory`` with a confirm and
  only then acked in the DLQ, so a crash mid-way duplicates at worst and never loses. A
  letter whose queue no longer exists (a broadcast instance that stopped) stays in the
  DLQ. It replays at most the messages present when it began: letters that fail again
  and come back are not replayed twice in one run.
* ``purge`` deletes every dead letter.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .dead_letters import DeadLetterInfo, Received, original_queue, read_dead_letter, replay_copy
from .exceptions import AmqpRpcError
from .futures import settle
from .topology import dead_letter_queue
from .transport import Delivery, Outgoing, create_transport

DLQ_SUFFIX = ".dlq"


class QueueNotFound(AmqpRpcError):
    """Raised when the dead-letter queue (or a replay target) does not exist."""


@dataclass(slots=True)
class ReplayReport:
    """What ``replay`` did: how many went back, and the letters it had to keep (and why)."""

    replayed: int = 0
    kept: list[tuple[DeadLetterInfo, str]] = field(default_factory=list)


def dlq_name(queue: str) -> str:
    """Accept the handler's queue or its DLQ: ``evt-a-b--c.d`` and ``evt-a-b--c.d.dlq``."""
    return queue if queue.endswith(DLQ_SUFFIX) else dead_letter_queue(queue)


class DeadLetterQueue:
    """One DLQ, over a transport of its own (``with`` opens and closes it)."""

    def __init__(self, queue: str, *, config: Config | None = None, timeout: float = 30.0) -> None:
        self.name = dlq_name(queue)
        self.config = config or Config()
        self.timeout = timeout
        self.connection = create_transport(self.config, name=f"dlq-{self.name}")
        self._returned: str | None = None
        self.connection.on_return(self._on_return)

    def __enter__(self) -> DeadLetterQueue:
        self.connection.start(wait=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.connection.stop()

    # ------------------------------------------------------------ operations

    def count(self) -> int:
        """Dead letters waiting (ready, not counting any a consumer holds)."""
        info = self.connection.queue_info(self.name, self.timeout)
        if info is None:
            raise QueueNotFound(f"no queue named {self.name!r} on this broker")
        return info.message_count

    def peek(self, limit: int = 20) -> list[DeadLetterInfo]:
        """Up to ``limit`` dead letters from the head of the queue, left in place."""
        self.count()  # a clear QueueNotFound first
        taken: list[Delivery] = []
        try:
            for _ in range(limit):
                delivery = self.connection.get(self.name, self.timeout)
                if delivery is None:
                    break
                taken.append(delivery)
        finally:
            for delivery in taken:  # back where they were
                self.connection.reject(delivery, requeue=True)
        return [read_dead_letter(_received(delivery)) for delivery in taken]

    def replay(self, *, limit: int | None = None, target: str | None = None) -> ReplayReport:
        """Send dead letters back to their queue (or ``target``), oldest first."""
        todo = self.count()
        if limit is not None:
            todo = min(todo, limit)
        report = ReplayReport()
        keep: list[Delivery] = []
        try:
            for _ in range(todo):
                delivery = self.connection.get(self.name, self.timeout)
                if delivery is None:
                    break
                received = _received(delivery)
                destination = target or original_queue(received)
                why = self._why_not_replayed(self._send_copy(received, destination), destination)
                if why is None:
                    self.connection.ack(delivery)
                    report.replayed += 1
                else:
                    keep.append(delivery)
                    report.kept.append((read_dead_letter(received), why))
        finally:
            for delivery in keep:
                self.connection.reject(delivery, requeue=True)
        return report

    def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        self.count()
        return self.connection.purge(self.name, self.timeout)

    # ------------------------------------------------------------ helpers

    def _send_copy(self, received: Received, destination: str | None) -> Future[None] | None:
        if not destination:
            return None
        confirm: Future[None] = Future()
        self._returned = None  # one publish in flight: a return before its confirm is its own
        self.connection.publish(replay_copy(received, destination),
                                on_confirm=lambda error: settle(confirm, error))
        return confirm

    def _why_not_replayed(self, confirm: Future[None] | None, destination: str | None) -> str | None:
        """None if the copy reached its queue; else why the letter stays in the DLQ."""
        if confirm is None:
            return "it names no queue to replay to (use --to QUEUE)"
        try:
            confirm.result(self.timeout)
        except Exception as exc:
            return f"the broker did not take the copy: {exc}"
        if self._returned is not None:  # returned before its confirm: unroutable
            return f"queue {destination!r} refused it ({self._returned}): it no longer exists?"
        return None

    def _on_return(self, message: Outgoing, reply_text: str) -> None:
        self._returned = reply_text or "returned"


def _received(delivery: Delivery) -> Received:
    return Received(delivery.body, dict(delivery.properties), delivery.exchange,
                    delivery.routing_key)
