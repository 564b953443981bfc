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

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import Config
from .dead_letters import DeadLetterInfo, Received, original_queue, read_dead_letter, replay_copy
from .exceptions import AmqpRpcError
from .publisher import settle
from .topology import dead_letter_queue
from .transport import RECOVERABLE_ERRORS, BrokerConnection

T = TypeVar("T")
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
    """One DLQ, over a connection of its own (``with`` opens and closes it)."""

    def __init__(self, queue: str, *, config: Config | None = None, timeout: float = 30.0) -> None:
        self.name = dlq_name(queue)
        self.config = config or Config()
        self.timeout = timeout
        self.connection = BrokerConnection(self.config.broker_url, name=f"dlq-{self.name}",
                                           heartbeat=self.config.heartbeat,
                                           connect_timeout=self.config.connect_timeout)
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
        return int(self._on_io(lambda channel: self._declare_passive(channel, self.name)))

    def peek(self, limit: int = 20) -> list[DeadLetterInfo]:
        """Up to ``limit`` dead letters from the head of the queue, left in place."""
        self.count()  # a clear QueueNotFound first

        def take(channel: Any) -> list[DeadLetterInfo]:
            messages = []
            for _ in range(limit):
                message = channel.basic_get(self.name, no_ack=False)
                if message is None:
                    break
                messages.append(message)
            for message in messages:  # back where they were
                channel.basic_reject(message.delivery_tag, requeue=True)
            return [read_dead_letter(_received(message)) for message in messages]

        return self._on_io(take)

    def replay(self, *, limit: int | None = None, target: str | None = None) -> ReplayReport:
        """Send dead letters back to their queue (or ``target``), oldest first."""
        todo = self.count()
        if limit is not None:
            todo = min(todo, limit)
        report = ReplayReport()
        keep: list[int] = []
        ack: int | None = None
        for _ in range(todo):
            step = self._on_io(lambda channel, ack=ack: self._replay_one(channel, ack, target))
            ack = None
            if step is None:
                break
            tag, received, confirm = step
            why = self._why_not_replayed(confirm, target or original_queue(received))
            if why is None:
                ack = tag
                report.replayed += 1
            else:
                keep.append(tag)
                report.kept.append((read_dead_letter(received), why))

        def settle_all(channel: Any) -> None:
            if ack is not None:
                channel.basic_ack(ack)
            for tag in keep:
                channel.basic_reject(tag, requeue=True)

        self._on_io(settle_all)
        return report

    def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        self.count()
        return int(self._on_io(lambda channel: channel.queue_purge(self.name) or 0))

    # ------------------------------------------------------------ I/O thread

    def _replay_one(self, channel: Any, ack: int | None,
                    target: str | None) -> tuple[int, Received, Future[None] | None] | None:
        if ack is not None:
            channel.basic_ack(ack)
        message = channel.basic_get(self.name, no_ack=False)
        if message is None:
            return None
        received = _received(message)
        destination = target or original_queue(received)
        if not destination:
            return message.delivery_tag, received, None
        confirm: Future[None] = Future()
        self._returned = None  # one publish in flight: a return before its confirm is its own
        self.connection.publish(replay_copy(received, destination),
                                on_confirm=lambda error: settle(confirm, error))
        return message.delivery_tag, received, confirm

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

    def _on_return(self, message: Any, reply_text: str) -> None:
        self._returned = reply_text or "returned"

    @staticmethod
    def _declare_passive(channel: Any, name: str) -> int:
        try:
            return int(channel.queue_declare(name, passive=True).message_count)
        except Exception as exc:
            if getattr(exc, "reply_code", None) == 404:
                raise QueueNotFound(f"no queue named {name!r} on this broker") from exc
            raise

    def _on_io(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(channel)`` on the connection's I/O thread and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn(self.connection.channel))
            except BaseException as exc:
                future.set_exception(exc)
                cause = exc.__cause__ if isinstance(exc, QueueNotFound) else exc
                if isinstance(cause, RECOVERABLE_ERRORS):  # the broker closed the channel:
                    raise cause from None  # the transport reconnects (a bug would kill it)

        self.connection.call_soon(run)
        return future.result(self.timeout)


def _received(message: Any) -> Received:
    info = message.delivery_info
    return Received(message.body, dict(message.properties), info.get("exchange", ""),
                    info.get("routing_key", ""))
